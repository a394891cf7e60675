#!/usr/bin/env bash
# Builds the operator's image as the Dockerfile does (the static musl binary, alone,
# UID 65532), offline with umoci + skopeo, tagged as the chart's default image so the
# charts install unchanged; writes it as a docker-archive tar to $1.
set -euo pipefail
out=${1:?output tar}
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-musl
image=$(sed -n 's/^  image: //p' "$root/deploy/charts/toolhive-operator/values.yaml" | head -1)
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
command -v musl-gcc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q musl-tools >/dev/null
echo "[operator-image] building the static operator binary (profile image, $target)" >&2
# Its own target dir: this may run inside `cargo test`, which holds the main one.
cargo build --quiet --profile image --locked --target "$target" --target-dir "$root/target/image" --bin toolhive-operator --manifest-path "$root/Cargo.toml"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:img"
umoci unpack --image "$work/oci:img" "$work/bundle" >/dev/null
install -m 0755 "$root/target/image/$target/image/toolhive-operator" "$work/bundle/rootfs/toolhive-operator"
umoci repack --image "$work/oci:img" "$work/bundle"
umoci config --image "$work/oci:img" --config.user 65532:65532 --config.entrypoint /toolhive-operator
rm -f "$out"
skopeo copy --quiet "oci:$work/oci:img" "docker-archive:$out:$image"
echo "[operator-image] $image -> $out" >&2
