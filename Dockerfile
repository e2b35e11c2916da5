# syntax=docker/dockerfile:1
#
# Multi-stage build of the binaries:
#   api           - GraphQL API (runs migrations on start)   -> default CMD
#   worker        - job workers only (needs DATABASE_URL and REDIS_URL)
#   mock-provider - a demo utility provider (contract section 7)
#
#   docker build -t corebank .
#   docker run --rm -p 8000:8000 corebank               # embedded SQLite + queue
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... corebank worker
#
# TLS is rustls everywhere (sqlx, lettre, redis), so no OpenSSL / pkg-config.

ARG RUST_VERSION=1

# --- cargo-chef: cache the dependency build in its own layer ---------------
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
# recipe.json = the manifests + Cargo.lock only; it changes only when
# dependencies change, so the `cook` layer below stays cached on code edits.
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --workspace --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin api --bin worker --bin mock-provider \
 && install -D -m 0755 -t /out target/release/api target/release/worker target/release/mock-provider

# --- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 corebank \
 && useradd --system --uid 10001 --gid corebank --create-home \
        --home-dir /var/lib/corebank --shell /usr/sbin/nologin corebank
COPY --from=builder /out/api /out/worker /out/mock-provider /usr/local/bin/
# Writable working dir: the embedded default DATABASE_URL
# (sqlite://corebank.db?mode=rwc) creates its file here when no Postgres is set.
WORKDIR /var/lib/corebank
# Numeric ids so orchestrators enforcing runAsNonRoot can verify them.
USER 10001:10001
ENV BIND_ADDR=0.0.0.0:8000 \
    RUST_LOG=info
EXPOSE 8000
# No HEALTHCHECK here: the image also runs `worker`, which serves no HTTP, so a
# probe of /healthz would mark every worker container unhealthy; and slim has
# no curl/wget. docker-compose.yml probes the api service's /healthz with
# bash's /dev/tcp instead (orchestrators should use GET /healthz and /readyz).
CMD ["api"]
