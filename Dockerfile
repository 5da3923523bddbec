# berth: multi-stage build, small non-root runtime image.
# (No container engine runs on the development machines; this file is kept correct by
# review, not by a local build.)

FROM rust:1.95-bookworm AS build
# git2's https and ssh transports link OpenSSL (the rust image has libssl-dev and
# pkg-config; listed so a slimmer base fails loudly).
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crates/berth-load/Cargo.toml crates/berth-load/
RUN mkdir -p src crates/berth-load/src && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/berth-load/src/lib.rs \
    && cargo build --release --locked --bin berth \
    && rm -rf src crates/berth-load/src
COPY src ./src
COPY crates ./crates
COPY schemas ./schemas
# The release profile strips the binary (Cargo.toml): no separate `strip` step.
RUN touch src/main.rs src/lib.rs crates/berth-load/src/lib.rs \
    && cargo build --release --locked --bin berth

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin berth \
    && mkdir -p /var/cache/berth && chown 10001:10001 /var/cache/berth
# `berth watch` keeps its bare clone here (an emptyDir in deploy/).
ENV BERTH_CACHE_DIR=/var/cache/berth
# mimalloc commits memory as it is used instead of whole arenas up front: at 10,000
# workspaces `berth watch` at rest peaks at 276–287 MB instead of 312–317 MB, at no cost
# in time (BENCHMARKS.md). scripts/bench and scripts/bench-memory run berth watch so too.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
EXPOSE 8080
COPY --from=build /src/target/release/berth /usr/local/bin/berth
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["--help"]
