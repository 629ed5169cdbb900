#!/usr/bin/env bash
# Builds the operator image without a docker engine or a registry: the Dockerfile's recipe (the
# static musl binary, uid/gid 65532, CA certificates, nothing else: no shell, no package manager)
# assembled with umoci (scripts/oci-archive.sh) into an OCI archive. tests/image.rs checks that this script and the
# Dockerfile build the binary with the same cargo command.
#
#   scripts/image.sh                      # prints the archive's path
#   scripts/image.sh --import ADDRESS     # and imports it into the containerd at ADDRESS
#                                         # (namespace k8s.io, where the kubelet looks)
#
# The image is named ghcr.io/lineworks-operator/lineworks-operator:<version> (the chart's default,
# so `imagePullPolicy: Never` or `IfNotPresent` finds it without a registry). Installs what it
# needs on a fresh Debian machine (scripts/node-deps.sh; the Rust musl target).
# Progress goes to stderr; stdout is only the archive's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
import=""
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import="$2"; shift 2 ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
repository=ghcr.io/lineworks-operator/lineworks-operator
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
target=x86_64-unknown-linux-musl

"$here/scripts/node-deps.sh"
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2

# The Dockerfile's build command, word for word (tests/image.rs compares them), in a target
# directory of its own so it can run while another cargo command holds target/.
export CARGO_TARGET_DIR="$here/target/image-build"
cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl >&2
binary="$CARGO_TARGET_DIR/$target/release/lineworks-operator"

out="$here/target/image"
archive="$out/lineworks-operator-$version.oci.tar"
rootfs=$(mktemp -d)
chmod 0755 "$rootfs"
trap 'rm -rf "$rootfs"' EXIT
install -D -m 0755 "$binary" "$rootfs/usr/local/bin/lineworks-operator"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# The user distroless calls "nonroot", so tools that look the uid up find a name.
install -d -m 0755 "$rootfs/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
"$here/scripts/oci-archive.sh" "$archive" "$version" "$rootfs" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/lineworks-operator \
  --config.cmd controller \
  --config.exposedports 8080/tcp --config.exposedports 8090/tcp \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.title=lineworks-operator"
echo "image.sh: $repository:$version in $archive" >&2

if [ -n "$import" ]; then
  ctr --address "$import" -n k8s.io images import --base-name "$repository" "$archive" >&2
  echo "image.sh: imported into containerd at $import (namespace k8s.io)" >&2
fi
echo "$archive"
