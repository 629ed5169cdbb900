#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet (once; nothing when all are).
# Needs root or passwordless sudo on a Debian-based machine; says what to install otherwise.
#   scripts/apt-packages.sh WHO PACKAGE...     (WHO prefixes the messages)
set -euo pipefail
who=$1
shift
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "$who: install the Debian packages ${missing[*]} (needs root)" >&2
    exit 1
  fi
fi
echo "$who: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 || true
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
