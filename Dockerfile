# syntax=docker/dockerfile:1
#
# The build-cache-proxy image: one static binary (musl) and the CA certificates, nothing else,
# run as a non-root user. Built for amd64 and arm64 (EKS Graviton nodes) by cross-compiling on
# the build machine's own architecture, so no emulation is needed:
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/build-cache-proxy:TAG --push .
#
# Offline, or with a binary built elsewhere, skip the Rust stage and take the binary from
# dist/linux-<arch>/build-cache-proxy (see docs/deploy-eks.md, "The image"):
#
#   buildah build --build-arg BINARY_FROM=prebuilt --platform linux/amd64 -t build-cache-proxy .

ARG RUST_VERSION=1.95
ARG BINARY_FROM=build

# ---- build: cross-compile a static binary for the target platform -----------------------------
FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3-pip \
 && rm -rf /var/lib/apt/lists/*
# zig links musl binaries for either architecture, and compiles ring's C and assembly for it.
RUN pip3 install --break-system-packages --no-cache-dir ziglang \
 && cargo install --locked cargo-zigbuild \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
# Debug info is stripped from the shipped binary (symbols stay, so a panic's backtrace still
# names its functions).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETARCH} \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && cargo zigbuild --release --locked --bin build-cache-proxy --target "$target" \
 && mkdir -p /out/data \
 && cp "target/$target/release/build-cache-proxy" /out/build-cache-proxy \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# ---- prebuilt: the same files from the build context -------------------------------------------
FROM scratch AS prebuilt
ARG TARGETARCH
COPY dist/linux-${TARGETARCH}/build-cache-proxy /out/build-cache-proxy
COPY dist/ca-certificates.crt /out/ca-certificates.crt
COPY dist/empty/ /out/data/

FROM ${BINARY_FROM} AS binary

# ---- runtime ----------------------------------------------------------------------------------
FROM scratch
COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /out/build-cache-proxy /usr/local/bin/build-cache-proxy
# A writable working directory for the embedded default (entries under ./data); in Kubernetes
# the chart mounts the cache volume here and the root filesystem stays read-only.
COPY --from=binary --chown=65532:65532 /out/data/ /var/cache/build-cache-proxy/
WORKDIR /var/cache/build-cache-proxy
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 5071 9000 9091
ENTRYPOINT ["/usr/local/bin/build-cache-proxy"]
CMD ["serve"]
