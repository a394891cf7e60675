# Static, non-root, shell-less image of toolhive-operator.
# Build stage: musl target so the binary needs no libc at run time.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --profile image --locked --target x86_64-unknown-linux-musl --bin toolhive-operator

# Run stage: nothing but the binary (no shell, no package manager), UID 65532.
FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/image/toolhive-operator /toolhive-operator
USER 65532:65532
ENTRYPOINT ["/toolhive-operator"]
