//! Controller benchmarks on the real local control plane and the emulator, in one run:
//!
//! 1. apply → Ready=True latency of one notifier (median of 20), from the apply until one watch
//!    per namespace, opened before the first apply, sees Ready=True (the same observer for the
//!    controller and the floors, as `kubectl wait` would see it), alternating with the floor: a
//!    minimal client making the same LINE WORKS calls (JWT token, then bot, bot domains and
//!    channel at once) and one status write, with no controller in between, and a second floor
//!    that also makes the Kubernetes calls the controller makes for a new notifier (finalizer,
//!    credentials and token Secret reads, token and caller-token Secret creation), one after
//!    another; on a quiet machine, then with two threads spinning (a busy node), then quiet with
//!    30 ms per LINE WORKS call (its own latency instead of loopback's);
//! 2. 1,000 notifiers across 100 domains handled by the release controller binary: time until all
//!    are Ready (beside what LINE WORKS's rate limits allow), the controller's peak RSS, LINE WORKS
//!    calls during six simulated resyncs of every notifier (an hour at a 10-minute resync), and
//!    LINE WORKS calls when a new controller process takes over the steady fleet — the target for
//!    both is zero; then the same (without resyncs) for 10,000 notifiers across 1,000 domains.
//!    Beside the controller, a Deployment-mode relay watches the fleet: its peak RSS once it
//!    serves the last notifier.
//!
//! `make bench` (cargo bench --bench controller). Under `cargo test` it runs a small smoke version.
//! `cargo bench --bench controller -- latency` (or `fleet`, `fleet10k`) runs one part;
//! LINEWORKS_BENCH_TRACE=<filter> logs the in-process controller of part 1 to stderr and
//! LINEWORKS_BENCH_LOG=<filter> keeps the controller binary's log of part 2 in
//! target/bench-controller.log; LINEWORKS_BENCH_BINARY=<path> runs another build of the
//! controller in part 2 (the image's musl binary, whose allocator differs).

use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lineworks_client::{
    ClientConfig, ClientCredentials, LineWorksClient, RateLimits, SecretString, ServiceAccount,
};
use lineworks_control_plane::ControlPlane;
use lineworks_emulator::{AppDef, BotDef, ChannelDef, DomainDef, Emulator, UserDef, World};
use lineworks_operator::api::LineWorksNotifier;
use lineworks_operator::controller::{self, Metrics, Options, Settings};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

fn bot_of(domain: i64) -> i64 {
    3_000_000 + domain
}
fn room_of(domain: i64) -> String {
    format!("room-{domain}")
}

/// `domains` domains, each with an app, a user, a bot added to it and a room with the bot.
fn world(domains: i64) -> World {
    let public = fixture("service-account.pub");
    let mut w = World {
        rate_limit_per_minute: 240,
        ..World::default()
    };
    for d in 1..=domains {
        w.domains.push(DomainDef {
            domain_id: d,
            name: format!("d{d}"),
        });
        w.users.push(UserDef {
            user_id: format!("u{d}"),
            login_id: format!("host@d{d}"),
            deleted: false,
            admin: false,
        });
        w.apps.push(AppDef {
            client_id: format!("app{d}"),
            client_secret: format!("secret{d}"),
            domain_id: d,
            scopes: vec!["bot".into(), "bot.read".into()],
            redirect_uris: vec![],
            service_accounts: vec![format!("sa@d{d}")],
            public_key_pem: Some(public.clone()),
            refresh_token_rotation: false,
            refresh_token_reuse_secs: 0,
            access_token_lifetime_secs: 86_400,
            refresh_token_lifetime_secs: 90 * 86_400,
            expires_in_as_string: true,
        });
        w.bots.push(BotDef {
            bot_id: bot_of(d),
            bot_name: format!("bot{d}"),
            allow_domains: vec![d],
            domains: vec![d],
        });
        w.channels.push(ChannelDef {
            channel_id: room_of(d),
            domain_id: d,
            title: "受付".into(),
            members: vec![format!("u{d}")],
            bots: vec![bot_of(d)],
        });
    }
    w
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

async fn credentials_secret(client: &Client, ns: &str, domain: i64) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("app{domain}"), "annotations": {"lineworks-operator.dev/allowed-notifiers": "*"}}, "stringData": {
        "clientId": format!("app{domain}"), "clientSecret": format!("secret{domain}"),
        "serviceAccountId": format!("sa@d{domain}"), "privateKey": fixture("service-account.key"),
    }});
    api.patch(
        &format!("app{domain}"),
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&secret),
    )
    .await
    .expect("secret");
}

fn notifier(name: &str, domain: i64, emu: &Emulator) -> Value {
    json!({
        "apiVersion": "lineworks-operator.dev/v1alpha1", "kind": "LineWorksNotifier",
        "metadata": {"name": name},
        "spec": {
            "botId": bot_of(domain), "domain": format!("d{domain}"), "defaultUser": "host", "roomId": room_of(domain),
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": format!("app{domain}")}},
            "apiBaseURL": emu.api_base_url(), "authBaseURL": emu.auth_base_url(), "rateLimitPerMinute": 240,
        }
    })
}

async fn apply(client: &Client, ns: &str, object: &Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::core::ApiResource::erase::<LineWorksNotifier>(&()),
    );
    let name = object["metadata"]["name"].as_str().expect("name");
    api.patch(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(object),
    )
    .await
    .expect("apply");
}

fn is_ready(n: Option<&LineWorksNotifier>) -> bool {
    n.and_then(|n| n.condition(ConditionType::Ready))
        .is_some_and(|c| c.is(ConditionStatus::True))
}

/// The floor: the same LINE WORKS calls and one status write, straight from a client.
async fn floor_once(
    client: &Client,
    ns: &str,
    name: &str,
    emu: &Emulator,
    lw: &LineWorksClient,
    same_calls: bool,
    seen: &ReadySeen,
) -> Duration {
    let started = Instant::now();
    apply(client, ns, &notifier(name, 1, emu)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let api: Api<LineWorksNotifier> = Api::namespaced(client.clone(), ns);
    if same_calls {
        // The Kubernetes calls the controller makes for a new notifier, one after another.
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["bench.example.com/floor"]}})),
        )
        .await
        .expect("finalizer");
        secrets.get("app1").await.expect("credentials");
        assert!(
            secrets
                .get_opt(&format!("{name}-token"))
                .await
                .expect("token Secret")
                .is_none()
        );
    }
    let creds = ClientCredentials {
        client_id: "app1".into(),
        client_secret: SecretString::from("secret1"),
    };
    let account = ServiceAccount::new("sa@d1", &SecretString::from(fixture("service-account.key")))
        .expect("key");
    let token = lw
        .issue_service_account_token(&creds, &account, &["bot".into(), "bot.read".into()])
        .await
        .expect("token")
        .access_token;
    if same_calls {
        for suffix in ["token", "caller"] {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": format!("{name}-{suffix}")},
                "stringData": {"token": "x"}}))
                .expect("secret");
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("create");
        }
    }
    // The three checks at once, as the controller makes them.
    let room = room_of(1);
    let (bot, domains, channel) = futures::join!(
        lw.get_bot(&token, bot_of(1)),
        lw.list_bot_domains(&token, bot_of(1)),
        lw.get_channel(&token, bot_of(1), &room)
    );
    bot.expect("bot");
    domains.expect("domains");
    channel.expect("channel");
    let status = json!({"apiVersion": "lineworks-operator.dev/v1alpha1", "kind": "LineWorksNotifier", "status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "NotifierReady", "message": "floor",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status(
        name,
        &PatchParams::apply("floor").force(),
        &Patch::Apply(&status),
    )
    .await
    .expect("status");
    if same_calls {
        // The controller also looks for its caller token Secret before creating it.
        let _ = secrets.get_opt(&format!("{name}-relay")).await;
    }
    seen.since(name, started).await
}

/// When each notifier of a namespace was first seen Ready=True, by one watch opened (and its
/// initial list done) before the first apply.
struct ReadySeen {
    times: Arc<std::sync::Mutex<BTreeMap<String, Instant>>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadySeen {
    async fn start(client: &Client, ns: &str) -> Self {
        use kube::runtime::watcher::{self, Event};
        let api: Api<LineWorksNotifier> = Api::namespaced(client.clone(), ns);
        let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
        while !matches!(
            events.try_next().await.expect("watch"),
            Some(Event::InitDone) | None
        ) {}
        let times = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (t, c) = (Arc::clone(&times), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            while let Ok(Some(event)) = events.try_next().await {
                if let Event::Apply(n) = event
                    && is_ready(Some(&n))
                {
                    let now = Instant::now();
                    t.lock().expect("times").entry(n.name_any()).or_insert(now);
                    c.notify_waiters();
                }
            }
        });
        Self {
            times,
            changed,
            task,
        }
    }

    /// Time from `started` until `name` was seen Ready (at most 30 s).
    async fn since(&self, name: &str, started: Instant) -> Duration {
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let changed = self.changed.notified();
                if let Some(at) = self.times.lock().expect("times").get(name) {
                    return *at;
                }
                changed.await;
            }
        })
        .await
        .expect("Ready in time");
        seen - started
    }
}

impl Drop for ReadySeen {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The sum of the series of `name`; 0 while the controller is not answering yet.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(answer) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Threads spinning until dropped: a competing load.
struct Spin(Arc<std::sync::atomic::AtomicBool>);

impl Spin {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..threads {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        Self(stop)
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Medians of apply → Ready through an in-process controller and of the floor, alternating, in
/// namespaces of their own.
async fn latency(
    client: &Client,
    emu: &Emulator,
    lw: &LineWorksClient,
    samples: usize,
    label: &str,
) -> (Duration, Duration, Duration) {
    let (ns, floor_ns) = (format!("latency-{label}"), format!("floor-{label}"));
    namespace(client, &ns).await;
    namespace(client, &floor_ns).await;
    credentials_secret(client, &floor_ns, 1).await;
    // One domain per sample: each new notifier draws from a budget of its own, so the figure is
    // the controller's cost, not the pacing of 20 notifiers of one domain (4 calls per second).
    for d in 1..=samples as i64 {
        credentials_secret(client, &ns, d).await;
    }
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let options = Options {
        settings: Settings {
            allowed_hosts: lineworks_operator::endpoints::AllowedHosts::loopback(),
            ..Settings::default()
        },
        namespace: Some(ns.clone()),
        metrics: Arc::new(Metrics::default()),
        ..Options::default()
    };
    let running = tokio::spawn(controller::run_with(client.clone(), options, async move {
        let _ = stopped.changed().await;
    }));
    let (seen, floor_seen) = (
        ReadySeen::start(client, &ns).await,
        ReadySeen::start(client, &floor_ns).await,
    );
    let (mut controller_times, mut floor_times, mut same_calls_times) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples {
        let name = format!("n{i}");
        let started = Instant::now();
        apply(client, &ns, &notifier(&name, i as i64 + 1, emu)).await;
        controller_times.push(seen.since(&name, started).await);
        floor_times.push(floor_once(client, &floor_ns, &name, emu, lw, false, &floor_seen).await);
        let same = format!("{name}-same");
        same_calls_times
            .push(floor_once(client, &floor_ns, &same, emu, lw, true, &floor_seen).await);
    }
    let _ = stop.send(true);
    let _ = running.await;
    (
        median(controller_times),
        median(floor_times),
        median(same_calls_times),
    )
}

/// The relay's peak RSS (KiB) once it delivers for the fleet's last notifier (its caches hold
/// the whole fleet then); the relay is stopped.
async fn relay_sees(
    http: &reqwest::Client,
    client: &Client,
    ns: &str,
    port: u16,
    domains: i64,
    per_domain: i64,
    relay: &mut std::process::Child,
) -> u64 {
    let name = format!("d{domains}-n{}", per_domain - 1);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let caller = secrets
        .get(&format!("{name}-relay-caller"))
        .await
        .expect("caller Secret");
    let token = caller
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        .expect("caller token");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{port}/v1/notifiers/{ns}/{name}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok();
        let body: Option<serde_json::Value> = match ready {
            Some(r) => r.json().await.ok(),
            None => None,
        };
        if body.is_some_and(|b| b["ready"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never saw {name} Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = vm_hwm_kib(relay.id()).unwrap_or_default();
    let _ = relay.kill();
    let _ = relay.wait();
    peak
}

/// The controller build part 2 runs: LINEWORKS_BENCH_BINARY, else this build's.
fn binary() -> String {
    std::env::var("LINEWORKS_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lineworks-operator").into())
}

/// The release controller binary watching namespace `ns`, and its metrics port.
fn spawn_controller(plane: &ControlPlane, ns: &str) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    // LINEWORKS_BENCH_BINARY measures another build of the controller (the image's musl one,
    // say: target/image-build/x86_64-unknown-linux-musl/release/lineworks-operator).
    let binary = binary();
    let child = std::process::Command::new(binary)
        .args([
            "controller",
            "--allow-host=127.0.0.1",
            "--namespace",
            ns,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", plane.kubeconfig_path())
        // LINEWORKS_BENCH_LOG=debug (any RUST_LOG filter) keeps the controller's log in
        // target/bench-controller.log, for finding out which reconciles called LINE WORKS.
        .env(
            "RUST_LOG",
            std::env::var("LINEWORKS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(controller_log())
        .spawn()
        .expect("controller binary");
    (child, port)
}

/// The APIs called between two snapshots, as " (api n, …)", or nothing when none was.
fn calls_by_api(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let called: Vec<String> = after
        .iter()
        .filter(|(api, _)| api.as_str() != "admin")
        .filter_map(|(api, n)| {
            let delta = n - before.get(api).copied().unwrap_or_default();
            (delta > 0).then(|| format!("{api} {delta}"))
        })
        .collect();
    if called.is_empty() {
        String::new()
    } else {
        format!(" ({})", called.join(", "))
    }
}

fn controller_log() -> std::process::Stdio {
    if std::env::var_os("LINEWORKS_BENCH_LOG").is_none() {
        return std::process::Stdio::null();
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-controller.log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from)
}

fn stop_controller(child: &mut std::process::Child) {
    // SAFETY: plain syscall on the child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (samples, domains, per_domain, resyncs) = if smoke {
        (2, 2, 2, 1)
    } else {
        (20, 100, 10, 6)
    };
    let big_domains = if smoke { domains } else { 1_000 };
    // `-- --bench latency` or `-- --bench fleet` runs one part.
    let part = |name: &str| {
        let named: Vec<String> = std::env::args()
            .filter(|a| a == "latency" || a == "fleet" || a == "fleet10k")
            .collect();
        named.is_empty() || named.iter().any(|a| a == name)
    };
    if std::env::var_os("LINEWORKS_BENCH_TRACE").is_some() {
        // The in-process controller's log (apply → Ready), on stderr.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env(
                "LINEWORKS_BENCH_TRACE",
            ))
            .try_init();
    }
    lineworks_client::install_crypto_provider();
    let plane = ControlPlane::start().await.expect("control plane");
    let client = lineworks_operator::kube_client::build(plane.kube_config().await.expect("config"))
        .expect("client");
    lineworks_operator::crd::install(&client, Duration::from_secs(30))
        .await
        .expect("crd");
    let emu = Emulator::start(world(big_domains), "127.0.0.1:0")
        .await
        .expect("emulator");

    // 1. apply → Ready, beside the floor: on a quiet machine, then with two threads spinning on
    // the two cores (a busy node).
    let mut lw_config = ClientConfig::new("d1");
    lw_config.api_base_url = emu.api_base_url();
    lw_config.auth_base_url = emu.auth_base_url();
    lw_config.rate_limit_per_minute = None;
    let lw = LineWorksClient::new(lw_config, RateLimits::new()).expect("client");
    // Then on a quiet machine with LINE WORKS's own latency: 30 ms per call (token, bot, bot
    // domains, channel) instead of loopback's fraction of a millisecond.
    let latency_runs = if part("latency") {
        &[("quiet", 0, 0), ("busy", 2, 0), ("quiet-30ms", 0, 30)][..]
    } else {
        &[]
    };
    for &(label, spinners, delay_ms) in latency_runs {
        for api in ["token", "get_bot", "list_bot_domains", "get_channel"] {
            if delay_ms > 0 {
                emu.add_fault(lineworks_emulator::Fault {
                    api: api.into(),
                    delay_ms,
                    ..Default::default()
                });
            }
        }
        let load = Spin::start(spinners);
        let (c, f, same) = latency(&client, &emu, &lw, samples, label).await;
        drop(load);
        emu.clear_faults();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "apply → Ready=True, median of {samples}, {label} ({spinners} spinning threads, {delay_ms} ms per LINE WORKS call): controller {:.1} ms; \
             floor {:.1} ms, ratio {:.2} (goal <= 1.3); the same Kubernetes calls made in sequence {:.1} ms, ratio {:.2}",
            ms(c),
            ms(f),
            ms(c) / ms(f),
            ms(same),
            ms(c) / ms(same)
        );
    }

    if !part("fleet") && !part("fleet10k") {
        plane.stop();
        return;
    }
    // 2. Many notifiers across many domains, with the release controller binary: 1,000 in 100
    // domains with resyncs, then 10,000 in 1,000 domains.
    if part("fleet") {
        fleet(&plane, &client, &emu, "fleet", domains, per_domain, resyncs).await;
    }
    if !smoke && part("fleet10k") {
        fleet(
            &plane,
            &client,
            &emu,
            "fleet10k",
            big_domains,
            per_domain,
            0,
        )
        .await;
    }
    plane.stop();
}

/// One fleet: `domains` × `per_domain` notifiers in namespace `ns`, all Ready; `resyncs` rounds
/// of resync; a restart.
async fn fleet(
    plane: &ControlPlane,
    client: &Client,
    emu: &Emulator,
    ns: &str,
    domains: i64,
    per_domain: i64,
    resyncs: usize,
) {
    namespace(client, ns).await;
    for d in 1..=domains {
        credentials_secret(client, ns, d).await;
    }
    let (mut child, port) = spawn_controller(plane, ns);
    // A Deployment-mode relay watching the namespace (every notifier, token and caller Secret).
    let relay_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut relay = std::process::Command::new(binary())
        .args([
            "relay",
            "--allow-host=127.0.0.1",
            "--namespace",
            ns,
            "--listen",
            &format!("127.0.0.1:{relay_port}"),
        ])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("relay binary");
    let total = domains * per_domain;
    let started = Instant::now();
    futures::stream::iter(1..=domains)
        .flat_map(|d| futures::stream::iter((0..per_domain).map(move |k| (d, k))))
        .map(|(d, k)| {
            let (client, object) = (client.clone(), notifier(&format!("d{d}-n{k}"), d, emu));
            async move { apply(&client, ns, &object).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let fleet: Api<LineWorksNotifier> = Api::namespaced(client.clone(), ns);
    loop {
        let list = fleet.list(&Default::default()).await.expect("list");
        let ready = list.items.iter().filter(|n| is_ready(Some(n))).count();
        if ready as i64 == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {ready}/{total} Ready"
        );
        // Listing 10,000 objects costs the API server: look less often for big fleets.
        tokio::time::sleep(Duration::from_millis(if total > 2_000 {
            2_000
        } else {
            200
        }))
        .await;
    }
    let all_ready = started.elapsed();
    let http = reqwest::Client::new();
    // What bounds a big fleet on this machine: the API server's writes, not LINE WORKS's budget.
    let writes = metric(
        &http,
        &format!("http://127.0.0.1:{port}"),
        "lineworks_operator_kube_writes_total",
    )
    .await;
    let relay_peak = relay_sees(
        &http, client, ns, relay_port, domains, per_domain, &mut relay,
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let calls_before = emu.total_requests();
    let counts_before = emu.request_counts();
    let names: Vec<String> = fleet
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let ok = "lineworks_operator_reconciles_total{result=\"ok\"}";
    // A resync: a metadata change on every credentials Secret wakes each notifier that reads it
    // without changing anything the checks depend on (the controller ignores a notifier's own
    // metadata changes, and a new reconcile-requested-at value would ask for a re-check).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for round in 0..resyncs {
        let before = metric(&http, &base, ok).await;
        futures::stream::iter(1..=domains)
            .map(|d| {
                let secrets = secrets.clone();
                async move {
                    secrets
                        .patch(
                            &format!("app{d}"),
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"annotations": {"bench.example.com/resync": round.to_string()}}}),
                            ),
                        )
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("resync");
        let deadline = Instant::now() + Duration::from_secs(300);
        while metric(&http, &base, ok).await < before + names.len() as f64 {
            assert!(
                Instant::now() < deadline,
                "resync round {round} not processed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let steady_calls = emu.total_requests() - calls_before;
    let peak = vm_hwm_kib(child.id()).unwrap_or_default();
    stop_controller(&mut child);
    // Each new notifier calls each LINE WORKS API once (token, bot, bot domains, channel), so a
    // domain's budget of 240 per API per minute allows its notifiers in per_domain/240 minutes.
    let rate_floor = per_domain as f64 / 240.0 * 60.0;
    let resynced = if resyncs > 0 {
        format!(
            "; LINE WORKS calls during {resyncs} resyncs of every notifier: {steady_calls} (goal 0){}",
            calls_by_api(&counts_before, &emu.request_counts())
        )
    } else {
        String::new()
    };
    println!(
        "{total} notifiers in {domains} domains: all Ready after {:.1} s (the rate limits allow {rate_floor:.1} s); \
         the API server took {:.0} writes/s meanwhile (the controller's {writes:.0} counted ones, {:.1} per notifier, one finalizer per notifier and the bench's {total} applies); \
         controller peak RSS {:.1} MiB; relay (Deployment mode, watching all) peak RSS {:.1} MiB{resynced}",
        all_ready.as_secs_f64(),
        (writes + 2.0 * total as f64) / all_ready.as_secs_f64(),
        writes / total as f64,
        peak as f64 / 1024.0,
        relay_peak as f64 / 1024.0,
    );

    // A restart of the steady fleet: the new controller reconciles every notifier once.
    let calls_before = emu.total_requests();
    let counts_before = emu.request_counts();
    let (mut child, port) = spawn_controller(plane, ns);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reconciled = metric(&http, &base, ok).await;
        if reconciled >= names.len() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{reconciled} reconciled after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restart_calls = emu.total_requests() - calls_before;
    stop_controller(&mut child);
    println!(
        "LINE WORKS calls after a controller restart of the steady fleet of {total}: {restart_calls} (goal 0){}",
        calls_by_api(&counts_before, &emu.request_counts())
    );
}
