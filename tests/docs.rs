//! The troubleshooting page explains every reason a condition can show.

use lineworks_operator::api::conditions::Reason;

#[test]
fn every_reason_is_on_the_troubleshooting_page() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/troubleshooting.md"),
    )
    .expect("docs/troubleshooting.md");
    // Reasons of a True condition need no fix.
    let healthy = [Reason::TokenValid, Reason::BotReachable];
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| !healthy.contains(r))
        .map(|r| r.as_str())
        .filter(|r| !page.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md lacks {missing:?}"
    );
}

/// docs/crd-reference.md, docs/relay-api.md, docs/metrics.md and the chart's README are
/// generated from the code (and the chart's schema, which must describe every value).
#[test]
fn generated_reference_pages_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, generated) in lineworks_operator::reference::pages().expect("pages render") {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `make docs` and commit the result"
        );
    }
}

/// Every metric the code exports is in the reference, with its labels.
#[test]
fn the_metrics_reference_names_the_oauth_and_revocation_counters() {
    let page = lineworks_operator::reference::metrics_reference();
    for metric in [
        "lineworks_operator_oauth_callbacks_total` | counter | `result`",
        "lineworks_operator_token_revocations_total` | counter | `result`",
        "lineworks_operator_lineworks_calls_total` | counter | `api`, `status`",
        "lineworks_relay_targets_total` | counter | `kind`, `status`",
    ] {
        assert!(page.contains(metric), "{metric} missing:\n{page}");
    }
}

/// The LINE WORKS setup guides (English and Japanese) name only fields the CRD has, only
/// reasons the operator sets, the Secret keys the operator reads by default, and the same ones
/// in both languages.
#[test]
fn the_setup_guides_name_real_fields_reasons_and_keys_in_both_languages() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/crd-reference.md")).expect("reference");
    let mut named = Vec::new();
    for guide in ["docs/lineworks-setup.md", "docs/lineworks-setup.ja.md"] {
        let text = std::fs::read_to_string(root.join(guide)).expect(guide);
        let quoted = backquoted(&text);
        // A field path, alone or with a value (`spec.rateLimitPerMinute: 60`).
        let fields: std::collections::BTreeSet<String> = quoted
            .iter()
            .filter(|q| q.starts_with("spec.") || q.starts_with("status."))
            .filter_map(|q| q.split([':', ' ', '=']).next())
            .map(str::to_string)
            .collect();
        for field in &fields {
            assert!(
                reference.contains(&format!("| `{field}` |")),
                "{guide} names {field}, which the CRD does not have"
            );
        }
        let reasons: std::collections::BTreeSet<String> = quoted
            .iter()
            .filter(|q| Reason::parse(q).is_some())
            .map(|q| q.to_string())
            .collect();
        for word in quoted.iter().filter(|q| looks_like_a_reason(q)) {
            assert!(
                Reason::parse(word).is_some() || NOT_REASONS.contains(word),
                "{guide} names {word}, which is no reason the operator sets"
            );
        }
        for key in ["clientId", "clientSecret", "serviceAccountId", "privateKey"] {
            assert!(text.contains(&format!("`{key}`")), "{guide} lacks {key}");
        }
        named.push((guide, fields, reasons));
    }
    assert_eq!(named[0].1, named[1].1, "both guides name the same fields");
    assert_eq!(named[0].2, named[1].2, "both guides name the same reasons");

    // The keys the guides tell people to use are the operator's defaults.
    let reference_keys: lineworks_operator::api::notifier::CredentialsSecretRef =
        serde_json::from_value(serde_json::json!({"name": "x"})).expect("defaults");
    assert_eq!(
        [
            reference_keys.client_id_key.as_str(),
            reference_keys.client_secret_key.as_str(),
            reference_keys.service_account_id_key.as_str(),
            reference_keys.private_key_key.as_str(),
        ],
        ["clientId", "clientSecret", "serviceAccountId", "privateKey"]
    );
}

/// CamelCase words in backquotes the guides use that are not reasons.
const NOT_REASONS: &[&str] = &[
    "Authorized",
    "BotInService",
    "TestNotified",
    "Ready",
    "LineWorksNotifier",
];

fn looks_like_a_reason(word: &str) -> bool {
    word.len() > 3
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphabetic())
        && word.chars().skip(1).any(|c| c.is_ascii_uppercase())
}

/// The text between pairs of backquotes, outside fenced code blocks.
fn backquoted(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        out.extend(line.split('`').skip(1).step_by(2));
    }
    out
}

/// docs/gitops.md says the CRD needs no server-side apply: it stays far below the 256 KB that
/// client-side apply's last-applied annotation allows (the page says under 48 KB).
#[test]
fn the_crd_stays_small_enough_for_client_side_apply() {
    let crd = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crds/lineworksnotifiers.lineworks-operator.dev.yaml"),
    )
    .expect("the CRD");
    assert!(
        crd.len() < 48 * 1024,
        "{} bytes: update docs/gitops.md",
        crd.len()
    );
}
