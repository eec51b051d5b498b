#!/usr/bin/env bash
# A Docker daemon, a base image and a build context for the container tests
# (tests/integration/test_images.py) on a machine where no daemon runs and no image registry is
# reachable, as on the development and CI machines (root, apt). .ci/run sources this file and
# calls docker_up, then docker_down on exit; by hand:
#
#   .ci/docker.sh up      # then: pytest tests/integration/test_images.py (with the env it prints)
#   .ci/docker.sh down    # stops the daemon `up` started, and only that one
#
# Host network only: the daemon starts without a bridge (--bridge=none) and without iptables
# rules, so a container or a build step has the host network (--network host) or none; nothing
# is put on 172.17.0.0/16. A daemon that already answers is used as it is and left running.
# The imported base (debootstrap, ~2 min) stays in the image store for the next run.

LOSSFLOW_BASE_IMAGE=${LOSSFLOW_BASE_IMAGE:-lossflow-base:bookworm}
LOSSFLOW_DOCKERD_PIDFILE=${LOSSFLOW_DOCKERD_PIDFILE:-/run/lossflow-dockerd.pid}
LOSSFLOW_DOCKERD_LOG=${LOSSFLOW_DOCKERD_LOG:-/tmp/lossflow-dockerd.log}
_DOCKER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_docker_log() { echo "[docker $(date +%T)] $*" >&2; }

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

_docker_start() {
    if docker info >/dev/null 2>&1; then
        _docker_log "a Docker daemon already answers: using it, leaving it running"
        return 0
    fi
    _docker_log "starting dockerd (no bridge, no iptables; log: $LOSSFLOW_DOCKERD_LOG)"
    dockerd --bridge=none --iptables=false >"$LOSSFLOW_DOCKERD_LOG" 2>&1 &
    echo $! >"$LOSSFLOW_DOCKERD_PIDFILE"
    local waited=0
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$LOSSFLOW_DOCKERD_PIDFILE")" 2>/dev/null; then
            tail -n 20 "$LOSSFLOW_DOCKERD_LOG" >&2
            rm -f "$LOSSFLOW_DOCKERD_PIDFILE"
            _docker_log "dockerd exited at start"
            return 1
        fi
        if [ "$waited" -ge 60 ]; then
            tail -n 20 "$LOSSFLOW_DOCKERD_LOG" >&2
            _docker_log "dockerd did not answer within 60 s"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

_docker_base() {
    if docker image inspect "$LOSSFLOW_BASE_IMAGE" >/dev/null 2>&1; then
        _docker_log "base image $LOSSFLOW_BASE_IMAGE is in the image store"
        return 0
    fi
    local rootfs mirror
    rootfs=$(mktemp -d /tmp/lossflow-rootfs.XXXXXX)
    mirror=$(_debian_mirror)
    _docker_log "debootstrap bookworm from $mirror, imported as $LOSSFLOW_BASE_IMAGE"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >/tmp/lossflow-debootstrap.log 2>&1 || {
        tail -n 20 /tmp/lossflow-debootstrap.log >&2
        rm -rf "$rootfs"
        return 1
    }
    local imported=0
    tar -C "$rootfs" -c . | docker import - "$LOSSFLOW_BASE_IMAGE" >/dev/null || imported=$?
    rm -rf "$rootfs"
    return "$imported"
}

# deploy/wheels/ (git-ignored, deploy/wheels/README.md): the host's CA bundle, for pip behind a
# TLS-inspecting proxy, and the lock's CPU torch wheel from wherever pip finds it (here a local
# file; the PyTorch CPU index is not reachable from these machines).
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

docker_up() {
    _docker_install && _docker_start && _docker_base && _docker_context || return 1
    export LOSSFLOW_TEST_BASE_IMAGE=$LOSSFLOW_BASE_IMAGE
    export LOSSFLOW_TEST_BUILD_ARGS="TORCH_INDEX_URL= PIP_CERT_FILE=host-ca.crt"
}

# Stops the daemon docker_up started (its containers and dangling build stages first), and
# nothing else. Runs as an EXIT trap under `set -e`: no step may end it early.
docker_down() {
    [ -f "$LOSSFLOW_DOCKERD_PIDFILE" ] || return 0
    local pid leftover waited=0
    pid=$(cat "$LOSSFLOW_DOCKERD_PIDFILE")
    leftover=$(docker ps --all --quiet --filter name=lossflow- 2>/dev/null || true)
    if [ -n "$leftover" ]; then
        # shellcheck disable=SC2086  # one argument per container id
        docker rm --force $leftover >/dev/null 2>&1 || true
    fi
    docker image prune --force >/dev/null 2>&1 || true
    _docker_log "stopping dockerd ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        _docker_log "dockerd ($pid) still running after 30 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$LOSSFLOW_DOCKERD_PIDFILE"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    up)
        docker_up
        echo "export LOSSFLOW_TEST_BASE_IMAGE=$LOSSFLOW_TEST_BASE_IMAGE" \
            "LOSSFLOW_TEST_BUILD_ARGS='$LOSSFLOW_TEST_BUILD_ARGS'"
        ;;
    down) docker_down ;;
    *)
        echo "usage: $0 up|down" >&2
        exit 2
        ;;
    esac
fi
