#!/usr/bin/env bash
# Builds the helm CLI pinned in tools/helm/go.mod (once per go.mod+go.sum) and prints its path.
# Cached under ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/helm-<version>/; progress on stderr.
# Shares the Go build cache and its lock with scripts/k8s-binaries.sh: tools/helm/go.mod holds the
# modules helm has in common with tools/kube at the same versions, so those packages compile once.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tools/helm"
version=$(awk '$1=="helm.sh/helm/v3" {print $2; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "helm-binary.sh: no helm.sh/helm/v3 version in $mod/go.mod" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/helm-$version"
want=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)
helm="$cache/bin/helm"
fresh() { [ -x "$helm" ] && [ "$(cat "$cache/bin/.stamp" 2>/dev/null)" = "$want" ]; }
if fresh; then echo "$helm"; exit 0; fi
command -v go >/dev/null || { echo "helm-binary.sh: Go is required to build helm" >&2; exit 1; }
gocache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/gocache"
mkdir -p "$cache/bin" "$gocache"
exec 9>"$gocache.lock"
flock 9
if fresh; then echo "$helm"; exit 0; fi
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$gocache"
cd "$mod"
start=$(date +%s)
echo "helm-binary.sh: building helm $version (first time only)" >&2
go build -trimpath -buildvcs=false -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  -o "$helm.tmp" helm.sh/helm/v3/cmd/helm >&2
mv "$helm.tmp" "$helm"
echo "$want" > "$cache/bin/.stamp"
echo "helm-binary.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$helm"
