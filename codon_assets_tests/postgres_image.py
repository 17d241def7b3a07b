"""A PostgreSQL 15 server image built here, without a registry, for the compose test (``postgres:16`` cannot
be pulled on CI): Debian bookworm ``minbase`` with ``postgresql-15`` (debootstrap), imported with
``docker import``, plus a small entrypoint that honours the parts of the official image's contract that
``deployments/compose.yaml`` uses: ``POSTGRES_USER``, ``POSTGRES_PASSWORD``, ``POSTGRES_DB`` and ``PGDATA``
(the cluster is initialised on the first start, in the volume), a server that listens on every address with
password (scram) authentication, and ``pg_isready`` on ``PATH`` for the healthcheck.

Tagged ``codon-assets-test-postgres:<key>``, the key a hash of the package list, the entrypoint and the
mirror, and labelled like the other test images; kept between runs (as ``CODON_DOCKER_TEST_KEEP`` keeps the
others), earlier keys are removed when a new one is built.
"""

from __future__ import annotations

import os

from codon_assets_tests.test_docker_integration import (
    ROOTFS_PRUNE,
    TEST_LABEL,
    debootstrap_image,
    docker,
    image_exists,
    log,
    sha256_of,
)

POSTGRES_IMAGE_REPO = "codon-assets-test-postgres"
PACKAGES = ["postgresql-15"]  # pulls postgresql-client-15 (psql, pg_isready)
PG_BIN = "/usr/lib/postgresql/15/bin"
PATH_ENV = f"{PG_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT_PATH = "/usr/local/bin/codon-postgres-entrypoint"

ENTRYPOINT = r"""#!/bin/sh
# The official postgres image's contract, as far as deployments/compose.yaml uses it.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "codon-postgres: POSTGRES_PASSWORD must be set" >&2
    exit 1
fi
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "codon-postgres: initialising $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # A private socket directory: the healthcheck (pg_isready on the default socket) stays unready
        # until the real server runs, with its database.
        sock="$(mktemp -d)"
        chown postgres "$sock"
        as_postgres pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sock" start >/dev/null
        as_postgres psql -h "$sock" -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$POSTGRES_DB\""
        as_postgres pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
        rmdir "$sock"
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off "$@"
"""

# Not needed in a container: documentation, apt's caches, the cluster the package's postinst made, and the
# LLVM JIT (off above; libLLVM is a third of the image).
PRUNE = (*ROOTFS_PRUNE, "var/lib/postgresql/15", "etc/postgresql/15", "usr/lib/postgresql/15/lib/bitcode",
         "usr/lib/postgresql/15/lib/llvmjit*.so", "usr/lib/x86_64-linux-gnu/libLLVM-*")


def postgres_image_tag() -> str:
    mirror = os.environ.get("CODON_DEBIAN_MIRROR", "")
    key = sha256_of([" ".join(PACKAGES).encode(), ENTRYPOINT.encode(), PATH_ENV.encode(), mirror.encode(),
                     "|".join(PRUNE).encode(), b"bookworm"])[:16]
    return f"{POSTGRES_IMAGE_REPO}:{key}"


def build_postgres_image() -> str:
    """The image's tag, built now unless an image of the same inputs exists."""
    tag = postgres_image_tag()
    if image_exists(tag):
        log(f"reusing {tag}")
        return tag
    debootstrap_image(tag, PACKAGES,
                      [f"ENV PATH={PATH_ENV}", "ENV PGDATA=/var/lib/postgresql/data", "ENV LANG=C.UTF-8", "EXPOSE 5432",
                       f'ENTRYPOINT ["{ENTRYPOINT_PATH}"]', f"LABEL {TEST_LABEL}=postgres"],
                      files={ENTRYPOINT_PATH: (ENTRYPOINT, 0o755)}, prune=PRUNE)
    for stale in docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", POSTGRES_IMAGE_REPO).stdout.split():
        if stale != tag:
            docker("image", "rm", stale, check=False)
    return tag
