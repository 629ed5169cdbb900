//! The node components' configuration files: CNI, containerd, kubelet, kube-proxy.

use std::path::Path;

use super::{BRIDGE, CGROUP, CNI_NETWORK, NODE_IP, NODE_NAME, POD_RANGE};

/// The bridge plugin on our bridge, addresses from host-local kept in the node's directory; no
/// masquerading (pods only talk to this machine).
pub(super) fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_RANGE, "gateway": NODE_IP.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni-ipam").display().to_string(),
                },
            },
            {"type": "loopback"},
        ],
    })
    .to_string()
}

/// containerd with the CRI plugin: everything under the node's directory, the local pause image,
/// runc with cgroupfs, and `restrict_oom_score_adj` (this VM withholds CAP_SYS_RESOURCE, so a
/// negative oom_score_adj would make runc fail).
pub(super) fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/lineworks-operator/pause:3.10.2"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
    )
}

/// The kubelet: cgroup v1 allowed (this VM's hierarchy), cgroupfs, pods under [`CGROUP`], logs in
/// the node's directory, webhook authentication and authorization, no image garbage collection or
/// disk-pressure eviction (a nearly full CI disk must not evict the test's pods).
pub(super) fn kubelet_config(dir: &Path, plane: &Path, port: u16, healthz_port: u16) -> String {
    let d = dir.display();
    let p = plane.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP}
containerRuntimeEndpoint: unix://{d}/containerd.sock
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
tlsCertFile: {p}/kubelet.crt
tlsPrivateKeyFile: {p}/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {p}/ca.crt
authorization:
  mode: Webhook
podLogsDir: {d}/pod-logs
failSwapOn: false
registerNode: true
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 100Mi
  imagefs.available: 100Mi
  nodefs.inodesFree: 1%
shutdownGracePeriod: 0s
fileCheckFrequency: 5s
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
"#
    )
}

/// kube-proxy in iptables mode; conntrack and localhost-nodeport settings left alone so it changes
/// no kernel setting.
pub(super) fn kube_proxy_config(plane: &Path, healthz_port: u16, metrics_port: u16) -> String {
    let p = plane.display();
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {p}/kube-proxy.kubeconfig
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {POD_RANGE}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#
    )
}
