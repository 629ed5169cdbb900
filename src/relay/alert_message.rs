//! An Alertmanager alert group as one LINE WORKS message: read and bounded, routed by a label,
//! rendered (Japanese by default, with an English variant) and cut to 2,000 characters with
//! "…ほか N 件", and keyed so that Alertmanager's retries and repeats send it once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};
use lineworks_client::{Content, I18nText, MAX_TEXT_CHARS};

use super::api::{
    Alert, AlertStatus, AlertmanagerMessage, MAX_ALERT_KEY_CHARS, MAX_ALERT_PAIRS,
    MAX_ALERT_VALUE_CHARS, MAX_ALERTS,
};
use super::problem::Refusal;
use crate::api::{Language, LineWorksNotifier, MessageTemplate, Route};
use crate::templates::{clean, render_with, truncate};

/// Japanese default text of an alert group; {{alerts}} lists them.
pub const DEFAULT_ALERT_TEXT: &str = "【アラート{{status}}】{{alertname}}[[（{{severity}}）]][[ 発生中 {{firing}} 件]][[ 解消 {{resolved}} 件]]\n{{alerts}}[[\n{{externalURL}}]]";
/// English variant of [`DEFAULT_ALERT_TEXT`].
pub const DEFAULT_ALERT_TEXT_EN: &str = "[{{status}}] {{alertname}}[[ ({{severity}})]][[ firing: {{firing}}]][[ resolved: {{resolved}}]]\n{{alerts}}[[\n{{externalURL}}]]";
/// Japanese default text of one alert in {{alerts}}.
pub const DEFAULT_ALERT_ITEM_TEXT: &str =
    "・[{{status}}] {{alertname}}[[ {{instance}}]][[: {{summary}}]][[\n  {{description}}]]";
/// English variant of [`DEFAULT_ALERT_ITEM_TEXT`].
pub const DEFAULT_ALERT_ITEM_TEXT_EN: &str =
    "- [{{status}}] {{alertname}}[[ {{instance}}]][[: {{summary}}]][[\n  {{description}}]]";

/// Marks where {{alerts}} goes while the rest of the message is rendered (removed from every
/// value first, so no label can fake it).
const ALERTS_MARK: char = '\u{e000}';
/// The longest one value may be in a message, in characters.
const MAX_VALUE_IN_MESSAGE: usize = 500;

/// Reads and bounds an Alertmanager message.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<AlertmanagerMessage, Refusal> {
    super::validation::require_json(headers, body)?;
    let message: AlertmanagerMessage = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "Malformed Alertmanager message",
            e.to_string(),
        )
    })?;
    check_limits(&message)?;
    Ok(message)
}

fn check_limits(m: &AlertmanagerMessage) -> Result<(), Refusal> {
    let refuse = |detail: String| {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Malformed Alertmanager message",
            detail,
        ))
    };
    if m.version != "4" {
        return refuse(format!(
            "version {:?}: this endpoint reads Alertmanager's webhook format version \"4\"",
            m.version.chars().take(16).collect::<String>()
        ));
    }
    if m.group_key.is_empty() || m.group_key.chars().count() > MAX_ALERT_KEY_CHARS {
        return refuse(format!(
            "groupKey must have 1 to {MAX_ALERT_KEY_CHARS} characters"
        ));
    }
    if m.alerts.len() > MAX_ALERTS {
        return refuse(format!(
            "{} alerts in one message; at most {MAX_ALERTS}: set max_alerts in the webhook receiver",
            m.alerts.len()
        ));
    }
    let maps = [&m.group_labels, &m.common_labels, &m.common_annotations]
        .into_iter()
        .chain(m.alerts.iter().flat_map(|a| [&a.labels, &a.annotations]));
    for map in maps {
        if map.len() > MAX_ALERT_PAIRS {
            return refuse(format!(
                "{} labels or annotations in one set; at most {MAX_ALERT_PAIRS}",
                map.len()
            ));
        }
        for (k, v) in map {
            if k.chars().count() > MAX_ALERT_KEY_CHARS || v.chars().count() > MAX_ALERT_VALUE_CHARS
            {
                return refuse(format!(
                    "a label or annotation is too long (names up to {MAX_ALERT_KEY_CHARS}, values up to {MAX_ALERT_VALUE_CHARS} characters)"
                ));
            }
        }
    }
    let strings = std::iter::once(&m.external_url).chain(
        m.alerts
            .iter()
            .flat_map(|a| [&a.starts_at, &a.ends_at, &a.generator_url, &a.fingerprint]),
    );
    for s in strings {
        if s.chars().count() > MAX_ALERT_VALUE_CHARS {
            return refuse(format!(
                "a URL, time or fingerprint is longer than {MAX_ALERT_VALUE_CHARS} characters"
            ));
        }
    }
    Ok(())
}

/// The key under which this message is sent once: its group, its status and each alert's
/// fingerprint and status. Alertmanager's retries, and its repeats of an unchanged group after
/// `repeat_interval`, have the same key; a group with an alert more, fewer or resolved does not.
pub fn dedupe_key(m: &AlertmanagerMessage) -> String {
    use sha2::{Digest, Sha256};
    let mut alerts: Vec<String> = m
        .alerts
        .iter()
        .map(|a| {
            let identity = if a.fingerprint.is_empty() {
                serde_json::to_string(&a.labels).unwrap_or_default()
            } else {
                a.fingerprint.clone()
            };
            format!("{identity}:{}", status_word(a.status, None))
        })
        .collect();
    alerts.sort();
    let mut hash = Sha256::new();
    for part in [m.group_key.as_str(), status_word(m.status, None)]
        .into_iter()
        .chain(alerts.iter().map(String::as_str))
    {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest: String = hash
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("alertmanager-{digest}")
}

/// The route the group's `spec.alerts.routeByLabel` value picks, if any.
pub fn route(notifier: &LineWorksNotifier, m: &AlertmanagerMessage) -> Option<Route> {
    let alerts = notifier.spec.alerts.as_ref()?;
    let label = alerts.route_by_label.as_deref()?;
    let value = m
        .common_labels
        .get(label)
        .or_else(|| m.group_labels.get(label))?;
    let name = &alerts.routes.iter().find(|r| &r.value == value)?.route;
    notifier
        .spec
        .routes
        .iter()
        .find(|r| &r.name == name)
        .cloned()
}

/// The message for the group: the notifier's alert templates (or the defaults), the base text
/// and each language variant rendered on its own.
pub fn content(notifier: &LineWorksNotifier, m: &AlertmanagerMessage) -> Content {
    let templates = notifier.spec.templates.as_ref();
    let default_group = default_template(DEFAULT_ALERT_TEXT, DEFAULT_ALERT_TEXT_EN);
    let default_item = default_template(DEFAULT_ALERT_ITEM_TEXT, DEFAULT_ALERT_ITEM_TEXT_EN);
    let group = templates
        .and_then(|t| t.alert.as_ref())
        .unwrap_or(&default_group);
    let item = templates
        .and_then(|t| t.alert_item.as_ref())
        .unwrap_or(&default_item);
    let item_text = |language: Option<Language>| {
        language
            .and_then(|l| item.i18n_texts.iter().find(|v| v.language == l))
            .map_or(item.text.as_str(), |v| v.text.as_str())
    };
    Content::Text {
        text: render(&group.text, item_text(None), None, m),
        i18n_texts: group
            .i18n_texts
            .iter()
            .map(|v| I18nText {
                language: v.language.to_string(),
                text: render(&v.text, item_text(Some(v.language)), Some(v.language), m),
            })
            .collect(),
    }
}

fn default_template(text: &str, english: &str) -> MessageTemplate {
    MessageTemplate {
        text: text.into(),
        i18n_texts: vec![crate::api::I18nText {
            language: Language::English,
            text: english.into(),
        }],
    }
}

/// A value as a message may show it: cleaned, without the {{alerts}} mark, at most 500
/// characters.
fn shown(value: &str) -> String {
    let cleaned: String = clean(value).chars().filter(|c| *c != ALERTS_MARK).collect();
    if cleaned.chars().count() <= MAX_VALUE_IN_MESSAGE {
        cleaned
    } else {
        let mut cut: String = cleaned.chars().take(MAX_VALUE_IN_MESSAGE - 1).collect();
        cut.push('…');
        cut
    }
}

/// Placeholders common to a group and an alert, from one set of labels and annotations.
fn common_value(
    name: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<String> {
    let of = |map: &BTreeMap<String, String>, key: &str| {
        map.get(key).map(|v| shown(v)).unwrap_or_default()
    };
    Some(match name {
        "alertname" | "severity" | "instance" => of(labels, name),
        "summary" | "description" => of(annotations, name),
        _ => {
            if let Some(key) = name.strip_prefix("labels.") {
                of(labels, key)
            } else if let Some(key) = name.strip_prefix("annotations.") {
                of(annotations, key)
            } else {
                return None;
            }
        }
    })
}

fn status_word(status: AlertStatus, language: Option<Language>) -> &'static str {
    use AlertStatus::{Firing, Resolved};
    match (language, status) {
        (None | Some(Language::Japanese), Firing) => "発生",
        (None | Some(Language::Japanese), Resolved) => "解消",
        (Some(Language::English), Firing) => "FIRING",
        (Some(Language::English), Resolved) => "RESOLVED",
        (Some(Language::Korean), Firing) => "발생",
        (Some(Language::Korean), Resolved) => "해결",
        (Some(Language::SimplifiedChinese | Language::TraditionalChinese), Firing) => "告警",
        (Some(Language::SimplifiedChinese), Resolved) => "已恢复",
        (Some(Language::TraditionalChinese), Resolved) => "已恢復",
    }
}

fn more_line(n: u64, language: Option<Language>) -> String {
    match language {
        None | Some(Language::Japanese) => format!("…ほか {n} 件"),
        Some(Language::English) => format!("…and {n} more"),
        Some(Language::Korean) => format!("…외 {n}건"),
        Some(Language::SimplifiedChinese) => format!("…另有 {n} 条"),
        Some(Language::TraditionalChinese) => format!("…另有 {n} 則"),
    }
}

/// One text of the message: the group template with {{alerts}} filled by as many alerts (firing
/// first) as fit in 2,000 characters, and a "…ほか N 件" line for the rest and for the alerts
/// Alertmanager left out.
fn render(group: &str, item: &str, language: Option<Language>, m: &AlertmanagerMessage) -> String {
    let count = |status| m.alerts.iter().filter(|a| a.status == status).count();
    let nonzero = |n: usize| if n == 0 { String::new() } else { n.to_string() };
    let lookup = |name: &str| -> Option<Cow<'_, str>> {
        Some(match name {
            "status" => status_word(m.status, language).into(),
            "firing" => nonzero(count(AlertStatus::Firing)).into(),
            "resolved" => nonzero(count(AlertStatus::Resolved)).into(),
            "externalURL" => shown(&m.external_url).into(),
            "alerts" => ALERTS_MARK.to_string().into(),
            _ => common_value(name, &m.common_labels, &m.common_annotations)?.into(),
        })
    };
    let frame = render_with(group, &lookup);
    let frame = frame.trim_end();
    let Some((before, after)) = frame.split_once(ALERTS_MARK) else {
        return truncate(frame);
    };
    let after = after.replace(ALERTS_MARK, "");
    let mut budget = MAX_TEXT_CHARS.saturating_sub(before.chars().count() + after.chars().count());
    let mut ordered: Vec<&Alert> = m.alerts.iter().collect();
    ordered.sort_by_key(|a| a.status != AlertStatus::Firing);
    let mut lines: Vec<String> = Vec::new();
    for (i, alert) in ordered.iter().enumerate() {
        let line = render_item(item, language, alert);
        let left_after = (ordered.len() - i - 1) as u64 + m.truncated_alerts;
        // Room for this line, its line break and, if any alert would still be left out, the
        // "…ほか N 件" line for every alert not shown yet.
        let reserve = if left_after > 0 {
            more_line(left_after + 1, language).chars().count() + 1
        } else {
            0
        };
        let need = line.chars().count() + usize::from(!lines.is_empty());
        if need + reserve > budget {
            break;
        }
        budget -= need;
        lines.push(line);
    }
    let left_out = (m.alerts.len() - lines.len()) as u64 + m.truncated_alerts;
    if left_out > 0 {
        lines.push(more_line(left_out, language));
    }
    truncate(&format!("{before}{}{after}", lines.join("\n")))
}

fn render_item(item: &str, language: Option<Language>, alert: &Alert) -> String {
    let lookup = |name: &str| -> Option<Cow<'_, str>> {
        Some(match name {
            "status" => status_word(alert.status, language).into(),
            "startsAt" => shown(&alert.starts_at).into(),
            "generatorURL" => shown(&alert.generator_url).into(),
            _ => common_value(name, &alert.labels, &alert.annotations)?.into(),
        })
    };
    render_with(item, &lookup)
        .replace(ALERTS_MARK, "")
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, status: AlertStatus, summary: &str) -> Alert {
        Alert {
            status,
            labels: [
                ("alertname".to_string(), name.to_string()),
                ("instance".to_string(), "web-1".to_string()),
            ]
            .into(),
            annotations: [("summary".to_string(), summary.to_string())].into(),
            starts_at: "2026-11-27T10:00:00Z".into(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: "http://prometheus/graph".into(),
            fingerprint: format!("fp-{name}-{summary}"),
        }
    }

    fn message(alerts: Vec<Alert>) -> AlertmanagerMessage {
        AlertmanagerMessage {
            version: "4".into(),
            group_key: "{}:{alertname=\"HighLatency\"}".into(),
            truncated_alerts: 0,
            status: if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            receiver: "lineworks".into(),
            group_labels: [("alertname".to_string(), "HighLatency".to_string())].into(),
            common_labels: [
                ("alertname".to_string(), "HighLatency".to_string()),
                ("severity".to_string(), "critical".to_string()),
            ]
            .into(),
            common_annotations: BTreeMap::new(),
            external_url: "http://alertmanager:9093".into(),
            alerts,
        }
    }

    fn notifier() -> LineWorksNotifier {
        LineWorksNotifier::new(
            "n",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "d", "defaultUser": "u",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
            }))
            .expect("spec"),
        )
    }

    fn texts(content: &Content) -> (String, Vec<(String, String)>) {
        match content {
            Content::Text { text, i18n_texts } => (
                text.clone(),
                i18n_texts
                    .iter()
                    .map(|v| (v.language.clone(), v.text.clone()))
                    .collect(),
            ),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn a_group_reads_in_japanese_with_an_english_variant() {
        let m = message(vec![
            alert("HighLatency", AlertStatus::Resolved, "p99 ok"),
            alert("HighLatency", AlertStatus::Firing, "p99 over 2s"),
        ]);
        let (ja, variants) = texts(&content(&notifier(), &m));
        assert_eq!(
            ja,
            "【アラート発生】HighLatency（critical） 発生中 1 件 解消 1 件\n・[発生] HighLatency web-1: p99 over 2s\n・[解消] HighLatency web-1: p99 ok\nhttp://alertmanager:9093"
        );
        assert_eq!(variants.len(), 1);
        assert_eq!(variants[0].0, "en_US");
        assert!(
            variants[0]
                .1
                .starts_with("[FIRING] HighLatency (critical) firing: 1 resolved: 1\n- [FIRING]"),
            "{}",
            variants[0].1
        );
    }

    #[test]
    fn a_large_group_is_cut_cleanly_with_the_count_left_out() {
        let mut m = message(
            (0..300)
                .map(|i| {
                    alert(
                        "DiskFull",
                        AlertStatus::Firing,
                        &format!("disk {i} is full"),
                    )
                })
                .collect(),
        );
        m.truncated_alerts = 50;
        let (ja, variants) = texts(&content(&notifier(), &m));
        assert!(ja.chars().count() <= MAX_TEXT_CHARS);
        let shown = ja.lines().filter(|l| l.starts_with("・")).count();
        assert!(shown > 10, "{shown} alerts shown");
        let more = format!("…ほか {} 件", 300 - shown + 50);
        assert!(ja.contains(&more), "{ja}");
        // Every line shown is whole, and the link after the list is kept.
        assert!(ja.ends_with("\nhttp://alertmanager:9093"), "{ja}");
        assert!(variants[0].1.contains("…and "), "{}", variants[0].1);
        assert!(variants[0].1.chars().count() <= MAX_TEXT_CHARS);
    }

    #[test]
    fn labels_cannot_inject_template_syntax_or_the_list_mark() {
        let mut a = alert("X", AlertStatus::Firing, "{{labels.secret}} \u{e000} [[x]]");
        a.labels.insert("secret".into(), "s3cr3t".into());
        let (ja, _) = texts(&content(&notifier(), &message(vec![a])));
        assert!(ja.contains(": {{labels.secret}}  [[x]]"), "{ja}");
        assert!(!ja.contains("s3cr3t"));
    }

    #[test]
    fn retries_and_repeats_share_a_key_and_changes_do_not() {
        let one = message(vec![alert("A", AlertStatus::Firing, "a")]);
        let mut again = one.clone();
        again.alerts[0].ends_at = "2026-11-27T11:00:00Z".into();
        assert_eq!(dedupe_key(&one), dedupe_key(&again));
        let mut resolved = one.clone();
        resolved.alerts[0].status = AlertStatus::Resolved;
        resolved.status = AlertStatus::Resolved;
        assert_ne!(dedupe_key(&one), dedupe_key(&resolved));
        let mut more = one.clone();
        more.alerts.push(alert("B", AlertStatus::Firing, "b"));
        assert_ne!(dedupe_key(&one), dedupe_key(&more));
    }

    #[test]
    fn a_label_value_picks_a_route() {
        let mut n = notifier();
        n.spec.routes = vec![Route {
            name: "oncall".into(),
            user: Some("oncall".into()),
            room_id: None,
        }];
        n.spec.alerts = Some(crate::api::Alerts {
            route_by_label: Some("severity".into()),
            routes: vec![crate::api::AlertRoute {
                value: "critical".into(),
                route: "oncall".into(),
            }],
        });
        let m = message(vec![alert("A", AlertStatus::Firing, "a")]);
        assert_eq!(route(&n, &m).map(|r| r.name), Some("oncall".into()));
        let mut warning = m.clone();
        warning
            .common_labels
            .insert("severity".into(), "warning".into());
        assert_eq!(route(&n, &warning), None);
    }

    #[test]
    fn oversized_or_foreign_messages_are_refused() {
        let mut m = message(vec![alert("A", AlertStatus::Firing, "a")]);
        m.version = "3".into();
        assert!(check_limits(&m).is_err());
        let mut m = message(vec![alert("A", AlertStatus::Firing, "a"); MAX_ALERTS + 1]);
        assert!(check_limits(&m).is_err());
        m.alerts.truncate(1);
        m.alerts[0]
            .annotations
            .insert("big".into(), "x".repeat(MAX_ALERT_VALUE_CHARS + 1));
        assert!(check_limits(&m).is_err());
    }
}
