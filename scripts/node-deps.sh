#!/usr/bin/env bash
# Installs, once, the Debian packages a local node needs: containerd and runc (the image test and
# the one-node cluster), the CNI plugins, iptables, nftables and conntrack (pod network,
# kube-proxy; nft lets the janitor drop the empty tables iptables-nft leaves), umoci
# and musl-tools (the image build, scripts/image.sh), busybox-static (scripts/busybox-image.sh).
set -euo pipefail
exec "$(dirname "$0")/apt-packages.sh" node-deps containerd runc containernetworking-plugins \
  iptables nftables conntrack umoci musl-tools busybox-static ca-certificates
