#!/usr/bin/env bash
# Removes everything a one-node cluster (crates/control-plane/src/node.rs) put on this machine.
#
#   node-janitor.sh watch STATE_FILE   record the machine's state, then wait for stdin to close
#                                      (the cluster's process ended, however it ended) and clean
#   node-janitor.sh clean STATE_FILE   clean now (used at start for leftovers of a power cut)
#
# The cluster starts one `watch` janitor in its own session with a pipe as stdin: a normal stop
# closes the pipe and waits for it; a panic, Ctrl-C or SIGKILL of the test process closes it too,
# because the kernel closes a dead process's file descriptors. The janitor holds the machine-wide
# node lock (fd 9, inherited), so the next cluster starts only after it has finished.
#
# STATE_FILE holds KEY=VALUE lines written by the cluster before it starts anything:
#   DIR       the cluster's directory (containerd root and state, kubelet root, logs)
#   BRIDGE    the bridge it created          CGROUP  the cgroup parent of its pods (all hierarchies)
#   NETNS     network namespaces present before it started (space-separated)
#   NFT_TABLES nftables tables present before, as family:name (space-separated)
#   SYSCTL_*  kernel settings as they were before (kubelet and kube-proxy change some)
#   PLANE_DIR the control plane's directory (removed too)
#   MADE_DIRS directories of the machine that did not exist before (removed when empty)
# Every step is idempotent and tolerates what is already gone.
set -uo pipefail
mode=${1:?usage: node-janitor.sh watch|clean STATE_FILE}
state=${2:?usage: node-janitor.sh watch|clean STATE_FILE}

if [ "$mode" = watch ]; then
  # Block until the cluster's end of the pipe closes.
  cat >/dev/null
fi
[ -f "$state" ] || exit 0
get() { sed -n "s/^$1=//p" "$state" | tail -n1; }
dir=$(get DIR)
bridge=$(get BRIDGE)
cgroup=$(get CGROUP)
netns_before=" $(get NETNS) "
[ -n "$dir" ] && [ -n "$cgroup" ] || { echo "node-janitor: incomplete state file $state" >&2; exit 1; }

# 1. Processes: the node's components die with the test process (PR_SET_PDEATHSIG); containerd's
# shims outlive it (they daemonize), and the containers live in the pods' cgroups.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  pids=$(pgrep -f -- "$dir/" || true)
  for hier in /sys/fs/cgroup/*/; do
    [ -d "$hier$cgroup" ] || continue
    pids="$pids $(find "$hier$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null)"
  done
  pids=$(echo $pids | tr ' ' '\n' | grep -v "^$$\$" | sort -u)
  [ -z "$pids" ] && break
  # A frozen cgroup would keep its processes from dying.
  for f in $(find /sys/fs/cgroup/freezer/"$cgroup" -name freezer.state 2>/dev/null); do
    echo THAWED > "$f" 2>/dev/null || true
  done
  kill -9 $pids 2>/dev/null || true
  sleep 0.2
done

# 2. Mounts under the cluster's directory (container root filesystems, volumes, shm), deepest
# first, and the pods' network namespaces (containerd 1.6 keeps them in /run/netns).
unmount_under() {
  awk -v d="$1" '{ if (index($5, d) == 1) print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}
unmount_under "$dir/"
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] || continue
  case "$netns_before" in *" $(basename "$ns") "*) continue ;; esac
  umount -l "$ns" 2>/dev/null || true
  rm -f "$ns"
done
# Shim sockets and runc state containerd 1.6 keeps outside its state directory.
for address in "$dir"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
  [ -f "$address" ] || continue
  socket=$(sed 's|^unix://||' "$address")
  case "$socket" in /run/containerd/s/*) rm -f "$socket" ;; esac
done
for bundle in "$dir"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*/; do
  [ -d "$bundle" ] || continue
  id=$(basename "$bundle")
  rm -rf "/run/containerd/runc/k8s.io/$id" "/run/containerd/fifo/$id"
  # libcni's result cache, per network and sandbox (our network and containerd's loopback).
  rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true
done

# 3. Network: the bridge (with its address and the route to the service range), the veths left on
# it, the CNI result cache of our network, and every KUBE-* iptables rule and chain.
if [ -n "$bridge" ] && ip link show "$bridge" >/dev/null 2>&1; then
  for veth in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$veth" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
fi
rm -f /var/lib/cni/results/"$(get CNI_NETWORK)"-* 2>/dev/null || true
for tool in iptables ip6tables; do
  command -v "$tool-save" >/dev/null || continue
  for table in filter nat mangle raw; do
    saved=$("$tool-save" -t "$table" 2>/dev/null) || continue
    echo "$saved" | grep -q 'KUBE-' || continue
    echo "$saved" | grep -v -- 'KUBE-' | "$tool-restore" -T "$table" 2>/dev/null ||
      echo "node-janitor: could not remove KUBE-* rules from $tool $table" >&2
  done
done
if command -v nft >/dev/null; then
  # iptables-nft leaves the tables it created, empty: drop those that did not exist before and
  # hold no rule (and kube-proxy's own nftables tables, should it have made them).
  tables_before=" $(get NFT_TABLES) "
  nft list tables 2>/dev/null | while read -r _ family name; do
    case "$tables_before" in *" $family:$name "*) continue ;; esac
    if [ "$name" = kube-proxy ] || ! nft -j list table "$family" "$name" | grep -q '"rule"'; then
      nft delete table "$family" "$name" 2>/dev/null || true
    fi
  done
fi

# 4. Kernel settings back as they were.
sed -n 's/^SYSCTL_\([^=]*\)=\(.*\)$/\1 \2/p' "$state" | while read -r key value; do
  path="/proc/sys/$(echo "$key" | tr . /)"
  [ -w "$path" ] && [ "$(cat "$path")" != "$value" ] && echo "$value" > "$path"
done

# 5. Cgroups of the pods, deepest first, in every hierarchy.
for hier in /sys/fs/cgroup/*/; do
  [ -d "$hier$cgroup" ] || continue
  find "$hier$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# 6. Directories containerd or the CNI created that did not exist before, if empty now.
for made in $(get MADE_DIRS); do
  [ -d "$made" ] && find "$made" -depth -type d -empty -delete 2>/dev/null
done

# 7. The cluster's directory (the harness removes it too; a killed process could not).
unmount_under "$dir/"
rm -rf "$dir"
plane=$(get PLANE_DIR)
[ -n "$plane" ] && rm -rf "$plane"
rm -f "$state"
