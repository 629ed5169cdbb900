#!/usr/bin/env bash
# Builds a tiny client image from Debian's static busybox (sh, wget, sleep…), for pods that play a
# reception app in the one-node cluster's tests and demo: no registry, no docker. Prints the
# archive's path; with --import ADDRESS also imports it into that containerd (namespace k8s.io) as
# localhost/lineworks-operator/busybox:<busybox version>.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
import=""
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import="$2"; shift 2 ;;
    *) echo "busybox-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
repository=localhost/lineworks-operator/busybox
"$here/scripts/node-deps.sh"
tag=$( (/bin/busybox 2>&1 || true) | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')
[ -n "$tag" ] || { echo "busybox-image.sh: cannot read busybox's version" >&2; exit 1; }
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
chmod 0755 "$rootfs"
install -D -m 0755 /bin/busybox "$rootfs/bin/busybox"
for applet in sh wget sleep cat echo; do ln -s busybox "$rootfs/bin/$applet"; done
archive="$here/target/image/busybox-$tag.oci.tar"
"$here/scripts/oci-archive.sh" "$archive" "$tag" "$rootfs" \
  --config.user 65532:65532 --config.entrypoint /bin/sh --config.env PATH=/bin
echo "busybox-image.sh: $repository:$tag in $archive" >&2
if [ -n "$import" ]; then
  ctr --address "$import" -n k8s.io images import --base-name "$repository" "$archive" >&2
fi
echo "$archive"
