#!/usr/bin/env bash
# Builds the Kubernetes binaries a Go tools module names in its `tool` block, once per version and
# go.sum, and prints the directory holding them:
#   scripts/k8s-binaries.sh        tools/kube: kube-apiserver and kubectl (the control plane)
#   scripts/k8s-binaries.sh node   tools/node: kubelet, kube-proxy, kube-scheduler,
#                                  kube-controller-manager (the one-node cluster)
# Both modules must pin the same Kubernetes version. Binaries are cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/k8s-<version>/, so a second run costs nothing;
# every Go tool (these and helm) shares one Go build cache, lineworks-operator/gocache, where
# packages common to them compile once, and builds one at a time (each go build uses every core).
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
set_name=${1:-kube}
case "$set_name" in
  kube) bin_name=bin ;;
  node) bin_name=node-bin ;;
  *) echo "k8s-binaries.sh: unknown set $set_name (kube or node)" >&2; exit 2 ;;
esac
pinned() { awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"; }
mod="$here/tools/$set_name"
version=$(pinned "$mod")
[ -n "$version" ] || { echo "k8s-binaries.sh: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
[ "$version" = "$(pinned "$here/tools/kube")" ] || {
  echo "k8s-binaries.sh: tools/$set_name pins $version, tools/kube $(pinned "$here/tools/kube"); keep them equal" >&2
  exit 1
}
# The tool block: `k8s.io/kubernetes/cmd/<name>` lines between `tool (` and `)`.
mapfile -t tools < <(awk '/^tool \(/{t=1; next} t && /^\)/{t=0} t {n=split($1, p, "/"); print p[n]}' "$mod/go.mod")
[ ${#tools[@]} -gt 0 ] || { echo "k8s-binaries.sh: no tool block in $mod/go.mod" >&2; exit 1; }
minor=$(echo "$version" | cut -d. -f2)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/k8s-$version"
bin="$cache/$bin_name"
# The stamp ties the cached binaries to the exact module graph they were built from.
want=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)
stamp="$bin/.stamp"
built() {
  for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]
}
if built; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "k8s-binaries.sh: Go is required to build ${tools[*]}" >&2; exit 1; }
gocache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/gocache"
mkdir -p "$bin" "$gocache"
# One Go build at a time, even when several test binaries or make jobs ask at once.
exec 9>"$gocache.lock"
flock 9
if built; then echo "$bin"; exit 0; fi
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$gocache"
cd "$mod"
start=$(date +%s)
echo "k8s-binaries.sh: downloading Go modules for Kubernetes $version ($set_name)" >&2
go mod download >&2
# One go build for the whole set: packages compile once and the binaries link in parallel.
echo "k8s-binaries.sh: building ${tools[*]} $version (first time only; minutes on 2 cores)" >&2
staging="$bin/.staging"
rm -rf "$staging" && mkdir -p "$staging"
pkgs=()
for tool in "${tools[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$tool"); done
go build -trimpath -buildvcs=false -ldflags "$ld" -o "$staging/" "${pkgs[@]}" >&2
for tool in "${tools[@]}"; do mv "$staging/$tool" "$bin/$tool"; done
rmdir "$staging"
echo "$want" > "$stamp"
echo "k8s-binaries.sh: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
