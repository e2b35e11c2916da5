#!/usr/bin/env bash
# Ensure the services the test suite talks to are installed and running on a
# Debian machine:
#   - PostgreSQL on 127.0.0.1:5432, reachable as postgres:postgres
#   - Redis on 127.0.0.1:6379
#   - the Python SMTP sink (aiosmtpd) used by the email tests (best effort)
#
# Idempotent: run it as often as you like; it only installs or starts what is
# missing and prints one status line per service. Exits non-zero (with a clear
# message) when PostgreSQL or Redis cannot be made available.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
PG_URL="postgres://postgres:postgres@${PG_HOST}:${PG_PORT}/postgres"
PG_TIMEOUT=60
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
REDIS_TIMEOUT=30

export DEBIAN_FRONTEND=noninteractive
export PIP_ROOT_USER_ACTION=ignore  # silence pip's "running as root" warning on CI

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
# join "a" "b" "c" -> "a, b, c"
join() {
    local out="$1"
    shift
    local item
    for item in "$@"; do out+=", $item"; done
    printf '%s' "$out"
}
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

# Root runs commands directly; otherwise use sudo when it exists (and hope for
# the best when it does not: the command will fail with its own message).
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }

# Run a command as the `postgres` OS user (peer auth over the Unix socket).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    elif [ "$(id -un)" != postgres ] && [ "${#SUDO[@]}" -gt 0 ]; then
        "${SUDO[@]}" -u postgres "$@"
    else
        "$@"
    fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root apt-get install -y -qq "$@"
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }
pg_login_ok() { PGCONNECT_TIMEOUT=5 psql "$PG_URL" -qAtc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
    local actions=()

    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        log "postgres: not installed, installing postgresql"
        apt_install postgresql
        actions+=(installed)
    fi

    if pg_ready; then
        if [ "${#actions[@]}" -eq 0 ]; then actions+=("already running"); fi
    else
        # Newest installed major version (e.g. 15), and its `main` cluster.
        local ver=""
        if [ -d /etc/postgresql ]; then
            ver="$(ls /etc/postgresql | sort -V | tail -1)"
        fi
        if [ -z "$ver" ] && [ -d /usr/lib/postgresql ]; then
            # Package present but no cluster (e.g. it was dropped): create one.
            ver="$(ls /usr/lib/postgresql | sort -V | tail -1)"
            [ -n "$ver" ] || die "postgres: no PostgreSQL version under /usr/lib/postgresql"
            log "postgres: no cluster found, creating ${ver}/main"
            as_root pg_createcluster "$ver" main >/dev/null
        fi
        [ -n "$ver" ] || die "postgres: cannot find an installed PostgreSQL version"

        log "postgres: starting cluster ${ver}/main"
        if ! as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start; then
            warn "postgres: pg_ctlcluster start failed, trying 'service postgresql start'"
            as_root service postgresql start || true
        fi
        actions+=(started)

        local waited=0
        until pg_ready; do
            if [ "$waited" -ge "$PG_TIMEOUT" ]; then
                pg_lsclusters >&2 || true
                die "postgres: not accepting connections on ${PG_HOST}:${PG_PORT} after ${PG_TIMEOUT}s (see /var/log/postgresql/)"
            fi
            sleep 1
            waited=$((waited + 1))
        done
    fi

    # Make sure the password login the tests use works. Where trust auth is
    # already configured this is a no-op; otherwise set the password over the
    # Unix socket (peer auth as the postgres OS user).
    if ! pg_login_ok; then
        log "postgres: setting password for role postgres"
        as_postgres psql -p "$PG_PORT" -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null ||
            warn "postgres: could not set the password via the local socket"
        actions+=("password set")
    fi
    if ! PGCONNECT_TIMEOUT=5 psql "$PG_URL" -qAtc 'select 1' >/dev/null; then
        die "postgres: cannot connect as ${PG_URL} (check pg_hba.conf and that port ${PG_PORT} belongs to this cluster)"
    fi

    log "postgres: $(join "${actions[@]}") (${PG_URL})"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
redis_ready() {
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ]
}

ensure_redis() {
    local actions=()

    if ! command -v redis-server >/dev/null 2>&1; then
        log "redis: not installed, installing redis-server"
        apt_install redis-server
        actions+=(installed)
    fi
    if ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-tools
    fi

    if redis_ready; then
        if [ "${#actions[@]}" -eq 0 ]; then actions+=("already running"); fi
    else
        log "redis: starting redis-server on ${REDIS_HOST}:${REDIS_PORT}"
        as_root mkdir -p /var/lib/redis /var/log/redis
        as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
            --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
            warn "redis: redis-server exited with an error"
        actions+=(started)

        local waited=0
        until redis_ready; do
            if [ "$waited" -ge "$REDIS_TIMEOUT" ]; then
                as_root tail -n 20 /var/log/redis/ci.log >&2 2>/dev/null || true
                die "redis: no PONG from ${REDIS_HOST}:${REDIS_PORT} after ${REDIS_TIMEOUT}s (see /var/log/redis/ci.log)"
            fi
            sleep 1
            waited=$((waited + 1))
        done
    fi

    log "redis: $(join "${actions[@]}") (redis://${REDIS_HOST}:${REDIS_PORT})"
}

# ---------------------------------------------------------------------------
# Python SMTP sink for the email tests (best effort: never fails the script)
# ---------------------------------------------------------------------------
ensure_smtp_sink() {
    if ! command -v python3 >/dev/null 2>&1; then
        warn "smtp-sink: python3 not found; email tests that need aiosmtpd will fail"
        return 0
    fi
    if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
        log "smtp-sink: aiosmtpd already installed"
        return 0
    fi
    log "smtp-sink: installing aiosmtpd with pip"
    if python3 -m pip install --quiet --disable-pip-version-check aiosmtpd ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd; then
        if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
            log "smtp-sink: aiosmtpd installed"
            return 0
        fi
    fi
    warn "smtp-sink: could not install aiosmtpd; email tests that need it will fail"
}

ensure_postgres
ensure_redis
ensure_smtp_sink
