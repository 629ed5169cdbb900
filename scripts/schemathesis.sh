#!/usr/bin/env bash
# Installs schemathesis (once, from PyPI) into a virtualenv cached under
# ~/.cache/lineworks-operator/schemathesis-VERSION and prints the path of its `st` command.
# Used by tests/relay_contract.rs to check the relay against its committed OpenAPI document.
set -euo pipefail
VERSION=4.32.5
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator"
dir="$cache/schemathesis-$VERSION"
mkdir -p "$cache"
exec 9>"$cache/schemathesis.lock"
flock 9
if [ ! -f "$dir/.installed" ]; then
  echo "schemathesis.sh: installing schemathesis $VERSION (first time only)" >&2
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
  touch "$dir/.installed"
fi
echo "$dir/bin/st"
