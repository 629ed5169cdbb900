#!/usr/bin/env bash
# Turns a prepared root filesystem into a one-layer OCI image archive with umoci (no docker, no
# registry). Used by scripts/image.sh and scripts/pause-image.sh.
#
#   scripts/oci-archive.sh ARCHIVE TAG ROOTFS [umoci config options…]
#
# ROOTFS's contents become the layer as they are (owners and modes included). The archive holds an
# OCI layout whose index names the image TAG (annotation org.opencontainers.image.ref.name);
# `ctr images import --base-name REPOSITORY ARCHIVE` imports it as REPOSITORY:TAG.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: oci-archive.sh ARCHIVE TAG ROOTFS [umoci config options…]" >&2; exit 2; }
archive=$1 tag=$2 rootfs=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout" >&2
umoci new --image "$work/layout:$tag" >&2
umoci unpack --image "$work/layout:$tag" "$work/bundle" >&2
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$work/layout:$tag" "$work/bundle" >&2
umoci config --image "$work/layout:$tag" --os linux --architecture amd64 "$@" >&2
umoci gc --layout "$work/layout" >&2
mkdir -p "$(dirname "$archive")"
tar -C "$work/layout" -cf "$archive.tmp" .
mv "$archive.tmp" "$archive"
