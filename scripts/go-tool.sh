#!/usr/bin/env bash
# Builds a command of one of the small pinned Go tool modules used by tests and prints its path:
#   scripts/go-tool.sh health          tools/health (kstatus, Argo CD's Lua, Flux's CEL)
#   scripts/go-tool.sh prometheus/rules tools/prometheus/rules (Prometheus rule check and evaluation)
# The first path element names the module under tools/, the rest the package in it. Built once
# per content of the module (go.mod, go.sum, every .go file) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/go-tools/<command>-<hash>/; shares the Go
# build cache and its lock with scripts/k8s-binaries.sh and scripts/helm-binary.sh (each module's
# go.mod holds the modules it has in common with tools/kube at tools/kube's versions where they
# build). Progress on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tool=${1:?usage: go-tool.sh MODULE[/PACKAGE]}
module=${tool%%/*}
package=.
[ "$tool" = "$module" ] || package=./${tool#*/}
mod="$here/tools/$module"
[ -f "$mod/go.mod" ] || { echo "go-tool.sh: no module tools/$module" >&2; exit 1; }
want=$(cd "$mod" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort \
  | xargs cat | sha256sum | cut -d' ' -f1)
name=${tool//\//-}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/go-tools/$name-${want:0:16}"
binary="$cache/$name"
if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
command -v go >/dev/null || { echo "go-tool.sh: Go is required to build tools/$tool" >&2; exit 1; }
gocache="${XDG_CACHE_HOME:-$HOME/.cache}/lineworks-operator/gocache"
mkdir -p "$cache" "$gocache"
exec 9>"$gocache.lock"
flock 9
if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
export CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$gocache"
cd "$mod"
start=$(date +%s)
echo "go-tool.sh: building tools/$tool (first time only)" >&2
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$binary.tmp" "$package" >&2
mv "$binary.tmp" "$binary"
echo "go-tool.sh: built tools/$tool in $(( $(date +%s) - start ))s" >&2
echo "$binary"
