#!/usr/bin/env bash
# Installs, once, the Debian packages a local container runtime needs: containerd and runc (the
# image test runs the operator's image under a private containerd), umoci and musl-tools (the
# image build, scripts/image.sh).
set -euo pipefail
exec "$(dirname "$0")/apt-packages.sh" node-deps containerd runc umoci musl-tools ca-certificates
