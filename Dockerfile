# One Dockerfile for every Mercato binary. Pick the binary with a build argument:
#
#   docker build --build-arg BIN=mercato-operator -t mercato/operator:0.1.0 .
#   docker build --build-arg BIN=mercato-auth     -t mercato/auth:0.1.0 .
#
# (BIN is mercato-operator, mercato-auth, mercato-product, mercato-order, mercato-payment,
# mercato-gateway, mercato-storefront or mercato-backup, whose image mercato/backup uploads
# and fetches a Store's bucket backups; the image names are the Store's and the chart's
# defaults.)
#
# Stages: `planner` reduces the workspace to a cargo-chef recipe (manifests and lock file
# only), `builder` compiles the dependencies from that recipe in a layer of their own, so
# a change to the sources recompiles only the workspace's crates, then builds the one
# binary; `runtime` is distroless (no shell, no package manager) and runs as the `nonroot`
# user, uid/gid 65532, which is also what the operator's pod security contexts set.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
# The recipe comes from the manifests and the lock file alone: every member's sources are
# replaced by an empty `src/lib.rs` and `src/main.rs` first. So it is the same for every
# binary, and all images share the dependency layer below, whether the build context is
# the whole repository or, as Tilt sends it, one binary's crates and every manifest.
# (scripts/deploy_checks/build_context.py checks that no member needs more than these.)
RUN find . -mindepth 2 -maxdepth 3 -name Cargo.toml -not -path './target/*' -exec sh -c \
      'for manifest; do dir=${manifest%/Cargo.toml}; rm -rf "$dir/src" "$dir/tests" "$dir/examples" "$dir/benches"; mkdir "$dir/src"; : >"$dir/src/lib.rs"; echo "fn main() { }" >"$dir/src/main.rs"; done' \
      sh {} + \
 && cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# Compile-time checked SQL (if any) reads the committed .sqlx data, never a live database.
ENV SQLX_OFFLINE=true
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when Cargo.toml or Cargo.lock files change, and
# shared by every binary's image.
RUN cargo chef cook --release --locked --recipe-path recipe.json
# Members whose sources are not in the context keep the stand-ins `cook` wrote: cargo
# needs every member to load the workspace, and builds only what BIN depends on.
COPY . .
ARG BIN
# The binary keeps its name; `entrypoint` links to it, because an exec-form ENTRYPOINT
# cannot expand ${BIN} and the runtime image has no shell to do it.
RUN if [ -z "${BIN}" ]; then echo "set --build-arg BIN=<binary>, e.g. BIN=mercato-auth" >&2; exit 1; fi \
 && cargo build --release --locked --bin "${BIN}" \
 && install -D -m 0755 "target/release/${BIN}" "/out/bin/${BIN}" \
 && ln -s "${BIN}" /out/bin/entrypoint

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG BIN
LABEL org.opencontainers.image.title="${BIN}" \
      org.opencontainers.image.description="Mercato ${BIN}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/bin/ /usr/local/bin/
USER 65532:65532
# 8080: the API (services), the shop's pages (storefront) or /metrics and probes (operator);
# 9090: a service's /healthz, /readyz and /metrics, which the public Service does not
# expose.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/entrypoint"]
