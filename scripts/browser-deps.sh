#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser test (tests/browser.rs), once.
# Needs root or passwordless sudo on a Debian-based machine; prints what to do otherwise.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "browser-deps: install the Debian packages chromium and chromium-driver (needs root)" >&2
    exit 1
  fi
fi
echo "browser-deps: installing chromium and chromium-driver (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 || true
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
