# The kvroute binary (`kvroute serve` is the indexer) in a minimal runtime image.
# Build from the repository root with any OCI builder (docker, podman, buildah, kaniko):
#   podman build -f packaging/indexer.Dockerfile -t REGISTRY/kvroute:TAG .
# Stage 1 compiles a static-PIE musl binary (the daemon uses pure-Rust ZeroMQ and
# tokenizers, no C libraries); stage 2 is distroless/static: no shell, no package manager,
# runs as nonroot (uid 65532, as k8s/base/indexer.yaml expects).
FROM docker.io/library/rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kvroute --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/kvroute /kvroute

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kvroute /usr/local/bin/kvroute
USER 65532:65532
EXPOSE 8080 5557
ENTRYPOINT ["/usr/local/bin/kvroute"]
CMD ["serve"]
