//! A real, local Kubernetes control plane: etcd plus kube-apiserver on loopback, the way
//! controller-runtime's envtest runs them. Used by the integration tests, the demo and the
//! benchmarks; never a fake.
//!
//! * etcd comes from the `etcd-bin-vendored-linux-amd64` crate;
//! * kube-apiserver and a matching kubectl are built once from the Go tools module in `tools/kube`
//!   by `scripts/k8s-binaries.sh` (cached under `~/.cache`), or taken from `$LINEWORKS_K8S_BIN_DIR`.
//!
//! Everything lives in one temporary directory (data, certificates, logs, kubeconfig) that is
//! removed on [`ControlPlane::stop`] or drop. There is no kube-controller-manager: no garbage
//! collection of owned objects and no namespace deletion, so tests isolate themselves by namespace.

mod binaries;
mod kubeconfig;
mod node;
mod node_access;
mod pki;
mod supervisor;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use binaries::k8s_bin_dir;
use binaries::script_output;
pub use node::{NODE_NAME, OneNodeCluster, shared as shared_cluster};
pub use pki::{ServingIdentity, serving_identity};
pub use supervisor::ProcessState;
use supervisor::{ProcessSpec, Supervisor};

/// How long etcd and kube-apiserver together may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Attempts with fresh ports, for the rare case another program takes a port we picked.
const START_ATTEMPTS: usize = 3;
/// Environment variable naming a directory with prebuilt kube-apiserver and kubectl, skipping the
/// build script.
pub const K8S_BIN_DIR_ENV: &str = "LINEWORKS_K8S_BIN_DIR";

/// Why the control plane could not start or be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("control plane I/O failed while {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not generate the control plane's certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("could not build what the cluster needs with {script}: {detail}")]
    Build { script: String, detail: String },
    #[error("{name} exited during start-up ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        name: &'static str,
        status: String,
        log_tail: String,
    },
    #[error("the control plane was not ready within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("kubeconfig for the control plane is unusable: {0}")]
    Kubeconfig(String),
    #[error("this machine cannot run a node: {0}")]
    NodeUnavailable(String),
    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs `f` on what a mutex holds, if anything, also in a poisoned one.
fn with_slot<T, R>(slot: &Mutex<Option<T>>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    let mut guard = match slot.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.as_mut().map(f)
}

/// Takes what a mutex holds, also from a poisoned one (stopping must work after a panic).
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    match slot.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    }
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let action = action.into();
    move |source| ControlPlaneError::Io { action, source }
}

/// The address of the `kubernetes` Service: the first of the service range.
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVICE_RANGE: &str = "10.0.0.0/24";

/// Where the API server listens, and whether a node's components will talk to it.
#[derive(Clone, Debug)]
struct Listen {
    address: Ipv4Addr,
    /// The node's name: the API server then authorizes kubelets (Node authorizer), admits
    /// ServiceAccounts, and the plane writes a kubeconfig per node component
    /// (`<component>.kubeconfig`), the kubelet's serving certificate and the API server's client
    /// certificate for kubelets.
    node: Option<String>,
}

impl Listen {
    const LOOPBACK: Self = Self {
        address: Ipv4Addr::LOCALHOST,
        node: None,
    };
}

/// A running etcd + kube-apiserver pair with admin credentials.
pub struct ControlPlane {
    supervisor: Mutex<Option<Supervisor>>,
    dir: Mutex<Option<TempDir>>,
    dir_path: PathBuf,
    server_url: String,
    kubeconfig_path: PathBuf,
    kubectl_path: PathBuf,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir_path)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds kube-apiserver if needed, starts etcd and kube-apiserver on free loopback ports and
    /// waits until the API server is ready and the `default` namespace exists.
    pub async fn start() -> Result<Self, ControlPlaneError> {
        Self::start_listening(&Listen::LOOPBACK).await
    }

    async fn start_listening(listen: &Listen) -> Result<Self, ControlPlaneError> {
        let bin_dir = k8s_bin_dir().await?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin_dir, listen).await {
                Ok(plane) => return Ok(plane),
                // A port taken between picking and binding shows as an early exit: try new ports.
                Err(e @ ControlPlaneError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ControlPlaneError::NotReady(READY_TIMEOUT, "no start attempt was made".into())
        }))
    }

    async fn start_once(bin_dir: &Path, listen: &Listen) -> Result<Self, ControlPlaneError> {
        let dir = tempfile::Builder::new()
            .prefix("lineworks-control-plane-")
            .tempdir()
            .map_err(io_err("creating the control plane's temporary directory"))?;
        let root = dir.path().to_path_buf();
        let address = listen.address;
        let pki = pki::Pki::generate(SERVICE_IP.into(), &[address.into()])?;
        let write = |name: &str, body: &str| -> Result<PathBuf, ControlPlaneError> {
            let path = root.join(name);
            std::fs::write(&path, body).map_err(io_err(format!("writing {}", path.display())))?;
            Ok(path)
        };
        write("ca.crt", &pki.ca_pem)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert_pem)?;
        let serving_key = write("apiserver.key", &pki.serving_key_pem)?;
        let sa_key = write("service-account.key", &pki.service_account_key_pem)?;
        let sa_pub = write("service-account.pub", &pki.service_account_pub_pem)?;
        let [etcd_port, etcd_peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let server_url = format!("https://{address}:{api_port}");

        let mut tokens = format!("{},admin,admin-uid,\"system:masters\"\n", pki.admin_token);
        let node_flags = match &listen.node {
            Some(node) => node_access::issue(&root, &pki, &server_url, address, node, &mut tokens)?,
            None => Vec::new(),
        };
        let tokens = write("tokens.csv", &tokens)?;
        let plane = Self {
            supervisor: Mutex::new(Some(
                Supervisor::new().map_err(io_err("starting the keeper thread"))?,
            )),
            dir_path: root.clone(),
            dir: Mutex::new(Some(dir)),
            server_url: server_url.clone(),
            kubeconfig_path: root.join("kubeconfig"),
            kubectl_path: bin_dir.join("kubectl"),
        };
        let Ok(etcd_bin) = etcd_bin_vendored_linux_amd64::etcd_bin_path();
        let etcd_bin = etcd_bin.to_path_buf();
        plane.spawn(ProcessSpec {
            name: "etcd",
            program: etcd_bin,
            args: vec![
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync=true".into(),
                "--watch-progress-notify-interval=5s".into(),
                "--log-level=warn".into(),
            ],
            log: root.join("etcd.log"),
        })?;
        plane.wait_for_etcd(etcd_port).await?;

        plane.spawn(ProcessSpec {
            name: "kube-apiserver",
            program: bin_dir.join("kube-apiserver"),
            args: vec![
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", root.join("certs").display()),
                format!("--tls-cert-file={}", serving_cert.display()),
                format!("--tls-private-key-file={}", serving_key.display()),
                format!("--secure-port={api_port}"),
                format!("--bind-address={address}"),
                format!("--advertise-address={address}"),
                format!("--service-cluster-ip-range={SERVICE_RANGE}"),
                "--allow-privileged=true".into(),
                format!("--token-auth-file={}", tokens.display()),
                format!("--service-account-issuer={server_url}"),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(if node_flags.is_empty() {
                // Without a node nothing creates ServiceAccounts or runs pods.
                vec![
                    "--disable-admission-plugins=ServiceAccount".to_string(),
                    "--authorization-mode=RBAC".into(),
                ]
            } else {
                node_flags
            })
            .collect(),
            log: root.join("kube-apiserver.log"),
        })?;

        kubeconfig::write(
            &plane.kubeconfig_path,
            &server_url,
            &pki.ca_pem,
            &pki.admin_token,
        )?;
        plane.wait_for_apiserver().await?;
        Ok(plane)
    }

    fn spawn(&self, spec: ProcessSpec) -> Result<u32, ControlPlaneError> {
        let action = format!("starting {}", spec.name);
        self.with_supervisor(|s| s.spawn(spec))
            .ok_or_else(|| ControlPlaneError::NotReady(Duration::ZERO, "already stopped".into()))?
            .map_err(io_err(action))
    }

    fn with_supervisor<T>(&self, f: impl FnOnce(&mut Supervisor) -> T) -> Option<T> {
        with_slot(&self.supervisor, f)
    }

    /// Fails with the process's log when etcd or kube-apiserver has exited.
    fn check_running(&self) -> Result<(), ControlPlaneError> {
        match self
            .with_supervisor(|s| s.exit_error(&self.dir_path))
            .flatten()
        {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn wait_for_etcd(&self, port: u16) -> Result<(), ControlPlaneError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.check_running()?;
            match etcd_health(port).await {
                Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
                Ok(body) => last = format!("/health answered {body}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ControlPlaneError::NotReady(
            READY_TIMEOUT,
            format!("etcd: {last}"),
        ))
    }

    async fn wait_for_apiserver(&self) -> Result<(), ControlPlaneError> {
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.check_running()?;
            let ready = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))?;
            match client.request_text(ready).await {
                Ok(_) => match namespaces.get_opt("default").await {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => last = "namespace default not created yet".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ControlPlaneError::NotReady(
            READY_TIMEOUT,
            format!(
                "kube-apiserver: {last}; last lines of its log:\n{}",
                log_tail(&self.dir_path.join("kube-apiserver.log"))
            ),
        ))
    }

    /// `https://127.0.0.1:PORT` of the API server.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// A kubeconfig with admin rights, usable by `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A kubectl of the same Kubernetes version as the API server.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl_path
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.kubectl_path);
        command.arg("--kubeconfig").arg(&self.kubeconfig_path);
        command
    }

    /// The temporary directory holding data, certificates, logs and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The processes started, with exit statuses once they have exited.
    pub fn processes(&self) -> Vec<ProcessState> {
        self.with_supervisor(|s| s.states()).unwrap_or_default()
    }

    /// Client configuration with admin rights.
    pub async fn kube_config(&self) -> Result<kube::Config, ControlPlaneError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig_path)
            .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))
    }

    /// A new admin client bound to the calling Tokio runtime.
    pub async fn client(&self) -> Result<Client, ControlPlaneError> {
        Client::try_from(self.kube_config().await?).map_err(|source| ControlPlaneError::Kube {
            action: "building a client".into(),
            source,
        })
    }

    /// Creates a namespace with a unique name starting with `prefix`, for test isolation.
    pub async fn create_namespace(
        &self,
        client: &Client,
        prefix: &str,
    ) -> Result<String, ControlPlaneError> {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| ControlPlaneError::Kube {
                action: format!("creating a namespace for {prefix}"),
                source,
            })?;
        created
            .metadata
            .name
            .ok_or_else(|| ControlPlaneError::Kubeconfig("created namespace has no name".into()))
    }

    /// Stops kube-apiserver, then etcd, and removes the temporary directory. Idempotent.
    pub fn stop(&self) {
        drop(take(&self.supervisor));
        drop(take(&self.dir));
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The control plane shared by every test of one test binary, started on first use and stopped
/// when the process exits (`atexit`), on success and on failure alike. Start-up failures are
/// remembered so each test reports them at once instead of retrying.
pub async fn shared() -> Result<&'static ControlPlane, String> {
    static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
        tokio::sync::OnceCell::const_new();
    extern "C" fn stop_shared() {
        if let Some(Ok(plane)) = SHARED.get() {
            plane.stop();
        }
    }
    start_shared(&SHARED, ControlPlane::start(), stop_shared).await
}

/// Starts what `cell` holds once, and registers `stop` to run at process exit.
async fn start_shared<T, E: std::fmt::Display>(
    cell: &'static tokio::sync::OnceCell<Result<T, String>>,
    start: impl std::future::Future<Output = Result<T, E>>,
    stop: extern "C" fn(),
) -> Result<&'static T, String> {
    let started = cell
        .get_or_init(|| async {
            let value = start.await.map_err(|e| e.to_string())?;
            // SAFETY: registers a plain function without captured state.
            if unsafe { libc::atexit(stop) } != 0 {
                return Err("could not register the exit hook".to_string());
            }
            Ok(value)
        })
        .await;
    started.as_ref().map_err(Clone::clone)
}

/// Distinct free loopback ports, chosen by the kernel.
fn free_ports<const N: usize>() -> Result<[u16; N], ControlPlaneError> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("picking free ports"))?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(io_err("picking free ports"))?
            .port();
    }
    Ok(ports)
}

/// `GET /health` on etcd's client port (plain HTTP/1.0, so no client library is needed).
async fn etcd_health(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "etcd /health timed out")
        })??;
    Ok(response)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
