use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lineworks_operator::endpoints::AllowedHosts;
use lineworks_operator::telemetry::{self, LogFormat};

/// LINE WORKS visitor notifications, declared as Kubernetes objects.
#[derive(Parser)]
#[command(name = "lineworks-operator", version, about)]
struct Cli {
    /// Log format of long-running subcommands.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LineWorksNotifier CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Controller(ControllerArgs),
    /// Serve visitor notifications over HTTP (sidecar or Deployment).
    Relay(RelayArgs),
    /// Print the relay's OpenAPI document.
    RelayOpenapi,
    /// Write the generated reference pages (CRD, relay API, metrics, the chart's README) under
    /// the repository's root.
    #[command(hide = true)]
    GenDocs {
        #[arg(default_value = ".")]
        root: std::path::PathBuf,
    },
    /// Serve the LINE WORKS API emulator (tests, demo, local development).
    Emulator {
        /// JSON file describing the tenant (domains, users, apps, bots, rooms).
        #[arg(long)]
        world: Option<std::path::PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: String,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// Authorize a userAccount notifier: print the URL to open (or run a local callback with
    /// --listen) and wait until it is Authorized.
    Authorize {
        #[command(flatten)]
        target: TargetArgs,
        /// Run the OAuth callback on this machine (for clusters without an Ingress), e.g.
        /// 127.0.0.1:8400; the redirect URL must be registered on the app.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Redirect URL registered on the app (default http://LISTEN/oauth/callback).
        #[arg(long, requires = "listen")]
        redirect_url: Option<String>,
        /// How long to wait for the administrator, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// Allow spec.apiBaseURL/authBaseURL to name this host (or host:port) besides LINE WORKS's
        /// own; repeat or separate with commas. Default: none.
        #[arg(long = "allow-host", env = "ALLOWED_HOSTS", value_delimiter = ',')]
        allow_host: Vec<String>,
    },
    /// Print a notifier's conditions with what to fix; exits non-zero unless Ready.
    Status {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Check a notifier again now (after a fix in LINE WORKS) and print its conditions; exits
    /// non-zero unless Ready.
    Recheck {
        #[command(flatten)]
        target: TargetArgs,
        /// How long to wait for the controller, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Send a test notification (the console's テスト通知 button) and print the result per target.
    TestNotify {
        #[command(flatten)]
        target: TargetArgs,
        /// How long to wait for the result, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Start a local control plane, install the CRD and the examples, and show them.
    #[cfg(feature = "local-control-plane")]
    Demo {
        /// Keep everything running until Ctrl-C.
        #[arg(long)]
        wait: bool,
        /// Run a one-node cluster on this machine (root) and install the chart with helm,
        /// instead of a control plane with in-process controller and relay.
        #[arg(long)]
        cluster: bool,
    },
}

#[derive(clap::Args)]
struct TargetArgs {
    /// The notifier: NAME, or NAMESPACE/NAME.
    notifier: String,
    /// Namespace of NAME (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

impl TargetArgs {
    async fn resolve(
        self,
    ) -> Result<
        (kube::Client, lineworks_operator::cli::NotifierRef),
        lineworks_operator::cli::CliError,
    > {
        let client = lineworks_operator::kube_client::from_environment().await?;
        let namespace = self
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_string());
        let at = lineworks_operator::cli::NotifierRef::parse(&self.notifier, &namespace)?;
        Ok((client, at))
    }
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "METRICS_ADDR")]
    metrics_addr: std::net::SocketAddr,
    /// Elect a leader through a Lease so several replicas never write at once.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Watch only this namespace (namespaced install); default: all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "lineworks-operator-leader")]
    lease_name: String,
    /// Secret (in the lease namespace) with the key that signs OAuth `state`s; created if missing.
    #[arg(long, default_value = "lineworks-operator-oauth-state")]
    oauth_state_secret: String,
    /// Path of the OAuth callback (userAccount mode), served on --metrics-addr.
    #[arg(long, default_value = lineworks_operator::controller::DEFAULT_CALLBACK_PATH)]
    oauth_callback_path: String,
    /// How long an authorization URL works, in seconds.
    #[arg(long, default_value_t = 3600)]
    oauth_state_lifetime_secs: u64,
    /// Timeout of one LINE WORKS request, in milliseconds.
    #[arg(long, default_value_t = 10_000, hide = true)]
    request_timeout_ms: u64,
    /// Longest one LINE WORKS call may retry, in milliseconds.
    #[arg(long, default_value_t = 20_000, hide = true)]
    call_deadline_ms: u64,
    /// Shortest time between two renewals of one token, in milliseconds (tests shorten it).
    #[arg(long, default_value_t = 60_000, hide = true)]
    renewal_floor_ms: u64,
    /// Reconciles in flight at once (0: no limit); bounds the controller's memory when
    /// thousands of notifiers are new at once.
    #[arg(long, default_value_t = lineworks_operator::controller::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    max_concurrent_reconciles: u16,
    /// Allow spec.apiBaseURL/authBaseURL to name this host (or host:port) besides LINE WORKS's
    /// own; repeat or separate with commas. Default: none.
    #[arg(long = "allow-host", env = "ALLOWED_HOSTS", value_delimiter = ',')]
    allow_host: Vec<String>,
    /// PEM bundle of certificate authorities LINE WORKS connections trust besides the system's
    /// (a TLS-inspecting proxy's CA, say). Proxies come from HTTPS_PROXY/NO_PROXY.
    #[arg(long, env = "LINEWORKS_EXTRA_CA_FILE")]
    extra_ca_file: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct RelayArgs {
    /// Address to serve on; 127.0.0.1 for a sidecar.
    #[arg(long, default_value = "127.0.0.1:8090", env = "RELAY_LISTEN")]
    listen: std::net::SocketAddr,
    /// Sidecar mode: the notifier (namespace/name) served at /v1/notifications.
    #[arg(long, env = "RELAY_NOTIFIER")]
    notifier: Option<String>,
    /// Sidecar mode: the notifier's token Secret, if spec.auth.tokenSecretName renames it.
    #[arg(long, requires = "notifier")]
    token_secret: Option<String>,
    /// Serve the notifiers of this namespace (repeat or separate with commas), each watched on
    /// its own so namespaced Roles suffice; default all.
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Sidecar mode: a file holding the bearer token callers must present (a mounted Secret).
    /// In Deployment mode callers present their notifier's own token instead (Secret
    /// <notifier>-relay-caller), so one token cannot open every namespace.
    #[arg(long, env = "RELAY_TOKEN_FILE", requires = "notifier")]
    token_file: Option<std::path::PathBuf>,
    /// Serve without a bearer token (only allowed on a loopback address).
    #[arg(long, conflicts_with = "token_file")]
    no_auth: bool,
    /// Time within which a notification's last attempt may start (queueing under the rate limit
    /// and retries included); a message already sent gets its full request timeout.
    #[arg(long, default_value_t = 30)]
    deadline_secs: u64,
    /// Notifications accepted but not finished before callers get 429.
    #[arg(long, default_value_t = 1000)]
    queue_capacity: usize,
    /// Connections open at once on --listen; more are closed on accept.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a caller has to send a complete request head (also the idle keep-alive time).
    #[arg(long, default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Also serve /healthz, /readyz and /metrics here, so probes are answered while --listen
    /// is flooded (the Helm chart points its probes at it).
    #[arg(long, env = "RELAY_PROBE_ADDR")]
    probe_addr: Option<std::net::SocketAddr>,
    /// Do not pace calls under the notifier's budget (measurements only; LINE WORKS still limits).
    #[arg(long, hide = true)]
    no_client_pacing: bool,
    /// Allow spec.apiBaseURL/authBaseURL to name this host (or host:port) besides LINE WORKS's
    /// own; repeat or separate with commas. Default: none.
    #[arg(long = "allow-host", env = "ALLOWED_HOSTS", value_delimiter = ',')]
    allow_host: Vec<String>,
    /// PEM bundle of certificate authorities LINE WORKS connections trust besides the system's
    /// (a TLS-inspecting proxy's CA, say). Proxies come from HTTPS_PROXY/NO_PROXY.
    #[arg(long, env = "LINEWORKS_EXTRA_CA_FILE")]
    extra_ca_file: Option<std::path::PathBuf>,
}

// `--features heap-profile`: every allocation is recorded (slow); the profile of the whole run
// is written to $DHAT_FILE (default dhat-heap.json; "{pid}" in it becomes the process id) when
// the process exits normally (SIGTERM). scripts/heap-top.py summarises it.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::builder()
        .file_name(
            std::env::var("DHAT_FILE")
                .unwrap_or_else(|_| "dhat-heap.json".into())
                .replace("{pid}", &std::process::id().to_string()),
        )
        .build();
    let cli = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Crd => lineworks_operator::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Controller(args) => {
            async {
                telemetry::init(cli.log_format);
                let allowed_hosts = AllowedHosts::new(args.allow_host)?;
                let settings = lineworks_operator::controller::Settings {
                    allowed_hosts,
                    extra_roots: extra_roots(args.extra_ca_file.as_deref())?,
                    state_lifetime: std::time::Duration::from_secs(args.oauth_state_lifetime_secs),
                    request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
                    call_deadline: std::time::Duration::from_millis(args.call_deadline_ms),
                    renewal_floor: std::time::Duration::from_millis(args.renewal_floor_ms),
                    max_concurrent_reconciles: args.max_concurrent_reconciles,
                    ..Default::default()
                };
                let state_key_secret = lineworks_operator::controller::StateKeySecret {
                    namespace: args.lease_namespace.clone(),
                    name: args.oauth_state_secret,
                };
                let lease =
                    args.leader_elect
                        .then(|| lineworks_operator::controller::LeaseOptions {
                            namespace: args.lease_namespace,
                            name: args.lease_name,
                            identity: settings.instance.clone(),
                            duration_secs: 15,
                        });
                let options = lineworks_operator::controller::Options {
                    settings,
                    serve: Some(args.metrics_addr),
                    lease,
                    namespace: args.namespace,
                    state_key_secret: Some(state_key_secret),
                    callback_path: args.oauth_callback_path,
                    ..Default::default()
                };
                lineworks_operator::controller::run(options).await?;
                Ok(())
            }
            .await
        }
        Command::Relay(args) => {
            telemetry::init(cli.log_format);
            match relay_options(args) {
                Ok(options) => lineworks_operator::relay::run(options).await,
                Err(e) => Err(e.into()),
            }
        }
        Command::Authorize {
            target,
            listen,
            redirect_url,
            timeout_secs,
            allow_host,
        } => {
            async {
                let allowed_hosts = AllowedHosts::new(allow_host)?;
                let (client, notifier) = target.resolve().await?;
                let options = lineworks_operator::cli::authorize::AuthorizeOptions {
                    allowed_hosts,
                    notifier,
                    listen,
                    redirect_url,
                    timeout: std::time::Duration::from_secs(timeout_secs),
                };
                lineworks_operator::cli::authorize::run(client, options).await?;
                Ok::<(), Box<dyn std::error::Error>>(())
            }
            .await
        }
        Command::Status { target } => async {
            let (client, at) = target.resolve().await?;
            lineworks_operator::cli::status(client, &at).await
        }
        .await
        .map_err(Into::into),
        Command::Recheck {
            target,
            timeout_secs,
        } => async {
            let (client, at) = target.resolve().await?;
            lineworks_operator::cli::recheck(
                client,
                &at,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await
        }
        .await
        .map_err(Into::into),
        Command::TestNotify {
            target,
            timeout_secs,
        } => async {
            let (client, at) = target.resolve().await?;
            lineworks_operator::cli::test_notify(
                client,
                &at,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await
        }
        .await
        .map_err(Into::into),
        Command::GenDocs { root } => (|| -> Result<(), Box<dyn std::error::Error>> {
            for (path, text) in lineworks_operator::reference::pages()? {
                std::fs::write(root.join(path), text)?;
            }
            Ok(())
        })(),
        Command::RelayOpenapi => {
            print!("{}", lineworks_operator::relay::openapi::document_text());
            Ok(())
        }
        Command::Emulator {
            world,
            listen,
            tls_cert,
            tls_key,
        } => {
            telemetry::init(cli.log_format);
            let tls = tls_cert.as_deref().zip(tls_key.as_deref());
            lineworks_emulator::run(world.as_deref(), &listen, tls)
                .await
                .map_err(Into::into)
        }
        #[cfg(feature = "local-control-plane")]
        Command::Demo { wait, cluster } => if cluster {
            lineworks_operator::demo::cluster::run(wait).await
        } else {
            lineworks_operator::demo::run(wait).await
        }
        .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The extra CAs of `--extra-ca-file`, if given; a bad file stops start-up with its name.
fn extra_roots(
    path: Option<&std::path::Path>,
) -> Result<lineworks_client::ExtraRoots, lineworks_client::TrustError> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let roots = lineworks_client::ExtraRoots::from_pem_file(path)?;
    tracing::info!(
        file = %path.display(),
        certificates = roots.len(),
        "trusting extra certificate authorities for LINE WORKS"
    );
    Ok(roots)
}

fn relay_options(args: RelayArgs) -> Result<lineworks_operator::relay::RelayOptions, String> {
    let mut options = lineworks_operator::relay::RelayOptions::new(args.listen);
    options.namespaces = args.namespace;
    options.deadline = std::time::Duration::from_secs(args.deadline_secs);
    options.queue_capacity = args.queue_capacity;
    options.max_connections = args.max_connections;
    options.header_read_timeout = std::time::Duration::from_secs(args.header_read_timeout_secs);
    options.probe_listen = args.probe_addr;
    options.token_secret = args.token_secret;
    options.client_pacing = !args.no_client_pacing;
    options.allowed_hosts = AllowedHosts::new(args.allow_host)?;
    options.extra_roots = extra_roots(args.extra_ca_file.as_deref()).map_err(|e| e.to_string())?;
    if let Some(n) = args.notifier {
        let (ns, name) = n
            .split_once('/')
            .ok_or_else(|| format!("--notifier {n:?} must be namespace/name"))?;
        options.notifier = Some((ns.to_string(), name.to_string()));
    }
    use lineworks_operator::relay::CallerAuth;
    options.auth = match (args.token_file, args.no_auth) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the relay token file {}: {e}", path.display()))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("the relay token file {} is empty", path.display()));
            }
            CallerAuth::RelayToken(lineworks_client::SecretString::from(text.to_string()))
        }
        (None, true) => CallerAuth::Open,
        (None, false) if options.notifier.is_none() => CallerAuth::PerNotifier,
        (None, false) => {
            return Err(
                "give --token-file (a mounted Secret), or --no-auth on a loopback address".into(),
            );
        }
    };
    Ok(options)
}
