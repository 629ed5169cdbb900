#!/usr/bin/env bash
# Builds the pod sandbox ("pause") image from Kubernetes' own source, in the Kubernetes module that
# tools/kube pins (build/pause/linux/pause.c, statically linked with gcc), so a node needs no
# registry for it either. Prints the archive's path; with --import ADDRESS also imports it into
# that containerd (namespace k8s.io) as localhost/lineworks-operator/pause:<tag>, the name to give
# containerd as its sandbox_image.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
import=""
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import="$2"; shift 2 ;;
    *) echo "pause-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
repository=localhost/lineworks-operator/pause
mod="$here/tools/kube"
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
src=$(cd "$mod" && GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
  go mod download -json "k8s.io/kubernetes@$version" | awk -F'"' '/"Dir"/ {print $4; exit}')
[ -f "$src/build/pause/linux/pause.c" ] || { echo "pause-image.sh: no pause.c in $src" >&2; exit 1; }
tag=$(awk '$1=="TAG" {print $3; exit}' "$src/build/pause/Makefile")
"$here/scripts/node-deps.sh"
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
chmod 0755 "$rootfs"
gcc -Os -Wall -Werror -static -DVERSION="v$tag-lineworks" -o "$rootfs/pause" \
  "$src/build/pause/linux/pause.c"
strip "$rootfs/pause"
archive="$here/target/image/pause-$tag.oci.tar"
"$here/scripts/oci-archive.sh" "$archive" "$tag" "$rootfs" \
  --config.user 65535:65535 --config.entrypoint /pause
echo "pause-image.sh: $repository:$tag in $archive" >&2
if [ -n "$import" ]; then
  ctr --address "$import" -n k8s.io images import --base-name "$repository" "$archive" >&2
fi
echo "$archive"
