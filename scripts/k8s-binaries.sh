#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the Go tools module in tools/kube (once per version and
# go.sum) and prints the directory holding them. Binaries and the Go build cache live under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/k8s-<version>/, so a second run costs nothing.
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tools/kube"
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "k8s-binaries.sh: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
minor=$(echo "$version" | cut -d. -f2)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/k8s-$version"
bin="$cache/bin"
# The stamp ties the cached binaries to the exact module graph they were built from.
want=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)
stamp="$bin/.stamp"
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "k8s-binaries.sh: Go is required to build kube-apiserver" >&2; exit 1; }
mkdir -p "$bin" "$cache/gocache"
# One build at a time, even when several test binaries ask at once.
exec 9>"$cache/.lock"
flock 9
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$cache/gocache"
cd "$mod"
start=$(date +%s)
echo "k8s-binaries.sh: downloading Go modules for Kubernetes $version" >&2
go mod download >&2
for tool in kube-apiserver kubectl; do
  echo "k8s-binaries.sh: building $tool $version (first time only; several minutes on 2 cores)" >&2
  go build -trimpath -buildvcs=false -ldflags "$ld" -o "$bin/$tool.tmp" "k8s.io/kubernetes/cmd/$tool" >&2
  mv "$bin/$tool.tmp" "$bin/$tool"
done
echo "$want" > "$stamp"
echo "k8s-binaries.sh: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
