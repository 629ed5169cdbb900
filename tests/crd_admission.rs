//! The LineWorksNotifier CRD on a real kube-apiserver: it installs, the examples apply, kubectl
//! shows the columns and field docs, and every mistake a person can make is refused at admission
//! with a message that says what to write instead.

mod support;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use lineworks_operator::api::{LineWorksNotifier, LineWorksNotifierStatus};
use serde_json::{Value, json};
use support::{control_plane_with_crd, kubectl_ok, wait_for};

fn valid_notifier(name: &str) -> Value {
    json!({
        "apiVersion": "lineworks-operator.dev/v1alpha1",
        "kind": "LineWorksNotifier",
        "metadata": {"name": name},
        "spec": {
            "botId": 2000001,
            "domain": "testtest",
            "defaultUser": "hogehoge",
            "roomId": "12345a12-b12c-12d3-e123fghijkl",
            "auth": {
                "mode": "serviceAccount",
                "credentialsSecretRef": {"name": "app-credentials"}
            }
        }
    })
}

fn dynamic_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("lineworks-operator.dev", "v1alpha1", "LineWorksNotifier");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "lineworksnotifiers");
    Api::namespaced_with(client, ns, &resource)
}

/// Sets `pointer` (a JSON pointer below the object) to `value`, or removes it when `value` is None.
fn mutate(mut object: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = object
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} exists in the base object"));
    let map = parent.as_object_mut().expect("parent is an object");
    match value {
        Some(v) => {
            map.insert(key.to_string(), v);
        }
        None => {
            map.remove(key);
        }
    }
    object
}

#[tokio::test]
async fn valid_notifier_is_accepted_and_keeps_defaults() {
    let plane = control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let ns = plane
        .create_namespace(&client, "valid")
        .await
        .expect("namespace");
    let api = dynamic_api(client.clone(), &ns);
    let object: DynamicObject = serde_json::from_value(valid_notifier("minimal")).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("a minimal valid notifier is accepted");

    let typed: Api<LineWorksNotifier> = Api::namespaced(client, &ns);
    let stored = typed.get("minimal").await.expect("stored notifier");
    let auth = &stored.spec.auth;
    assert_eq!(auth.scopes, vec!["bot", "bot.read"], "default scopes");
    assert_eq!(auth.credentials_secret_ref.client_id_key, "clientId");
    assert_eq!(auth.credentials_secret_ref.private_key_key, "privateKey");
    assert!(!stored.spec.suspend);
}

#[tokio::test]
async fn invalid_notifiers_are_refused_with_a_message_that_says_what_to_fix() {
    let plane = control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let ns = plane
        .create_namespace(&client, "invalid")
        .await
        .expect("namespace");
    let api = dynamic_api(client, &ns);
    let base = valid_notifier("bad");
    let long = "a".repeat(2001);

    // (what a person got wrong, pointer, new value or None to delete, fragments the error must contain)
    let cases: Vec<(&str, &str, Option<Value>, Vec<&str>)> = vec![
        (
            "non-numeric botId",
            "/spec/botId",
            Some(json!("my-bot")),
            vec!["spec.botId", "integer"],
        ),
        (
            "negative botId",
            "/spec/botId",
            Some(json!(-5)),
            vec!["spec.botId", "greater than or equal to 1"],
        ),
        (
            "missing botId",
            "/spec/botId",
            None,
            vec!["spec.botId", "Required value"],
        ),
        (
            "missing credentials reference",
            "/spec/auth/credentialsSecretRef",
            None,
            vec!["spec.auth.credentialsSecretRef", "Required value"],
        ),
        (
            "empty credentials Secret name",
            "/spec/auth/credentialsSecretRef",
            Some(json!({"name": ""})),
            vec!["auth.credentialsSecretRef.name is required"],
        ),
        (
            "userAccount without its redirect URL",
            "/spec/auth/mode",
            Some(json!("userAccount")),
            vec!["auth.mode userAccount needs auth.userAccount.redirectURL"],
        ),
        (
            "userAccount block with serviceAccount mode",
            "/spec/auth/userAccount",
            Some(json!({"redirectURL": "https://example.com/cb"})),
            vec!["auth.userAccount is only used with auth.mode userAccount"],
        ),
        (
            "unknown auth mode",
            "/spec/auth/mode",
            Some(json!("password")),
            vec![
                "spec.auth.mode",
                "Unsupported value",
                "serviceAccount",
                "userAccount",
            ],
        ),
        (
            "roomId of the wrong shape",
            "/spec/roomId",
            Some(json!("my room!")),
            vec!["spec.roomId", "チャンネルID"],
        ),
        (
            "empty defaultUser",
            "/spec/defaultUser",
            Some(json!("")),
            vec!["defaultUser is required"],
        ),
        (
            "defaultUser with the domain",
            "/spec/defaultUser",
            Some(json!("hogehoge@testtest")),
            vec![
                "spec.defaultUser",
                "write only the part before @",
                "hogehoge",
            ],
        ),
        (
            "domain given as a login ID",
            "/spec/domain",
            Some(json!("hogehoge@testtest")),
            vec!["spec.domain", "only the part after @", "testtest"],
        ),
        (
            "over-long domain",
            "/spec/domain",
            Some(json!("a".repeat(254))),
            vec!["spec.domain", "Too long"],
        ),
        (
            "negative rate limit",
            "/spec/rateLimitPerMinute",
            Some(json!(-1)),
            vec!["spec.rateLimitPerMinute", "greater than or equal to 1"],
        ),
        (
            "rate limit above every plan",
            "/spec/rateLimitPerMinute",
            Some(json!(1000)),
            vec!["spec.rateLimitPerMinute", "less than or equal to 240"],
        ),
        (
            "zero domainId",
            "/spec/domainId",
            Some(json!(0)),
            vec!["spec.domainId", "greater than or equal to 1"],
        ),
        (
            "message template over 2,000 characters",
            "/spec/templates",
            Some(json!({"visitor": {"text": long}})),
            vec!["spec.templates.visitor.text", "Too long"],
        ),
        (
            "plain-http API base URL",
            "/spec/apiBaseURL",
            Some(json!("http://www.worksapis.com/v1.0")),
            vec!["apiBaseURL must be an https:// URL"],
        ),
        (
            "user info hiding another host in the auth base URL",
            "/spec/authBaseURL",
            Some(json!("http://localhost:@169.254.169.254/")),
            vec!["authBaseURL must be an https:// URL without user name"],
        ),
        (
            "a query in the API base URL",
            "/spec/apiBaseURL",
            Some(json!("https://www.worksapis.com/v1.0?next=x")),
            vec!["apiBaseURL must be an https:// URL without user name, query or fragment"],
        ),
        (
            "scopes without bot",
            "/spec/auth/scopes",
            Some(json!(["bot.read"])),
            vec!["scopes must include bot"],
        ),
        (
            "route without a target",
            "/spec/routes",
            Some(json!([{"name": "delivery"}])),
            vec!["a route needs user, roomId, or both"],
        ),
        (
            "duplicate route names",
            "/spec/routes",
            Some(json!([{"name": "delivery", "user": "a"}, {"name": "delivery", "user": "b"}])),
            vec!["spec.routes", "Duplicate value"],
        ),
        (
            "test notification id with spaces",
            "/spec/testNotification",
            Some(json!({"id": "try again"})),
            vec!["testNotification.id must be"],
        ),
        (
            "unknown i18n language",
            "/spec/templates",
            Some(
                json!({"visitor": {"text": "x", "i18nTexts": [{"language": "fr_FR", "text": "x"}]}}),
            ),
            vec!["language", "Unsupported value", "ja_JP"],
        ),
    ];
    assert!(cases.len() >= 12);

    let mut failures = Vec::new();
    for (what, pointer, value, expected) in &cases {
        let manifest = mutate(base.clone(), pointer, value.clone());
        let object: DynamicObject = serde_json::from_value(manifest).expect("object");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                failures.push(format!("{what}: was accepted"));
                let _ = api.delete("bad", &Default::default()).await;
            }
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = expected
                    .iter()
                    .filter(|fragment| !status.message.contains(**fragment))
                    .collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{what}: HTTP {} without {missing:?} in: {}",
                        status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{what}: unexpected error {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        api.get_opt("bad").await.expect("get").is_none(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn examples_apply_and_kubectl_shows_columns_and_field_docs() {
    let plane = control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let ns = plane
        .create_namespace(&client, "examples")
        .await
        .expect("namespace");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in [
        "notifier-service-account.yaml",
        "notifier-user-account.yaml",
    ] {
        let path = examples.join(file);
        let path = path.to_str().expect("utf-8 path");
        kubectl_ok(plane, &["apply", "--server-side", "-n", &ns, "-f", path]);
    }

    // Report a Ready condition through the status subresource, as the controller will.
    let api: Api<LineWorksNotifier> = Api::namespaced(client, &ns);
    let status = LineWorksNotifierStatus {
        observed_generation: Some(1),
        conditions: vec![
            Condition {
                type_: "BotInService".into(),
                status: "False".into(),
                reason: "BotNotInRoom".into(),
                message: "invite the bot to the talk room".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: Some(1),
            },
            Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "BotNotInService".into(),
                message: "invite the bot to the talk room".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: Some(1),
            },
        ],
        ..Default::default()
    };
    api.patch_status(
        "reception",
        &PatchParams::apply("lineworks-operator-test").force(),
        &Patch::Apply(json!({
            "apiVersion": "lineworks-operator.dev/v1alpha1",
            "kind": "LineWorksNotifier",
            "status": status,
        })),
    )
    .await
    .expect("status subresource accepts conditions");

    let table = kubectl_ok(plane, &["get", "lwn", "-n", &ns]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "BOT",
        "ROOM",
        "AUTHORIZED",
        "INSERVICE",
        "READY",
        "REASON",
        "AGE",
    ] {
        assert!(header.contains(column), "column {column} in: {table}");
    }
    assert!(
        !header.contains("STATUS"),
        "Status only with -o wide: {table}"
    );
    let reception = table
        .lines()
        .find(|l| l.starts_with("reception "))
        .unwrap_or_else(|| panic!("reception listed: {table}"));
    assert!(reception.contains("2000001"), "{reception}");
    assert!(
        reception.contains("12345a12-b12c-12d3-e123fghijkl"),
        "{reception}"
    );
    assert!(
        reception.contains("False"),
        "Ready=False shown: {reception}"
    );
    assert!(
        reception.contains("BotNotInRoom") && !reception.contains("BotNotInService"),
        "the first False condition's reason, the specific one: {reception}"
    );

    let wide = kubectl_ok(plane, &["get", "lineworks", "-n", &ns, "-o", "wide"]);
    assert!(wide.contains("STATUS"), "{wide}");
    assert!(wide.contains("invite the bot to the talk room"), "{wide}");
    assert!(
        wide.contains("front-desk"),
        "category lineworks lists both: {wide}"
    );

    // kubectl explain reads the published OpenAPI, which follows the CRD by a moment.
    let explain = wait_for(
        "kubectl explain to know the CRD",
        Duration::from_secs(60),
        || async {
            let out = support::kubectl(plane, &["explain", "lineworksnotifier.spec.roomId"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                Ok(text)
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
    assert!(explain.contains("チャンネルID"), "{explain}");
    assert!(explain.contains("DM-only"), "{explain}");
    let explain = kubectl_ok(plane, &["explain", "lwn.spec.auth.mode"]);
    assert!(
        explain.contains("serviceAccount") && explain.contains("userAccount"),
        "{explain}"
    );
}

#[tokio::test]
async fn spec_changes_do_not_touch_status_and_status_changes_do_not_touch_spec() {
    let plane = control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let ns = plane
        .create_namespace(&client, "subresource")
        .await
        .expect("namespace");
    let api = dynamic_api(client.clone(), &ns);
    let mut object = valid_notifier("sub");
    object["status"] = json!({"botName": "should be dropped"});
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created");
    // Status in a create is ignored (status subresource); what shows is the CRD's default, which
    // says no controller has observed this generation yet (GitOps tools read it as in progress).
    assert_eq!(
        created.data.get("status"),
        Some(&json!({"observedGeneration": 0})),
        "{:?}",
        created.data
    );
    let typed: Api<LineWorksNotifier> = Api::namespaced(client, &ns);
    let patched = typed
        .patch_status(
            "sub",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"botId": 1}, "status": {"botName": "RECEPTIONIST"}})),
        )
        .await
        .expect("status patch");
    assert_eq!(patched.spec.bot_id, 2000001);
    assert_eq!(
        patched.status.and_then(|s| s.bot_name).as_deref(),
        Some("RECEPTIONIST")
    );
}

/// The notifier in each LINE WORKS setup guide is accepted as written (strict field validation:
/// a misspelt field would be refused, not dropped).
#[tokio::test]
async fn the_setup_guides_notifiers_are_accepted() {
    let plane = control_plane_with_crd().await;
    let client = plane.client().await.expect("client");
    let ns = plane
        .create_namespace(&client, "guides")
        .await
        .expect("namespace");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for guide in ["docs/lineworks-setup.md", "docs/lineworks-setup.ja.md"] {
        let text = std::fs::read_to_string(root.join(guide)).expect(guide);
        let notifiers: Vec<&str> = text
            .split("```yaml\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .filter(|block| block.contains("kind: LineWorksNotifier"))
            .collect();
        assert_eq!(notifiers.len(), 1, "{guide} has one notifier");
        let yaml = notifiers[0].replace("namespace: reception", &format!("namespace: {ns}"));
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("notifier.yaml");
        std::fs::write(&file, yaml).expect("write");
        kubectl_ok(
            plane,
            &[
                "apply",
                "--server-side",
                "--validate=strict",
                "--dry-run=server",
                "-f",
                file.to_str().expect("utf-8 path"),
            ],
        );
    }
}
