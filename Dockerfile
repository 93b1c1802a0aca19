# syntax=docker/dockerfile:1
#
# Switchboard node image.
#
#   docker build --build-arg BUILD_COMMIT=$(git rev-parse --short=12 HEAD) -t switchboard .
#
# The commit shown by the switchboard_build_info metric comes from build.rs: BUILD_COMMIT
# when set, else `git rev-parse` (but .dockerignore keeps .git out of the build context),
# else "unknown". So pass BUILD_COMMIT, or the metric says commit="unknown".
#
# The image starts `switchboard serve` listening on 0.0.0.0:8080 (public: WebSockets, REST,
# /healthz, /readyz) and 0.0.0.0:9090 (metrics: /metrics, /health, /readyz). Listening on a
# non-loopback address, the node refuses to start with the built-in development JWT secret:
# give it SWITCHBOARD_JWT_SECRET, and in production (SWITCHBOARD_ENV=production) also a strong
# SWITCHBOARD_TURN_SECRET and SWITCHBOARD_CORS_ORIGINS / SWITCHBOARD_ALLOWED_ORIGINS. See
# docker-compose.yml and .env.example.

# ---- build ------------------------------------------------------------------------------
# rust-version is 1.94; Debian bookworm so that the binary's glibc matches the runtime image.
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# 1. Dependencies only: the manifests, the lock file and build.rs, with stub sources, so that
#    this layer is rebuilt only when they change. The stubs stand in for every target the
#    manifests name (cargo refuses a workspace whose declared targets are missing).
COPY Cargo.toml Cargo.lock build.rs ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src benches tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && echo 'fn main() {}' > benches/relay.rs \
    && echo 'fn main() {}' > benches/auth.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked -p switchboard \
    && rm -f target/release/switchboard

# 2. The real sources of the node, and the migrations sqlx::migrate! embeds. The stubs of the
#    benches, tests and load tester stay: the release binary does not need them.
COPY src src
COPY migrations migrations

ARG BUILD_COMMIT=""
# Touch the crate roots: COPY keeps the context's modification times, which may be older than
# the stub build, and cargo would then take the stub's artifacts as up to date.
RUN touch src/main.rs src/lib.rs \
    && BUILD_COMMIT="${BUILD_COMMIT}" cargo build --release --locked -p switchboard \
    && test -x target/release/switchboard

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: TLS to Redis/Postgres/JWKS; curl: the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin switchboard \
    && mkdir -p /app/data \
    && chown -R 10001:10001 /app

COPY --from=builder /src/target/release/switchboard /usr/local/bin/switchboard

# Writable by the node: the default SQLite store lives under ./data (unused when
# SWITCHBOARD_DATABASE_URL names Postgres). Mount a volume on /app/data to keep it.
WORKDIR /app
USER 10001:10001

ENV SWITCHBOARD_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_METRICS_LISTEN=0.0.0.0:9090 \
    SWITCHBOARD_LOG_FORMAT=json

# 8080: public (put a load balancer in front); 9090: metrics, for Prometheus only.
EXPOSE 8080 9090

# Liveness on the public port (assumes SWITCHBOARD_LISTEN keeps port 8080). Readiness
# (/readyz) is for the load balancer, which must stop routing to a draining node without
# the container being restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8080/healthz || exit 1

# SIGTERM (docker stop) makes the node drain for up to SWITCHBOARD_SHUTDOWN_TIMEOUT (10s by
# default): give the container longer than that (docker stop -t, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
