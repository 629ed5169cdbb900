# A small static image: the one binary on distroless/static, non-root, nothing else.
#   docker build -t lineworks-operator .
# Without docker: `make image` (scripts/image.sh) builds the same image with umoci; a test keeps
# the cargo command below identical in both.
# The build has no local-control-plane feature (etcd, kube-apiserver harness): the image only runs
# the controller, the relay, the CLI helpers and the emulator.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/lineworks-operator /lineworks-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /lineworks-operator /usr/local/bin/lineworks-operator
# distroless "nonroot" is uid/gid 65532, matching the chart's securityContext.
USER 65532:65532
EXPOSE 8080 8090
ENTRYPOINT ["/usr/local/bin/lineworks-operator"]
CMD ["controller"]
