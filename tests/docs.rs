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
