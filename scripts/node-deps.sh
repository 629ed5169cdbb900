#!/usr/bin/env bash
# Installs, once, the Debian packages a local container runtime needs: containerd and runc (the
# image test runs the operator's image under a private containerd), umoci and musl-tools (the
# image build, scripts/image.sh). Needs root or passwordless sudo on a Debian-based machine.
set -euo pipefail
want=(containerd runc umoci musl-tools ca-certificates)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "node-deps: install the Debian packages ${missing[*]} (needs root)" >&2
    exit 1
  fi
fi
echo "node-deps: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 || true
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
