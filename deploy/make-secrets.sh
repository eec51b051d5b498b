#!/bin/sh
# Writes the stack's secrets to deploy/env/*.env with fresh random passwords (never committed).
# Existing files are kept unless --force is given. Each service gets only what it needs.
set -eu
cd "$(dirname "$0")/env"
if [ -e postgres.env ] && [ "${1:-}" != "--force" ]; then
    echo "deploy/env/*.env exist; keep them, or rerun with --force (then reset the postgres volume)"
    exit 0
fi
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
pg=$(secret); mlflow=$(secret); prefect=$(secret); predlog=$(secret)
minio_user=lossflow; minio_pw=$(secret); admin=$(secret); grafana=$(secret)
umask 077
cat > postgres.env <<END
POSTGRES_PASSWORD=$pg
MLFLOW_DB_PASSWORD=$mlflow
PREFECT_DB_PASSWORD=$prefect
PREDLOG_DB_PASSWORD=$predlog
END
cat > mlflow.env <<END
PGPASSWORD=$mlflow
AWS_ACCESS_KEY_ID=$minio_user
AWS_SECRET_ACCESS_KEY=$minio_pw
END
printf 'PGPASSWORD=%s\n' "$prefect" > prefect.env
printf 'PGPASSWORD=%s\nLOSSFLOW_ADMIN_TOKEN=%s\n' "$predlog" "$admin" > lossflow.env
printf 'MINIO_ROOT_USER=%s\nMINIO_ROOT_PASSWORD=%s\n' "$minio_user" "$minio_pw" > minio.env
printf 'GF_SECURITY_ADMIN_PASSWORD=%s\n' "$grafana" > grafana.env
echo "wrote deploy/env/{postgres,mlflow,prefect,lossflow,minio,grafana}.env"
