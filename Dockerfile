# syntax=docker/dockerfile:1
#
# Portcullis container image.
#
#   DOCKER_BUILDKIT=1 docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9901:9901 --stop-timeout 15 \
#     -v "$PWD/config:/etc/portcullis:ro" portcullis      # config/gateway.yaml
#
# Mount the config directory rather than the single file: a file bind mount keeps the old inode
# when an editor replaces the file, so the gateway would never see the change.
#
# In a container the config must listen on 0.0.0.0 (server.listen "0.0.0.0:8080",
# server.admin "0.0.0.0:9901"): a loopback listener is unreachable through a published port.
# SIGTERM drains within server.shutdown-grace (default 10 s); docker stop waits 10 s by default,
# so give it a little more (--stop-timeout 15). Kubernetes manifests: deploy/kubernetes/.

# --- build: official Rust image on Debian 12 (bookworm), the same glibc as the runtime below.
# cmake is for pingora-core's zlib-ng (flate2); no OpenSSL is needed, TLS is rustls + aws-lc-rs.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.1-1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# The HEALTHCHECK probe: one std-only file, built with plain rustc (see the file for why).
COPY deploy/docker/healthcheck.rs deploy/docker/healthcheck.rs
RUN mkdir -p /out \
 && rustc --edition 2021 -C opt-level=s -C strip=symbols -C panic=abort \
      deploy/docker/healthcheck.rs -o /out/portcullis-healthcheck

# Only what the build reads: the workspace, vendor/ (patched dependencies, vendor/README.md) and
# examples/ (`portcullis demo` embeds demo.yaml), so edits to docs or deploy files do not
# invalidate this layer. Dependencies are cached across builds
# by BuildKit cache mounts (registry, git checkouts and the target directory), so a source change
# recompiles only the workspace crates. The binary is copied out of the cache mount within the same
# step, since cache mounts are not part of the image.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY vendor vendor
COPY examples examples
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p portcullis \
 && cp target/release/portcullis /out/portcullis

# --- runtime: gcr.io/distroless/cc-debian12, chosen over debian:bookworm-slim because the binary
# links glibc and libgcc_s only (cc-debian12 has those, plus CA certificates for rustls' native
# roots and tzdata; scripts/check-packaging checks the linkage) and the image carries no shell,
# package manager or curl: a smaller image and a far smaller attack surface. Consequence: no curl
# for the HEALTHCHECK, hence the std-only probe built above (a `portcullis healthcheck`
# subcommand would make it unnecessary).
# `:nonroot` runs as uid/gid 65532; USER is numeric so Kubernetes' runAsNonRoot can verify it.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/portcullis /out/portcullis-healthcheck /usr/local/bin/
# The default config; mount your own over it (a ConfigMap in Kubernetes).
COPY examples/gateway.yaml /etc/portcullis/gateway.yaml
USER 65532:65532
# Proxy listener, admin listener (/metrics, /healthz, /readyz).
EXPOSE 8080 9901
ENV PORTCULLIS_LOG_FORMAT=json
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/portcullis-healthcheck", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "-c", "/etc/portcullis/gateway.yaml"]
