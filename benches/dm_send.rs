//! DM sends through the LINE WORKS client against the emulator on loopback, beside a bare HTTP
//! client making the same requests (the emulator's own floor), in alternating rounds of one run.
//! Prints sends/s and p50/p99 latency per round, then medians and the client/bare ratios.
//!
//! `make bench` (or `cargo bench --bench dm_send`); `BENCH_SENDS` and `BENCH_CONCURRENCY` override
//! the defaults.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lineworks_client::{
    ClientConfig, ClientCredentials, Content, ExposeSecret, LineWorksClient, RateLimits,
    RetryPolicy, SecretString, ServiceAccount,
};
use lineworks_emulator::{AppDef, BotDef, DomainDef, Emulator, UserDef, World};

const ROUNDS: usize = 5;

struct Round {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summarize(mut latencies: Vec<Duration>, wall: Duration) -> Round {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Round {
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

async fn run<F, Fut>(sends: usize, concurrency: usize, send: F) -> Round
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(0..sends)
        .map(|_| {
            let fut = send();
            async move {
                let t = Instant::now();
                assert!(fut.await, "a send failed during the benchmark");
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    summarize(latencies, started.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn world(public_key: String) -> World {
    World {
        domains: vec![DomainDef {
            domain_id: 1,
            name: "bench".into(),
        }],
        users: vec![UserDef {
            user_id: "u-1".into(),
            login_id: "host@bench".into(),
            deleted: false,
            admin: false,
        }],
        apps: vec![AppDef {
            client_id: "bench".into(),
            client_secret: "bench-secret".into(),
            domain_id: 1,
            scopes: vec!["bot".into()],
            redirect_uris: vec![],
            service_accounts: vec!["sa@bench".into()],
            public_key_pem: Some(public_key),
            refresh_token_rotation: false,
            refresh_token_reuse_secs: 0,
            access_token_lifetime_secs: 86_400,
            refresh_token_lifetime_secs: 86_400,
            expires_in_as_string: false,
        }],
        bots: vec![BotDef {
            bot_id: 1,
            bot_name: "bench".into(),
            allow_domains: vec![1],
            domains: vec![1],
        }],
        rate_limit_per_minute: 0,
        ..World::default()
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this runs as a quick smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sends = if smoke {
        50
    } else {
        env_or("BENCH_SENDS", 3000)
    };
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let rounds = if smoke { 1 } else { ROUNDS };
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |f: &str| std::fs::read_to_string(fixtures.join(f)).expect("fixture");
    let emulator = Emulator::start(world(read("service-account.pub")), "127.0.0.1:0")
        .await
        .expect("emulator");

    let mut config = ClientConfig::new("bench");
    config.api_base_url = emulator.api_base_url();
    config.auth_base_url = emulator.auth_base_url();
    config.rate_limit_per_minute = None::<NonZeroU32>;
    config.retry = RetryPolicy::default();
    let client = LineWorksClient::new(config, Arc::new(RateLimits::default())).expect("client");
    let credentials = ClientCredentials {
        client_id: "bench".into(),
        client_secret: SecretString::from("bench-secret"),
    };
    let account = ServiceAccount::new("sa@bench", &SecretString::from(read("service-account.key")))
        .expect("key");
    let token = client
        .issue_service_account_token(&credentials, &account, &["bot".into()])
        .await
        .expect("token")
        .access_token;

    let bare = reqwest::Client::new();
    let url = format!(
        "{}/bots/1/users/host%40bench/messages",
        emulator.api_base_url()
    );
    let body =
        serde_json::to_vec(&serde_json::json!({"content": {"type": "text", "text": "来客です"}}))
            .expect("json");
    let content = Content::text("来客です");

    println!(
        "DM sends against the emulator on loopback: {sends} sends per round, {concurrency} in flight, {rounds} rounds each, alternating"
    );
    println!(
        "{:<8} {:>5} {:>10} {:>10} {:>10}",
        "path", "round", "sends/s", "p50 µs", "p99 µs"
    );
    let (mut bare_rounds, mut client_rounds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let b = run(sends, concurrency, || {
            let request = bare
                .post(&url)
                .bearer_auth(token.expose_secret())
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 201)
                    .unwrap_or(false)
            }
        })
        .await;
        emulator.clear_delivered();
        let c = run(sends, concurrency, || {
            let (client, token, content) = (&client, &token, &content);
            async move {
                client
                    .send_to_user(token, 1, "host@bench", content)
                    .await
                    .is_ok()
            }
        })
        .await;
        emulator.clear_delivered();
        for (name, r) in [("bare", &b), ("client", &c)] {
            println!(
                "{name:<8} {round:>5} {:>10.0} {:>10} {:>10}",
                r.per_second,
                r.p50.as_micros(),
                r.p99.as_micros()
            );
        }
        bare_rounds.push(b);
        client_rounds.push(c);
    }
    let med = |rounds: &[Round], f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let rate = |r: &Round| r.per_second;
    let p50 = |r: &Round| r.p50.as_secs_f64() * 1e6;
    let p99 = |r: &Round| r.p99.as_secs_f64() * 1e6;
    println!(
        "median   bare: {:.0} sends/s, p50 {:.0} µs, p99 {:.0} µs",
        med(&bare_rounds, rate),
        med(&bare_rounds, p50),
        med(&bare_rounds, p99)
    );
    println!(
        "median client: {:.0} sends/s, p50 {:.0} µs, p99 {:.0} µs",
        med(&client_rounds, rate),
        med(&client_rounds, p50),
        med(&client_rounds, p99)
    );
    println!(
        "ratio client/bare: throughput {:.2}, p50 {:.2}, p99 {:.2}",
        med(&client_rounds, rate) / med(&bare_rounds, rate),
        med(&client_rounds, p50) / med(&bare_rounds, p50),
        med(&client_rounds, p99) / med(&bare_rounds, p99)
    );
}
