# syntax=docker/dockerfile:1
# picket's worker image: `docker build -t picket .`, or `docker compose up`
# with docker-compose.yaml beside this file.

# The rust image has OpenSSL's headers and pkg-config, which the build links.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out because the target dir is not kept in the
# layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/picket /usr/local/bin/picket

FROM debian:bookworm-slim
# ca-certificates: system roots for HTTPS targets (picket also bundles its
# own); libssl3: OpenSSL, for servers that speak only legacy TLS; curl: the
# compose healthcheck.
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
# SIGTERM (docker stop) makes the worker drain and exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["picket"]
CMD ["worker", "--config", "/etc/picket/picket.toml"]
