#!/usr/bin/env bash
# Services for the real-engine tests (pytest -m docker): a Docker engine (Debian docker.io), debootstrap
# (to build the base image without a registry) and PostgreSQL 15 with the test role and database.
#
#   .ci/services.sh start    install what is missing (apt-get, quiet, idempotent), start dockerd and Postgres
#   .ci/services.sh stop     remove the test containers, stop what `start` started (nothing else)
#   .ci/services.sh status
#
# Postgres: 127.0.0.1:5432, role $CODON_PG_USER (codon) / $CODON_PG_PASSWORD (codon), database
# $CODON_PG_DB (codon_test); the role may create databases (each test run makes and drops its own).
# Runs as root (CI and the development machines are root); the engine listens only on its unix socket.
set -euo pipefail

PG_USER="${CODON_PG_USER:-codon}"
PG_PASSWORD="${CODON_PG_PASSWORD:-codon}"
PG_DB="${CODON_PG_DB:-codon_test}"
STATE_DIR="${CODON_SERVICES_STATE:-/tmp/codon-ci-services}"
DOCKERD_LOG="${CODON_DOCKERD_LOG:-/tmp/dockerd.log}"
DOCKER_SOCK=/var/run/docker.sock
# The label every container made by the tests carries (see codon_assets/deployment.py).
TEST_LABEL="codon-assets.test"  # any value: base, user-code, step

log() { echo "services: $*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root (installs packages, starts dockerd)"
        exit 1
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in docker.io docker-compose debootstrap postgresql; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    # The packages' postinst scripts try to start their services; without an init system that fails
    # harmlessly and we start them ourselves below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_up() { docker info >/dev/null 2>&1; }

start_docker() {
    if docker_up; then
        log "docker engine already running"
        return
    fi
    mkdir -p "$STATE_DIR"
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: dockerd gets its own session, so the caller's job control and signals do not reach it.
    setsid dockerd --host "unix://$DOCKER_SOCK" >"$DOCKERD_LOG" 2>&1 < /dev/null &
    echo $! >"$STATE_DIR/dockerd.pid"
    for _ in $(seq 1 60); do
        if docker_up; then
            log "docker engine up ($(docker info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
            return
        fi
        if ! kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    log "dockerd did not come up; last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
}

pg_cluster() {
    # The first (normally only) cluster: "15 main".
    pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1, $2}'
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtAX "$@"; }

start_postgres() {
    local cluster
    cluster="$(pg_cluster)"
    if [ -z "$cluster" ]; then
        log "creating the PostgreSQL cluster"
        pg_createcluster 15 main >/dev/null
        cluster="15 main"
    fi
    if ! pg_up; then
        mkdir -p "$STATE_DIR"
        log "starting PostgreSQL $cluster"
        # shellcheck disable=SC2086
        pg_ctlcluster $cluster start
        echo "$cluster" >"$STATE_DIR/postgres.cluster"
        for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
        pg_up || { log "PostgreSQL did not come up"; exit 1; }
    else
        log "PostgreSQL already running"
    fi
    if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
        psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
    else
        psql_admin -c "ALTER ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
    fi
    if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
        psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
    fi
    log "PostgreSQL on 127.0.0.1:5432, role $PG_USER, database $PG_DB"
}

remove_test_containers() {
    docker_up || return 0
    local ids
    ids="$(docker ps -aq --filter "label=$TEST_LABEL")"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null || true
    fi
}

stop_docker() {
    local pidfile="$STATE_DIR/dockerd.pid" pid
    [ -f "$pidfile" ] || { log "dockerd was not started by this script; left running"; return; }
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping dockerd ($pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd still running after 20 s; killing it"
            kill -KILL "$pid" || true
        fi
    fi
    rm -f "$pidfile"
}

stop_postgres() {
    local file="$STATE_DIR/postgres.cluster" cluster
    [ -f "$file" ] || { log "PostgreSQL was not started by this script; left running"; return; }
    cluster="$(cat "$file")"
    log "stopping PostgreSQL $cluster"
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster stop -m fast || true
    rm -f "$file"
}

case "${1:-}" in
    start)
        need_root
        install_packages
        start_docker
        start_postgres
        ;;
    stop)
        need_root
        remove_test_containers
        stop_docker
        stop_postgres
        ;;
    status)
        if docker_up; then echo "docker: up"; else echo "docker: down"; fi
        if command -v pg_isready >/dev/null && pg_up; then echo "postgres: up"; else echo "postgres: down"; fi
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
