#!/usr/bin/env bash
# Builds the node components (kubelet, kube-proxy, kube-scheduler, kube-controller-manager) from
# the Go tools module in tools/node, at the Kubernetes version tools/kube pins, once per go.sum;
# prints the directory holding them. They share the Go build cache of scripts/k8s-binaries.sh
# (most packages are common), under ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/.
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mod="$here/tools/node"
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
kube_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/tools/kube/go.mod")
[ "$version" = "$kube_version" ] || {
  echo "node-binaries.sh: tools/node pins $version but tools/kube $kube_version; keep them equal" >&2
  exit 1
}
minor=$(echo "$version" | cut -d. -f2)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/k8s-$version"
bin="$cache/node-bin"
tools=(kubelet kube-proxy kube-scheduler kube-controller-manager)
want=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)
stamp="$bin/.stamp"
built() {
  for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]
}
if built; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "node-binaries.sh: Go is required" >&2; exit 1; }
mkdir -p "$bin" "$cache/gocache"
exec 9>"$cache/.lock"
flock 9
if built; then echo "$bin"; exit 0; fi
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$cache/gocache"
cd "$mod"
start=$(date +%s)
go mod download >&2
for tool in "${tools[@]}"; do
  echo "node-binaries.sh: building $tool $version (first time only)" >&2
  go build -trimpath -buildvcs=false -ldflags "$ld" -o "$bin/$tool.tmp" "k8s.io/kubernetes/cmd/$tool" >&2
  mv "$bin/$tool.tmp" "$bin/$tool"
done
echo "$want" > "$stamp"
echo "node-binaries.sh: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
