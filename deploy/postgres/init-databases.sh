#!/bin/sh
# First start of the stack's PostgreSQL: one role and one database per process, each role
# owning only its own database (passwords from env/postgres.env, written by make-secrets.sh).
set -eu
for name in MLFLOW_DB_PASSWORD PREFECT_DB_PASSWORD PREDLOG_DB_PASSWORD; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "init-databases: $name is not set in env/postgres.env (run deploy/make-secrets.sh)" >&2
        exit 1
    fi
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v prefect_pw="$PREFECT_DB_PASSWORD" \
    -v predlog_pw="$PREDLOG_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE ROLE predlog LOGIN PASSWORD :'predlog_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
CREATE DATABASE predictions OWNER predlog;
SQL
