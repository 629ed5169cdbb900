#!/usr/bin/env bash
# Builds tools/health (kstatus, Argo CD's Lua and Flux's CEL health evaluation for the GitOps
# health test) once per go.mod+go.sum+main.go and prints its path. Cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/health-<hash>/; shares the Go build cache and
# its lock with scripts/k8s-binaries.sh (tools/health/go.mod holds the modules it has in common
# with tools/kube at the same versions). Progress on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tools/health"
want=$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" | sha256sum | cut -d' ' -f1)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/health-${want:0:16}"
health="$cache/health"
if [ -x "$health" ]; then echo "$health"; exit 0; fi
command -v go >/dev/null || { echo "health-binary.sh: Go is required to build tools/health" >&2; exit 1; }
gocache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/gocache"
mkdir -p "$cache" "$gocache"
exec 9>"$gocache.lock"
flock 9
if [ -x "$health" ]; then echo "$health"; exit 0; fi
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$gocache"
cd "$mod"
start=$(date +%s)
echo "health-binary.sh: building tools/health (first time only)" >&2
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$health.tmp" . >&2
mv "$health.tmp" "$health"
echo "health-binary.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$health"
