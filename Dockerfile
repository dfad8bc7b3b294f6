# vbs-proxy container image: build with the Rust toolchain, run on a small distroless base as
# a non-root user. The configuration is mounted from a file (the Helm chart mounts a ConfigMap
# at /etc/vbs-proxy); no HEALTHCHECK: Kubernetes probes /healthz and /readyz.
#
#   docker build -t vbs-proxy:0.1.0 .
#   docker run --rm -p 8776:8776 -v $PWD/config/vbs-proxy.toml:/etc/vbs-proxy/vbs-proxy.toml:ro \
#     -e VBS_PROXY__SERVER__LISTEN=0.0.0.0:8776 vbs-proxy:0.1.0

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
# The workspace's other member (crates/cinder-sim, the simulated region) is only the demo's and
# the tests': the image is built without the `demo` feature, so none of it ships.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in merge hot_path; do echo 'fn main() {}' > benches/$b.rs; done \
    && mkdir config && touch config/default.toml \
    && cargo build --release --locked --no-default-features --bin vbs-proxy \
    && rm -rf src benches config
COPY src src
COPY benches benches
COPY config config
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --no-default-features --bin vbs-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/vbs-proxy /usr/local/bin/vbs-proxy
COPY config/vbs-proxy.toml /etc/vbs-proxy/vbs-proxy.toml
USER 65532:65532
EXPOSE 8776
ENTRYPOINT ["/usr/local/bin/vbs-proxy"]
CMD ["serve", "--config", "/etc/vbs-proxy/vbs-proxy.toml"]
