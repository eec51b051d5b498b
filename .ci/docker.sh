#!/usr/bin/env bash
# A private Docker daemon, a base image and a build context for the container tests
# (tests/integration/test_images.py) on a machine where no daemon runs and no image registry is
# reachable, as on the development and CI machines (root, apt). .ci/run sources this file and
# calls `docker_up ci-$$`, then `docker_down ci-$$` on exit; by hand:
#
#   eval "$(.ci/docker.sh up)"   # exports DOCKER_HOST and the test's settings
#   pytest tests/integration/test_images.py
#   .ci/docker.sh down
#
# Each name gets a daemon of its own (socket, data root, exec root under /run/lossflow-docker/
# and /var/lib/lossflow-docker/): several runs on one machine never share or stop each other's
# daemon, and `down` removes everything its daemon stored. Host network only: the daemon starts
# without a bridge (--bridge=none) and without iptables rules, so a container or a build step has
# the host network (--network host) or none; nothing is put on 172.17.0.0/16.
# The base image's root file system (debootstrap, 1-2.5 min) is made once per machine and kept in
# /var/cache/lossflow/; each daemon imports it (seconds).

LOSSFLOW_BASE_IMAGE=${LOSSFLOW_BASE_IMAGE:-lossflow-base:bookworm}
LOSSFLOW_BASE_TAR=${LOSSFLOW_BASE_TAR:-/var/cache/lossflow/debian-bookworm-python3.tar}
_DOCKER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_docker_log() { echo "[docker $(date +%T)] $*" >&2; }
_docker_run_dir() { echo "/run/lossflow-docker/$1"; }
_docker_data_dir() { echo "/var/lib/lossflow-docker/$1"; }

# The Debian mirror apt uses (deb822 or one-line sources), for debootstrap.
_debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null)
    echo "${uri:-http://deb.debian.org/debian}"
}

_docker_install() {
    if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
        return 0
    fi
    _docker_log "installing docker.io and debootstrap"
    local packages=(docker.io debootstrap)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" \
        >/dev/null || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${packages[@]}" >/dev/null
    }
}

# Starts the daemon NAME and exports DOCKER_HOST for it.
_docker_start() {
    local name=$1 run data pid waited=0
    run=$(_docker_run_dir "$name")
    data=$(_docker_data_dir "$name")
    mkdir -p "$run" "$data"
    _docker_log "starting dockerd $name (no bridge, no iptables; log: $run/dockerd.log)"
    dockerd --host "unix://$run/docker.sock" --data-root "$data" --exec-root "$run/exec" \
        --pidfile "$run/dockerd.pid" --bridge=none --iptables=false >"$run/dockerd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$run/started.pid"
    export DOCKER_HOST="unix://$run/docker.sock"
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$run/dockerd.log" >&2
            _docker_log "dockerd $name exited at start"
            return 1
        fi
        if [ "$waited" -ge 60 ]; then
            tail -n 20 "$run/dockerd.log" >&2
            _docker_log "dockerd $name did not answer within 60 s"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# The root file system tarball, made once per machine (under a lock: runs may start together).
_docker_base_tar() {
    mkdir -p "$(dirname "$LOSSFLOW_BASE_TAR")"
    (
        flock 9
        [ -s "$LOSSFLOW_BASE_TAR" ] && exit 0
        rootfs=$(mktemp -d /tmp/lossflow-rootfs.XXXXXX)
        mirror=$(_debian_mirror)
        _docker_log "debootstrap bookworm from $mirror into $LOSSFLOW_BASE_TAR"
        status=0
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || status=$?
        if [ "$status" -eq 0 ]; then
            tar -C "$rootfs" -cf "$LOSSFLOW_BASE_TAR.part" . && mv "$LOSSFLOW_BASE_TAR.part" \
                "$LOSSFLOW_BASE_TAR" || status=1
        else
            tail -n 20 "$rootfs.log" >&2
        fi
        rm -rf "$rootfs" "$rootfs.log" "$LOSSFLOW_BASE_TAR.part"
        exit "$status"
    ) 9>"$LOSSFLOW_BASE_TAR.lock"
}

_docker_base() {
    _docker_base_tar || return 1
    _docker_log "importing $LOSSFLOW_BASE_IMAGE"
    docker import "$LOSSFLOW_BASE_TAR" "$LOSSFLOW_BASE_IMAGE" >/dev/null
}

# deploy/wheels/ (git-ignored, deploy/wheels/README.md): the host's CA bundle, for pip and uv
# behind a TLS-inspecting proxy, and the lock's CPU torch wheel from wherever pip finds it (here a
# local file; the PyTorch CPU index is not reachable from these machines).
_docker_context() {
    local wheels=$_DOCKER_ROOT/deploy/wheels cert torch
    cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null)}
    cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
    cp "$cert" "$wheels/host-ca.crt" || return 1
    torch=$(grep -E '^torch==' "$_DOCKER_ROOT/constraints.txt") || return 1
    if ! ls "$wheels"/torch-"${torch#torch==}"-*.whl >/dev/null 2>&1; then
        _docker_log "copying the $torch wheel into deploy/wheels/"
        python3 -m pip download --quiet --no-deps --dest "$wheels" "$torch" || return 1
    fi
}

# docker_up NAME: a daemon of its own with the base imported; exports DOCKER_HOST and the
# container tests' settings.
docker_up() {
    local name=$1
    _docker_install && _docker_start "$name" && _docker_base && _docker_context || return 1
    export LOSSFLOW_TEST_BASE_IMAGE=$LOSSFLOW_BASE_IMAGE
    export LOSSFLOW_TEST_BUILD_ARGS="TORCH_INDEX_URL= PIP_CERT_FILE=host-ca.crt"
}

# docker_down NAME: stops the daemon NAME (the one docker_up NAME started, never another) and
# removes what it stored. Runs as an EXIT trap under `set -e`: no step may end it early.
docker_down() {
    local name=$1 run data pid waited=0
    run=$(_docker_run_dir "$name")
    data=$(_docker_data_dir "$name")
    [ -f "$run/started.pid" ] || return 0
    pid=$(cat "$run/started.pid")
    _docker_log "stopping dockerd $name ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 60 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        _docker_log "dockerd $name ($pid) still running after 60 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    # What it left mounted (its host network namespace under the exec root, an overlay of a
    # container it could not stop) is unmounted before its directories are removed.
    awk -v data="$data/" -v run="$run/" 'index($2, data) == 1 || index($2, run) == 1 {print $2}' \
        /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$data" "$run" || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    up)
        docker_up manual
        echo "export DOCKER_HOST=$DOCKER_HOST LOSSFLOW_TEST_BASE_IMAGE=$LOSSFLOW_TEST_BASE_IMAGE" \
            "LOSSFLOW_TEST_BUILD_ARGS='$LOSSFLOW_TEST_BUILD_ARGS'"
        ;;
    down) docker_down manual ;;
    *)
        echo "usage: $0 up|down" >&2
        exit 2
        ;;
    esac
fi
