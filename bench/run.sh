#!/usr/bin/env bash
# One command for the whole benchmark: build, start a fresh api + worker on
# a scratch PostgreSQL database and a unique Redis prefix, run `bench`, stop
# everything on exit.
#
#   bash bench/run.sh                 # release build, full run, results in bench/results/
#   bash bench/run.sh --smoke         # debug build, tiny load, every scenario and
#                                     # writer; results in a temp dir; non-zero on failure
#   bash bench/run.sh --debug         # full run on the debug build
#   bash bench/run.sh -- transfers --clients 1,4,16 --subscribers 1000
#                                     # anything after `--` goes to `bench` (later flags win)
# Options: --out DIR (results directory), --no-build (use the binaries as built).
# Env: CARGO_TARGET_DIR (default ~/.cache/corebank-target, shared with
# scripts/test.sh), BENCH_PG (server URL without database, default
# postgres://postgres:postgres@127.0.0.1:5432), BENCH_REDIS (default
# redis://127.0.0.1:6379), BENCH_RUST_LOG (api/worker log filter, default warn:
# per-request info logs would be part of what is measured).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

smoke=0
profile=release
build=1
out=""
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1; profile=debug ;;
        --debug) profile=debug ;;
        --release) profile=release ;;
        --no-build) build=0 ;;
        --out) out="$2"; shift ;;
        --) shift; bench_args=("$@"); break ;;
        *) echo "run.sh: unknown option $1 (see the header of bench/run.sh)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench/run.sh] %s\n' "$*" >&2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/corebank-target}"
mkdir -p "$CARGO_TARGET_DIR"
bin="$CARGO_TARGET_DIR/$profile"
pg="${BENCH_PG:-postgres://postgres:postgres@127.0.0.1:5432}"
redis_url="${BENCH_REDIS:-redis://127.0.0.1:6379}"

bash scripts/services.sh >&2

# The plots render text with a TTF read at run time (see bench/src/plot.rs).
if [ -z "${BENCH_FONT:-}" ] && ! find /usr/share/fonts -iname '*.ttf' 2>/dev/null | grep -q .; then
    log "no TTF font found; installing fonts-dejavu-core"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq fonts-dejavu-core >&2 \
        || { log "could not install fonts-dejavu-core; set BENCH_FONT to a .ttf"; exit 1; }
fi

if [ "$build" = 1 ]; then
    if [ "$profile" = debug ]; then
        # Exactly scripts/test.sh's build command: the same package selection
        # (and so the same feature unification) makes it a no-op there
        # instead of rebuilding dependencies with other features.
        cargo build --workspace --bins --tests >&2
    else
        log "release build (slow on 2 cores; --debug or --no-build to skip)"
        nice cargo build --release --workspace --bins >&2
    fi
fi
for b in api worker bench; do
    [ -x "$bin/$b" ] || { log "missing $bin/$b (build it, or drop --no-build)"; exit 1; }
done

if [ "$smoke" = 1 ]; then
    # Smoke runs (scripts/test.sh, CI) must not dirty the tree and may run
    # beside a full run: their own database and output directory.
    db="corebank_bench_smoke_$$"
    out="${out:-$(mktemp -d -t corebank-bench-smoke.XXXXXX)}"
else
    db="corebank_bench"
    out="${out:-$repo/bench/results}"
fi
mkdir -p "$out"
logs=$(mktemp -d -t corebank-bench-logs.XXXXXX)
prefix="bench-$$-$RANDOM"

api_pid=""
worker_pid=""
stop() {
    local pid
    for pid in $worker_pid $api_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $worker_pid $api_pid; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    worker_pid=""
    api_pid=""
}
cleanup() {
    local status=$?
    stop
    if [ "$status" -ne 0 ]; then
        log "failed (exit $status); last api and worker log lines:"
        tail -n 30 "$logs/api.log" "$logs/worker.log" >&2 2>/dev/null || true
    fi
    # The queue, pub/sub and rate-limit keys of this run.
    redis-cli -u "$redis_url" --scan --pattern "$prefix*" 2>/dev/null \
        | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
    if [ "$smoke" = 1 ]; then
        psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$logs"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "fresh database $db"
PGOPTIONS="-c client_min_messages=warning" psql "$pg/postgres" -qv ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    -c "CREATE DATABASE $db" >/dev/null

# A free port: the first one nothing answers on.
port=""
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { log "no free port found"; exit 1; }
url="http://127.0.0.1:$port"

# 10,000 subscriber sockets need 10,000 descriptors in the api (children
# inherit this limit) as well as in the bench (which raises its own).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10300 ]; then
    log "warning: open-files limit $(ulimit -n) is too low for 10,000 subscribers"
fi

export DATABASE_URL="$pg/$db"
export REDIS_URL="$redis_url"
export REDIS_PREFIX="$prefix"
JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export JWT_SECRET
export RUST_LOG="${BENCH_RUST_LOG:-warn}"
unset SMTP_URL METRICS_ADDR

# api: every request and every subscribe counts against
# RATE_LIMIT_PER_MINUTE per user (one bench user makes thousands a
# second); registration is the only other throttle on the benchmark's
# path, and it is not limited per address. No email server: verification
# optional, emails recorded, not sent.
BIND_ADDR="127.0.0.1:$port" \
    RATE_LIMIT_PER_MINUTE=1000000000 \
    EMAIL_VERIFICATION=optional \
    BOOTSTRAP_ADMIN_EMAIL=admin@bench.test \
    BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password \
    "$bin/api" >"$logs/api.log" 2>&1 &
api_pid=$!
for i in $(seq 600); do
    if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then break; fi
    kill -0 "$api_pid" 2>/dev/null || { log "api exited during start"; exit 1; }
    [ "$i" -lt 600 ] || { log "api not ready after 60 s"; exit 1; }
    sleep 0.1
done
"$bin/worker" >"$logs/worker.log" 2>&1 &
worker_pid=$!
log "api pid $api_pid on $url, worker pid $worker_pid, redis prefix $prefix, profile $profile"

if [ "$smoke" = 1 ]; then
    # Tiny load, every scenario, every writer.
    args=(all --clients 1,4 --duration 0.3 --accounts 20 --accounts-per-user 10
        --subscribers 20 --events 3)
elif [ "${#bench_args[@]}" -gt 0 ] && [ "${bench_args[0]#--}" = "${bench_args[0]}" ]; then
    # `run.sh -- transfers,reads …`: the scenarios named first.
    args=("${bench_args[0]}")
    bench_args=("${bench_args[@]:1}")
else
    args=(all)
fi
status=0
BENCH_PROFILE="$profile" timeout "${BENCH_TIMEOUT:-3600}" \
    "$bin/bench" "${args[@]}" --url "$url" --db "$DATABASE_URL" --pid "$api_pid" \
    --out "$out" "${bench_args[@]}" || status=$?
kill -0 "$api_pid" 2>/dev/null || { log "the api died during the run"; status=1; }
kill -0 "$worker_pid" 2>/dev/null || { log "the worker died during the run"; status=1; }
if [ "$status" -eq 0 ]; then
    for f in results.md results.json; do
        [ -s "$out/$f" ] || { log "$out/$f missing"; status=1; }
    done
    if [ "$smoke" = 1 ]; then
        for f in throughput.png latency_cdf.png; do
            [ -s "$out/$f" ] || { log "$out/$f missing"; status=1; }
        done
    fi
fi
[ "$status" -eq 0 ] && log "results in $out"
exit "$status"
