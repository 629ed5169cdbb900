//! The chart's alerts (docs/alerting.md): the PrometheusRule `helm template` renders is loaded by
//! Prometheus' own rule parser and evaluated minute by minute by Prometheus' rule engine and PromQL
//! (tools/prometheus/rules, a pinned Go module; promtool itself compiles every service-discovery
//! SDK and would cost more build time than the rest of the Go tools). The controller's series are
//! the ones a live controller exports for a Ready, a broken and a userAccount notifier, labelled as
//! a ServiceMonitor with honorLabels scrapes them; the relay's failure counter, which needs a
//! failing delivery, is written by hand with the name and labels its registry declares.

mod support;

use std::path::Path;

use lineworks_operator::api::conditions::{ConditionStatus, ConditionType, Reason};
use serde_json::{Value, json};
use support::oauth::Authorizing;
use support::operator::good_credentials;

/// The release's namespace and the job a ServiceMonitor gives its targets (the Service's name).
const RELEASE_NS: &str = "ops";
const JOB: &str = "lwo-lineworks-operator";

fn render(sets: &[&str]) -> String {
    support::helm_template(RELEASE_NS, sets)
}

/// The chart's PrometheusRule, written to a file for the evaluator.
fn rule_file(dir: &Path) -> std::path::PathBuf {
    assert!(
        !render(&[]).contains("kind: PrometheusRule"),
        "off by default"
    );
    let all = render(&[
        "prometheusRule.enabled=true",
        "prometheusRule.alertLabels.team=reception",
    ]);
    let rule = all
        .split("\n---\n")
        .find(|d| d.contains("\nkind: PrometheusRule\n"))
        .expect("a PrometheusRule");
    let path = dir.join("prometheusrule.yaml");
    std::fs::write(&path, rule).expect("write");
    path
}

/// One line of the text exposition as Prometheus stores it after a scrape with honorLabels:
/// the target's `job` and, where the metric has none of its own, `namespace` added; then as a
/// series holding that value for `steps` minutes (PromQL's series notation).
fn scraped(line: &str, steps: usize) -> String {
    let (metric, value) = line.rsplit_once(' ').expect("name and value");
    let (name, labels) = match metric.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}').to_string()),
        None => (metric, String::new()),
    };
    let mut labels: Vec<String> = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if !labels.iter().any(|l| l.starts_with("namespace=")) {
        labels.push(format!("namespace=\"{RELEASE_NS}\""));
    }
    labels.push(format!("job=\"{JOB}\""));
    format!("{name}{{{}}} {value}x{}", labels.join(","), steps - 1)
}

/// The controller's series in `text`: its own gauges and those of this test's notifiers.
fn controller_series(text: &str, ns: &str, steps: usize) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.starts_with("lineworks_operator_leader ")
                || (l.starts_with("lineworks_operator_notifier_")
                    && l.contains(&format!("namespace=\"{ns}\"")))
        })
        .map(|l| scraped(l, steps))
        .collect()
}

/// Every active alert at every step: (step, alert, state, labels, annotations).
fn evaluate(rules: &Path, start: i64, steps: usize, series: &[String]) -> Vec<Value> {
    let input = json!({"start": start, "step": "1m", "steps": steps, "series": series});
    support::go_tool_json_lines(
        "prometheus/rules",
        &["-rules".as_ref(), rules.as_os_str()],
        &input.to_string(),
    )
}

/// The steps at which `alert` for notifier `name` (None: any) was in `state`.
fn steps_in(alerts: &[Value], alert: &str, name: Option<&str>, state: &str) -> Vec<u64> {
    alerts
        .iter()
        .filter(|a| {
            a["alert"] == alert
                && a["state"] == state
                && name.is_none_or(|n| a["labels"]["name"] == n)
        })
        .filter_map(|a| a["step"].as_u64())
        .collect()
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test]
async fn the_chart_alerts_fire_on_a_live_controllers_metrics_when_they_should_and_only_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rule_file(dir.path());

    // Live: a Ready serviceAccount notifier, one with a wrong client secret, and an authorized
    // userAccount notifier, under one controller running without leader election.
    let a = Authorizing::new("alerts", |_| {}, std::time::Duration::from_secs(600)).await;
    let env = &a.env;
    a.authorize("desk").await;
    env.apply_secret("sa", good_credentials()).await;
    let sa = |secret: &str| json!({"auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": secret}}});
    env.apply_notifier("front", sa("sa")).await;
    let mut wrong = good_credentials();
    wrong["clientSecret"] = json!("not-the-secret");
    env.apply_secret("wrong", wrong).await;
    env.apply_notifier("lobby", sa("wrong")).await;
    for name in ["front", "desk"] {
        env.wait_condition(
            name,
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    }
    env.wait_condition(
        "lobby",
        ConditionType::Authorized,
        ConditionStatus::False,
        Reason::InvalidClientCredentials,
    )
    .await;
    let text = a.controller.metrics.encode();
    let live = controller_series(&text, &env.ns, 20);
    let expiry_prefix = "lineworks_operator_notifier_refresh_token_expiry_timestamp_seconds{";
    let expiries: Vec<&String> = live
        .iter()
        .filter(|s| s.starts_with(expiry_prefix))
        .collect();
    assert_eq!(
        expiries.len(),
        1,
        "only the userAccount notifier's: {live:?}"
    );
    assert!(expiries[0].contains("name=\"desk\""), "{expiries:?}");

    // Now, for 20 minutes: the broken notifier pends, then fires after 10; nothing else does.
    let alerts = evaluate(&rules, now(), 20, &live);
    let lobby = Some("lobby");
    assert_eq!(
        steps_in(&alerts, "LineWorksNotifierNotReady", lobby, "pending"),
        range(0, 10)
    );
    assert_eq!(
        steps_in(&alerts, "LineWorksNotifierNotReady", lobby, "firing"),
        range(10, 20)
    );
    let firing = alerts
        .iter()
        .find(|a| a["alert"] == "LineWorksNotifierNotReady" && a["state"] == "firing")
        .expect("firing");
    assert_eq!(firing["labels"]["namespace"], env.ns.as_str());
    assert_eq!(firing["labels"]["severity"], "warning");
    assert_eq!(firing["labels"]["team"], "reception");
    let description = firing["annotations"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.contains("(reason: InvalidClientCredentials)")
            && description.contains(&format!("kubectl lineworks recheck lobby -n {}", env.ns)),
        "{description}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["alert"] == "LineWorksNotifierNotReady" && a["labels"]["name"] == "lobby"),
        "only the broken notifier: {alerts:?}"
    );

    // The same series a week before the userAccount token lapses: it warns, the others do not.
    let expires: i64 = expiries[0]
        .rsplit(' ')
        .next()
        .and_then(|v| v.split('x').next())
        .and_then(|v| v.parse().ok())
        .expect("an expiry time");
    assert!(
        expires > now() + 80 * 86_400,
        "about 90 days ahead: {expires}"
    );
    let alerts = evaluate(&rules, expires - 7 * 86_400 - 5 * 60, 20, &live);
    let desk = Some("desk");
    let expiring = "LineWorksRefreshTokenExpiring";
    assert_eq!(steps_in(&alerts, expiring, desk, "pending"), range(6, 16));
    assert_eq!(steps_in(&alerts, expiring, desk, "firing"), range(16, 20));
    assert!(
        alerts
            .iter()
            .filter(|a| a["alert"] == expiring)
            .all(|a| a["labels"]["name"] == "desk"),
        "{alerts:?}"
    );
    let warning = alerts
        .iter()
        .find(|a| a["alert"] == expiring && a["state"] == "firing")
        .expect("firing");
    let summary = warning["annotations"]["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!("{}/desk", env.ns)) && summary.contains("6d 23h"),
        "{summary}"
    );

    // The controller stops: it reports itself not reconciling and drops the notifiers' gauges,
    // so only the operator's alert remains, after 10 minutes; the same with no series at all
    // (no replica running or scraped).
    let metrics = std::sync::Arc::clone(&a.controller.metrics);
    let ns = env.ns.clone();
    a.stop().await;
    let stopped = controller_series(&metrics.encode(), &ns, 20);
    assert_eq!(
        stopped,
        [format!(
            "lineworks_operator_leader{{namespace=\"{RELEASE_NS}\",job=\"{JOB}\"}} 0x19"
        )]
    );
    for series in [stopped, vec![]] {
        let alerts = evaluate(&rules, now(), 20, &series);
        let operator = "LineWorksOperatorNotReconciling";
        assert_eq!(steps_in(&alerts, operator, None, "pending"), range(0, 10));
        assert_eq!(steps_in(&alerts, operator, None, "firing"), range(10, 20));
        assert!(alerts.iter().all(|a| a["alert"] == operator), "{alerts:?}");
        assert_eq!(alerts[0]["labels"]["namespace"], RELEASE_NS);
    }
}

/// docs/alerting.md shows exactly the rules the chart renders with its defaults.
#[test]
fn the_alerting_page_shows_the_rules_the_chart_renders() {
    let rendered: Value = serde_yaml_ng::from_str(
        &render(&["prometheusRule.enabled=true"])
            .split("\n---\n")
            .find(|d| d.contains("\nkind: PrometheusRule\n"))
            .map(str::to_string)
            .expect("a PrometheusRule"),
    )
    .expect("YAML");
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerting.md"))
            .expect("docs/alerting.md");
    let shown: Value = page
        .split("```yaml\n")
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("groups:"))
        .map(|b| serde_yaml_ng::from_str(b).expect("the page's rules are YAML"))
        .next()
        .expect("a rule file on the page");
    assert_eq!(shown, rendered["spec"]);
}

/// A visitor notification that reached nobody alerts at once, including the relay's very first
/// failure (a counter born at 1, which `increase` alone cannot see), and clears once the window
/// passes with no new failure; old failures counted before the window do not alert.
#[test]
fn a_visitor_notification_that_reached_nobody_alerts_at_once_and_clears_after_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rule_file(dir.path());
    // The name and labels the relay's registry declares (what docs/metrics.md shows).
    let failed = "lineworks_relay_notifier_failed_notifications_total";
    assert!(
        lineworks_operator::relay::RelayMetrics::example_text()
            .contains(&format!("{failed}{{namespace=\"…\",name=\"…\"}} 0")),
        "the relay exports {failed} by namespace and name"
    );
    let series = |name: &str, values: &str| {
        format!(
            "{failed}{{namespace=\"team-a\",name=\"{name}\",pod=\"reception-0\",job=\"team-a/reception\"}} {values}"
        )
    };
    let alerts = evaluate(
        &rules,
        now(),
        40,
        &[
            // Born at 1 in minute 4 (the relay's first failure), nothing more.
            series("first", "_x4 1x35"),
            // 0 until minute 5, one failure then, another at minute 10.
            series("again", "0x4 1x5 2x28"),
            // Failures long before: flat at 3 all along.
            series("old", "3x39"),
            // A controller reconciles meanwhile.
            format!("lineworks_operator_leader{{namespace=\"{RELEASE_NS}\",job=\"{JOB}\"}} 1x39"),
        ],
    );
    let reached = "LineWorksVisitorNotReached";
    assert_eq!(
        steps_in(&alerts, reached, Some("first"), "firing"),
        range(4, 19)
    );
    assert_eq!(
        steps_in(&alerts, reached, Some("again"), "firing"),
        range(5, 25)
    );
    // The flat counter alerts only while the evaluator has less than a window of its history.
    assert!(
        steps_in(&alerts, reached, Some("old"), "firing")
            .iter()
            .all(|s| *s < 15),
        "{alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["alert"] == reached && a["state"] == "firing"),
        "no waiting (a visitor is at the desk), nothing else: {alerts:?}"
    );
    let firing = alerts
        .iter()
        .find(|a| a["alert"] == reached && a["labels"]["name"] == "first")
        .expect("firing");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["labels"]["namespace"], "team-a");
    assert!(
        firing["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("1 visitor notification(s) in the last 15m")),
        "{firing}"
    );
}
