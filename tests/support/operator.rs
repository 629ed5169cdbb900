//! A namespace with an emulator and a controller watching only that namespace, plus helpers to
//! apply notifiers and wait for conditions.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use lineworks_control_plane::ControlPlane;
use lineworks_emulator::{Emulator, World};
use lineworks_operator::api::LineWorksNotifier;
use lineworks_operator::api::conditions::{ConditionExt, ConditionStatus, ConditionType, Reason};
use lineworks_operator::api::contract::ALLOWED_NOTIFIERS_ANNOTATION;
use lineworks_operator::controller::{self, LeaseOptions, Metrics, Options, Settings};
use lineworks_operator::endpoints::AllowedHosts;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::lineworks::{self, BOT, CLIENT_ID, CLIENT_SECRET, DOMAIN, ROOM, SERVICE_ACCOUNT};
use super::{control_plane_with_crd, wait_for};

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Env {
    pub plane: &'static ControlPlane,
    pub client: Client,
    pub ns: String,
    pub emu: Emulator,
}

/// A running controller; dropping the handle stops it.
pub struct Running {
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), controller::StartError>>,
}

impl Running {
    /// Stops gracefully and waits for the controller to return.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

pub fn settings() -> Settings {
    Settings {
        request_timeout: Duration::from_secs(2),
        call_deadline: Duration::from_secs(3),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        instance: "test-controller".into(),
        state_lifetime: Duration::from_secs(600),
        // The emulator listens on loopback.
        allowed_hosts: AllowedHosts::loopback(),
        // Tokens here live seconds; the production floor is a minute.
        renewal_floor: Duration::from_secs(1),
        extra_roots: Default::default(),
        max_concurrent_reconciles:
            lineworks_operator::controller::DEFAULT_MAX_CONCURRENT_RECONCILES,
    }
}

impl Env {
    pub async fn new(prefix: &str, world: World) -> Self {
        let plane = control_plane_with_crd().await;
        let client = plane.client().await.expect("client");
        let ns = plane
            .create_namespace(&client, prefix)
            .await
            .expect("namespace");
        let emu = lineworks::emulator(world).await;
        Self {
            plane,
            client,
            ns,
            emu,
        }
    }

    pub fn start_controller(&self, lease_identity: Option<&str>) -> Running {
        self.start_controller_with(lease_identity, |_| {})
    }

    /// Like `start_controller`, with options adjusted by `configure` (serve address, state key…).
    pub fn start_controller_with(
        &self,
        lease_identity: Option<&str>,
        configure: impl FnOnce(&mut Options),
    ) -> Running {
        let metrics = Arc::new(Metrics::default());
        let (stop, mut stopped) = watch::channel(false);
        let mut options = Options {
            settings: settings(),
            serve: None,
            lease: lease_identity.map(|identity| LeaseOptions {
                namespace: self.ns.clone(),
                name: "lineworks-operator-leader".into(),
                identity: identity.into(),
                duration_secs: 3,
            }),
            namespace: Some(self.ns.clone()),
            metrics: Arc::clone(&metrics),
            ..Default::default()
        };
        configure(&mut options);
        let client = self.client.clone();
        let task = tokio::spawn(controller::run_with(client, options, async move {
            let _ = stopped.changed().await;
        }));
        Running {
            metrics,
            stop,
            task,
        }
    }

    /// Asks the controller for a new token the way the relay does.
    pub async fn report_token_rejected(&self, name: &str, token: &str) {
        report_token_rejected(&self.client, &self.ns, name, token).await;
    }

    pub fn notifiers(&self) -> Api<LineWorksNotifier> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies the credentials Secret with the given string data, opened to every
    /// notifier of the namespace.
    pub async fn apply_secret(&self, name: &str, data: Value) {
        self.apply_secret_allowing(name, data, Some("*")).await;
    }

    /// Server-side applies the credentials Secret; `allowed` is its allowed-notifiers annotation.
    pub async fn apply_secret_allowing(&self, name: &str, data: Value, allowed: Option<&str>) {
        let annotations = match allowed {
            Some(list) => json!({ALLOWED_NOTIFIERS_ANNOTATION: list}),
            None => json!({}),
        };
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "annotations": annotations}, "stringData": data});
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("secret applied");
    }

    /// The app's full credentials.
    pub async fn apply_good_secret(&self) {
        self.apply_secret("app", good_credentials()).await;
    }

    /// The app's credentials and a notifier of the test tenant, waited for until Ready.
    pub async fn apply_ready_notifier(&self, name: &str, spec: Value) {
        self.apply_good_secret().await;
        self.apply_notifier(name, spec).await;
        self.wait_condition(
            name,
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::NotifierReady,
        )
        .await;
    }

    /// A notifier of the test tenant; `spec` fields override the defaults.
    pub async fn apply_notifier(&self, name: &str, spec: Value) {
        let mut base = json!({
            "botId": BOT,
            "domain": DOMAIN,
            "defaultUser": "hogehoge",
            "roomId": ROOM,
            "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "app"}},
            "apiBaseURL": self.emu.api_base_url(),
            "authBaseURL": self.emu.auth_base_url(),
        });
        if let (Some(base), Some(over)) = (base.as_object_mut(), spec.as_object()) {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        let object = json!({
            "apiVersion": "lineworks-operator.dev/v1alpha1",
            "kind": "LineWorksNotifier",
            "metadata": {"name": name},
            "spec": base,
        });
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &kube::core::ApiResource::erase::<LineWorksNotifier>(&()),
        );
        api.patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .expect("notifier applied");
    }

    /// Merge-patches the notifier's spec.
    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.notifiers()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("spec patched");
    }

    /// Waits until condition `type_` has `status` and `reason` for the current generation.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
    ) -> Condition {
        self.wait_condition_saying(name, type_, status, reason, "")
            .await
    }

    /// Like `wait_condition`, also waiting for the message to contain `fragment`.
    pub async fn wait_condition_saying(
        &self,
        name: &str,
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        fragment: &str,
    ) -> Condition {
        let api = self.notifiers();
        wait_for(&format!("{name} {type_}={status} ({reason})"), WAIT, || {
            let api = api.clone();
            async move {
                let n = api.get(name).await.map_err(|e| e.to_string())?;
                let c = n
                    .current_condition(type_)
                    .cloned()
                    .ok_or("no such condition for this generation yet")?;
                if c.is(status)
                    && c.condition_reason() == Some(reason)
                    && c.message.contains(fragment)
                {
                    Ok(c)
                } else {
                    Err(format!("{} {}: {}", c.status, c.reason, c.message))
                }
            }
        })
        .await
    }
}

pub fn good_credentials() -> Value {
    json!({
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "serviceAccountId": SERVICE_ACCOUNT,
        "privateKey": lineworks::fixture("service-account.key"),
    })
}

/// Creates the Event by which a relay reports `token` rejected for notifier `ns/name` (what
/// the relay writes; an Event for this very token that exists already counts).
pub async fn report_token_rejected(client: &kube::Client, ns: &str, name: &str, token: &str) {
    let notifiers: Api<LineWorksNotifier> = Api::namespaced(client.clone(), ns);
    let Ok(notifier) = notifiers.get(name).await else {
        return;
    };
    let fingerprint = lineworks_client::token_fingerprint(&token.to_string().into());
    let event =
        lineworks_operator::api::contract::token_rejected::event(&notifier, fingerprint, "test");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    match events.create(&Default::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("reporting the token rejected: {e}"),
    }
}

/// The caller token the controller generated for notifier `name`, once its Secret exists.
pub async fn caller_token(env: &Env, name: &str) -> String {
    let secret_name = lineworks_operator::api::contract::caller_secret::name(name);
    let secrets = env.secrets();
    let secret = crate::support::wait_for("the caller token Secret", WAIT, || {
        let (secrets, secret_name) = (secrets.clone(), secret_name.clone());
        async move {
            secrets
                .get_opt(&secret_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
    crate::support::oauth::secret_value(
        &secret,
        lineworks_operator::api::contract::caller_secret::TOKEN,
    )
}
