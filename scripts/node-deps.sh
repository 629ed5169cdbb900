#!/usr/bin/env bash
# Installs, once, the Debian packages a local node needs: containerd and runc (the image test and
# the one-node cluster), the CNI plugins, iptables and conntrack (pod network, kube-proxy), umoci
# and musl-tools (the image build, scripts/image.sh), busybox-static (scripts/busybox-image.sh).
set -euo pipefail
exec "$(dirname "$0")/apt-packages.sh" node-deps containerd runc containernetworking-plugins \
  iptables conntrack umoci musl-tools busybox-static ca-certificates
