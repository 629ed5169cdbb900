//! The relay binary under hostile clients (tenant safety, item 9): a thousand connections that
//! never finish their request head do not starve an authorized caller, the probes, or memory;
//! they are closed after the header timeout; connections beyond the cap are closed at once;
//! and SIGTERM is not held up by a half-sent head.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use serde_json::{Value, json};
use support::lineworks::world;
use support::operator::{Env, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "relay-caller-token-for-slow-clients";
const SLOW: usize = 1000;
const HEADER_TIMEOUT_SECS: u64 = 8;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A connection that sends the start of a request head and then nothing.
async fn slow_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /v1/notifications HTTP/1.1\r\nHost: relay\r\nContent-Type: appl")
        .await
        .expect("partial head");
    s
}

/// Whether the server has closed `s` (EOF or reset), without waiting.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => true, // an answer (e.g. 408) also ends it
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_do_not_starve_callers_probes_memory_or_shutdown() {
    let env = Env::new("relay-slow", world()).await;
    let controller = env.start_controller(None);
    env.apply_good_secret().await;
    env.apply_notifier("front", json!({"rateLimitPerMinute": 240}))
        .await;
    env.wait_condition(
        "front",
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::NotifierReady,
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let addr = support::oauth::free_addr();
    let probe = support::oauth::free_addr();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_lineworks-operator"))
        .args([
            "relay",
            "--allow-host=127.0.0.1",
            &format!("--listen={addr}"),
            &format!("--probe-addr={probe}"),
            &format!("--notifier={}/front", env.ns),
            &format!("--token-file={}", token_file.display()),
            "--max-connections=1100",
            &format!("--header-read-timeout-secs={HEADER_TIMEOUT_SECS}"),
        ])
        .env("KUBECONFIG", env.plane.kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("relay starts");
    let pid = relay.id().expect("pid");
    let http = reqwest::Client::new();
    let notify = || {
        http.post(format!("http://{addr}/v1/notifications"))
            .bearer_auth(TOKEN)
            .json(&json!({"visitor": {"name": "佐藤", "company": "サンプル"}}))
            .send()
    };
    support::wait_for("the relay sees the Ready notifier", WAIT, || async {
        let r = http
            .get(format!("http://{addr}/v1/notifier"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["ready"] == true {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let warm = notify().await.expect("answer");
    assert_eq!(warm.status(), 200);
    let idle_rss = rss_kib(pid);

    let slow_opened = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        slow.push(slow_connection(addr).await);
    }
    // An authorized caller is answered promptly beside them.
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(1), notify())
        .await
        .expect("answered within 1 s despite 1,000 slow connections")
        .expect("answer");
    let latency = started.elapsed();
    assert_eq!(answer.status(), 200);
    let probe_answer = tokio::time::timeout(
        Duration::from_secs(1),
        http.get(format!("http://{probe}/healthz")).send(),
    )
    .await
    .expect("probe within 1 s")
    .expect("probe answer");
    assert_eq!(probe_answer.status(), 200);
    let loaded_rss = rss_kib(pid);
    eprintln!(
        "relay RSS idle {:.1} MiB, with {SLOW} slow connections {:.1} MiB (+{:.1} MiB); authorized request answered in {latency:?}",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        loaded_rss.saturating_sub(idle_rss) as f64 / 1024.0
    );
    assert!(
        loaded_rss < idle_rss + 64 * 1024,
        "RSS grew from {idle_rss} KiB to {loaded_rss} KiB"
    );

    // Beyond the cap (1,100 with the 1,000 slow ones and the caller's pooled one) new
    // connections are closed at once.
    let mut extra = Vec::new();
    for _ in 0..200 {
        extra.push(slow_connection(addr).await);
    }
    let waited = Instant::now();
    loop {
        let mut refused = 0;
        for s in extra.iter_mut() {
            if closed(s).await {
                refused += 1;
            }
        }
        if refused >= 90 {
            break;
        }
        assert!(waited.elapsed() < WAIT, "only {refused} of 200 closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(extra);

    // The header timeout closes the slow ones.
    let deadline = Duration::from_secs(HEADER_TIMEOUT_SECS + 20);
    let waited = Instant::now();
    loop {
        let mut open = 0;
        for s in slow.iter_mut() {
            if !closed(s).await {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(
            waited.elapsed() < deadline,
            "{open} slow connections still open after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "slow connections closed {:?} after they opened",
        slow_opened.elapsed()
    );
    let metrics = http
        .get(format!("http://{probe}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("lineworks_relay_connections_refused_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // SIGTERM while a connection holds a half-sent head: the relay exits without waiting for it.
    let _held = slow_connection(addr).await;
    let stopping = Instant::now();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(HEADER_TIMEOUT_SECS / 2), relay.wait())
        .await
        .expect("the relay exits well before the header timeout");
    assert!(exited.is_ok());
    eprintln!("relay exited {:?} after SIGTERM", stopping.elapsed());
    controller.stop().await;
}
