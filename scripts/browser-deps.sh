#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser test (tests/browser.rs), once.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
exec "$(dirname "$0")/apt-packages.sh" browser-deps chromium chromium-driver
