#!/usr/bin/env bash
# The one test command: brings up the services, builds the workspace and runs
# every test. Extra arguments are passed to `cargo nextest run`, e.g.
#   scripts/test.sh -p ledger
#   scripts/test.sh -E 'test(transfer)'
set -euo pipefail

cd "$(dirname "$0")/.."

# PostgreSQL, Redis and the SMTP sink (installs/starts only what is missing).
bash scripts/services.sh

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# Tests that need Postgres/Redis/SMTP must FAIL, never silently skip, when a
# service is missing: a green run has to mean the real backends were exercised.
export COREBANK_REQUIRE_SERVICES=1

# Shared, warm build directory outside the clone. CI runs `.ci/run` in a fresh
# clone every time; a `target/` inside that clone would start cold and rebuild
# every dependency (hundreds of crates on 2 cores). Registry crates are keyed
# by version, not by the clone's path, so they are reused from here; only the
# workspace's own crates recompile. Cargo locks the directory, so concurrent
# runs wait for each other instead of corrupting it. Override to isolate.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/corebank-target}"
mkdir -p "$CARGO_TARGET_DIR"

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "[test] cargo-nextest not found, installing it"
    cargo install cargo-nextest --locked
fi

# Front-end hook (none yet): if a UI with npm tests is added, install it here,
# e.g.
#   if [ -f web/package.json ]; then (cd web && npm ci --no-audit --no-fund); fi

# The graphql-ws reference client spawned by api/tests/subscriptions.rs.
# Installed only when node_modules is missing or older than the lockfile
# (npm ci then leaves node_modules/.package-lock.json newer), so repeated runs
# stay fast. A failing npm fails the script (set -e).
ws_client=tests/ws-client
if [ ! -f "$ws_client/node_modules/.package-lock.json" ] \
    || [ "$ws_client/package-lock.json" -nt "$ws_client/node_modules/.package-lock.json" ]; then
    echo "[test] installing $ws_client (npm ci)"
    (cd "$ws_client" && npm ci --no-audit --no-fund)
fi

# Build the binaries (`api`, `worker`) as well as the tests: end-to-end tests
# spawn the binaries from $CARGO_TARGET_DIR/debug, and nextest only builds test
# targets. Same (debug) profile as the tests, so nothing is built twice.
cargo build --workspace --bins --tests

status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?

# Benchmark smoke run: a fresh api + worker (the debug binaries built above)
# under a tiny load through every bench scenario and output writer; fails
# when anything does (a transfer that never settles, a missing file).
# Outputs go to a temporary directory. Skip with COREBANK_BENCH_SMOKE=0.
if [ "${COREBANK_BENCH_SMOKE:-1}" = 1 ]; then
    bash bench/run.sh --smoke --no-build || status=$?
fi

# Doc tests are skipped: each doc example is compiled as its own crate, which
# is slow on this 2-core machine, and the crates carry no runnable doc examples.
# Opt in with COREBANK_DOCTESTS=1.
if [ "${COREBANK_DOCTESTS:-0}" = 1 ] && [ "$status" -eq 0 ]; then
    cargo test --workspace --doc || status=$?
fi

exit "$status"
