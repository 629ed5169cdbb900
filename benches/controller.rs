//! Controller benchmarks on the real local control plane and the emulator, in one run:
//!
//! 1. apply → Ready=True latency of one notifier (median of 20), alternating with the floor: a
//!    minimal client making the same LINE WORKS calls (JWT token, bot, bot domains, channel) and
//!    one status write, with no controller in between; on a quiet machine, then with two threads
//!    spinning (a busy node);
//! 2. 1,000 notifiers across 100 domains handled by the release controller binary: time until all
//!    are Ready, the controller's peak RSS, LINE WORKS calls during six simulated resyncs of every
//!    notifier (an hour at a 10-minute resync), and LINE WORKS calls when a new controller process
//!    takes over the steady fleet — the target for both is zero.
//!
//! `make bench` (cargo bench --bench controller). Under `cargo test` it runs a small smoke version.

use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
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
) -> Duration {
    let started = Instant::now();
    apply(client, ns, &notifier(name, 1, emu)).await;
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
    lw.get_bot(&token, bot_of(1)).await.expect("bot");
    lw.list_bot_domains(&token, bot_of(1))
        .await
        .expect("domains");
    lw.get_channel(&token, bot_of(1), &room_of(1))
        .await
        .expect("channel");
    let api: Api<LineWorksNotifier> = Api::namespaced(client.clone(), ns);
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
    started.elapsed()
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
) -> (Duration, Duration) {
    let (ns, floor_ns) = (format!("latency-{label}"), format!("floor-{label}"));
    namespace(client, &ns).await;
    namespace(client, &floor_ns).await;
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
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(client.clone(), &ns);
    let (mut controller_times, mut floor_times) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let name = format!("n{i}");
        let started = Instant::now();
        apply(client, &ns, &notifier(&name, i as i64 + 1, emu)).await;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(notifiers.clone(), &name, is_ready),
        )
        .await
        .expect("Ready in time")
        .expect("watch");
        controller_times.push(started.elapsed());
        floor_times.push(floor_once(client, &floor_ns, &name, emu, lw).await);
    }
    let _ = stop.send(true);
    let _ = running.await;
    (median(controller_times), median(floor_times))
}

/// The release controller binary watching namespace `fleet`, and its metrics port.
fn spawn_controller(plane: &ControlPlane) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args([
            "controller",
            "--allow-host=127.0.0.1",
            "--namespace",
            "fleet",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("controller binary");
    (child, port)
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
    lineworks_client::install_crypto_provider();
    let plane = ControlPlane::start().await.expect("control plane");
    let client = plane.client().await.expect("client");
    lineworks_operator::crd::install(&client, Duration::from_secs(30))
        .await
        .expect("crd");
    let emu = Emulator::start(world(domains), "127.0.0.1:0")
        .await
        .expect("emulator");

    // 1. apply → Ready, beside the floor: on a quiet machine, then with two threads spinning on
    // the two cores (a busy node).
    let mut lw_config = ClientConfig::new("d1");
    lw_config.api_base_url = emu.api_base_url();
    lw_config.auth_base_url = emu.auth_base_url();
    lw_config.rate_limit_per_minute = None;
    let lw = LineWorksClient::new(lw_config, RateLimits::new()).expect("client");
    for (label, spinners) in [("quiet", 0), ("busy", 2)] {
        let load = Spin::start(spinners);
        let (c, f) = latency(&client, &emu, &lw, samples, label).await;
        drop(load);
        println!(
            "apply → Ready=True, median of {samples}, {label} ({spinners} spinning threads): controller {:.1} ms, floor {:.1} ms, ratio {:.2} (goal <= 1.3)",
            c.as_secs_f64() * 1e3,
            f.as_secs_f64() * 1e3,
            c.as_secs_f64() / f.as_secs_f64()
        );
    }

    // 2. Many notifiers across many domains, with the release controller binary.
    namespace(&client, "fleet").await;
    for d in 1..=domains {
        credentials_secret(&client, "fleet", d).await;
    }
    let (mut child, port) = spawn_controller(&plane);
    let total = domains * per_domain;
    let started = Instant::now();
    futures::stream::iter(1..=domains)
        .flat_map(|d| futures::stream::iter((0..per_domain).map(move |k| (d, k))))
        .map(|(d, k)| {
            let (client, object) = (client.clone(), notifier(&format!("d{d}-n{k}"), d, &emu));
            async move { apply(&client, "fleet", &object).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let fleet: Api<LineWorksNotifier> = Api::namespaced(client.clone(), "fleet");
    loop {
        let list = fleet.list(&Default::default()).await.expect("list");
        let ready = list.items.iter().filter(|n| is_ready(Some(n))).count();
        if ready as i64 == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {ready}/{total} Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = started.elapsed();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let calls_before = emu.total_requests();
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
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "fleet");
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
    println!(
        "{total} notifiers in {domains} domains: all Ready after {:.1} s; controller peak RSS {:.1} MiB; \
         LINE WORKS calls during {resyncs} resyncs of every notifier: {steady_calls} (goal 0)",
        all_ready.as_secs_f64(),
        peak as f64 / 1024.0
    );

    // A restart of the steady fleet: the new controller reconciles every notifier once.
    let calls_before = emu.total_requests();
    let (mut child, port) = spawn_controller(&plane);
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
        "LINE WORKS calls after a controller restart of the steady fleet of {total}: {restart_calls} (goal 0)"
    );
    plane.stop();
}
