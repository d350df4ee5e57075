# syntax=docker/dockerfile:1
# picket's worker image: `docker build -t picket .`, or `docker compose up`
# with docker-compose.yaml beside this file.

# The builder is pinned to the toolchain CI tests with (a floating tag would
# change the compiler under the same Dockerfile); the minimum is Cargo.toml's
# rust-version (scripts/msrv). Pin a digest too where your registry policy
# asks for one: `FROM rust:1.95.0-bookworm@sha256:...`.
# The rust image has OpenSSL's headers and pkg-config, which the build links.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out because the target dir is not kept in the
# layer. The release profile keeps line tables for profiling on a developer's
# machine (Cargo.toml); the image needs none of it: no debug info is built
# and the symbols are stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked \
    && cp target/release/picket /usr/local/bin/picket

FROM debian:bookworm-slim
# OCI annotations; VERSION, REVISION and CREATED are passed by the build:
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t picket .
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="picket" \
      org.opencontainers.image.description="A worker that tells, at scale and without false alarms, whether websites are up" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.documentation="docs/OPERATIONS.md" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# ca-certificates: system roots for HTTPS targets (picket also bundles its
# own); libssl3: OpenSSL, for servers that speak only legacy TLS; curl: the
# healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin picket
COPY --from=build /usr/local/bin/picket /usr/local/bin/picket
COPY config/default.toml /etc/picket/picket.toml
# Listen beyond the container's loopback so /metrics, /healthz and /readyz
# can be scraped; the config file's default is 127.0.0.1.
ENV PICKET__HTTP__LISTEN=0.0.0.0:9464
EXPOSE 9464
USER picket
# /healthz answers while the process serves; /readyz (broker and Redis) is for
# orchestrators that route or scale, not a reason to restart the container.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
# SIGTERM (docker stop) makes the worker drain and exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["picket"]
CMD ["worker", "--config", "/etc/picket/picket.toml"]
