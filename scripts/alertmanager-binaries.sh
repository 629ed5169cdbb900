#!/usr/bin/env bash
# Builds Alertmanager and amtool at the version pinned in tools/alertmanager/go.mod (once per
# go.mod+go.sum and this script) and prints the directory holding both. Cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/alertmanager-<version>-<hash>/; progress on
# stderr. Shares the Go build cache and its lock with the other Go tools (scripts/go-tool.sh).
#
# The module's source is downloaded and checked against tools/alertmanager/go.sum, then copied:
# Alertmanager embeds its web UI (ui/app/dist, built with npm for releases, not part of the Go
# module), so the copy gets a placeholder page there. Both commands build with Alertmanager's own
# go.mod and go.sum.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tools/alertmanager"
version=$(awk '$1=="require" && $2=="github.com/prometheus/alertmanager" {print $3; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "alertmanager-binaries.sh: no Alertmanager version in $mod/go.mod" >&2; exit 1; }
want=$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -d' ' -f1)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/alertmanager-$version-${want:0:12}"
fresh() { [ -x "$cache/alertmanager" ] && [ -x "$cache/amtool" ]; }
if fresh; then echo "$cache"; exit 0; fi
command -v go >/dev/null || { echo "alertmanager-binaries.sh: Go is required to build Alertmanager" >&2; exit 1; }
gocache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/gocache"
mkdir -p "$gocache"
exec 9>"$gocache.lock"
flock 9
if fresh; then echo "$cache"; exit 0; fi
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$gocache"
start=$(date +%s)
echo "alertmanager-binaries.sh: building Alertmanager $version and amtool (first time only)" >&2
source_dir=$(cd "$mod" && go mod download -json github.com/prometheus/alertmanager \
  | awk -F'"' '$2=="Dir" {print $4; exit}')
[ -d "$source_dir" ] || { echo "alertmanager-binaries.sh: no source for Alertmanager $version" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -R "$source_dir" "$work/src"
chmod -R u+w "$work/src"
for ui in elm mantine; do
  mkdir -p "$work/src/ui/app/dist/$ui"
  echo '<!doctype html><title>Alertmanager</title><p>Web UI not built (lineworks-operator test build).' \
    > "$work/src/ui/app/dist/$ui/index.html"
done
mkdir -p "$cache.tmp"
(cd "$work/src" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$cache.tmp/" ./cmd/alertmanager ./cmd/amtool) >&2
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "alertmanager-binaries.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$cache"
