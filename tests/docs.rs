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

/// docs/crd-reference.md, docs/relay-api.md and docs/metrics.md are generated from the code.
#[test]
fn generated_reference_pages_match_the_code() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for (name, generated) in lineworks_operator::reference::pages().expect("pages render") {
        let committed = std::fs::read_to_string(docs.join(name)).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/{name} is out of date: run `make docs` and commit the result"
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
