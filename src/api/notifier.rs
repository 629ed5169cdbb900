//! The `LineWorksNotifier` custom resource (`lineworks-operator.dev/v1alpha1`).
//!
//! Every field carries a doc comment because it becomes the `kubectl explain` text, and every rule a
//! person can break carries a CEL message that says what to write instead. The console labels in the
//! docs (Bot ID, チャンネルID, …) are the ones the vendor's manual setup uses, so a person moving from
//! that manual can find each value.
//!
//! Longer than 500 lines because it is the whole schema: the doc comments and CEL rules are the
//! API's user-facing text, and one file keeps `kubectl explain` and the code that enforces it together.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::{ConditionExt, ConditionStatus, ConditionType};
use super::contract::{DEFAULT_API_BASE_URL, DEFAULT_AUTH_BASE_URL, token_secret};

/// Calls per minute per API allowed on the Free plan, the safe default.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: i32 = 60;

/// Desired state of a LINE WORKS notification channel: which bot speaks, to whom, in which talk
/// room, and with which app credentials.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lineworks-operator.dev",
    version = "v1alpha1",
    kind = "LineWorksNotifier",
    plural = "lineworksnotifiers",
    singular = "lineworksnotifier",
    shortname = "lwn",
    category = "lineworks",
    namespaced,
    status = "LineWorksNotifierStatus",
    derive = "PartialEq",
    doc = "LineWorksNotifier turns a LINE WORKS bot into a visitor notification channel: the operator keeps its OAuth tokens alive, checks the bot can reach the default user and talk room, sends test notifications on request and reports what to fix in status conditions.",
    printcolumn = r#"{"name":"Bot","type":"integer","jsonPath":".spec.botId"}"#,
    printcolumn = r#"{"name":"Room","type":"string","jsonPath":".spec.roomId"}"#,
    printcolumn = r#"{"name":"Authorized","type":"string","jsonPath":".status.conditions[?(@.type==\"Authorized\")].status"}"#,
    printcolumn = r#"{"name":"InService","type":"string","jsonPath":".status.conditions[?(@.type==\"BotInService\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    // The first condition that is False, in status order (Authorized, BotInService,
    // TestNotified, Ready): the specific cause, e.g. BotNotInRoom rather than BotNotInService.
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.status==\"False\")].reason"}"#,
    printcolumn = r#"{"name":"Delivering","type":"string","jsonPath":".status.delivering"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.alerts) || !has(self.alerts.routes) || self.alerts.routes.all(a, has(self.routes) && self.routes.exists(r, r.name == a.route))").message("every spec.alerts.routes[].route must be the name of a route in spec.routes"))]
pub struct LineWorksNotifierSpec {
    /// Bot ID of the LINE WORKS bot that sends the notifications, a number such as 2000001.
    /// Find it in LINE WORKS Developer Console > Bot > (your bot) > "Bot ID".
    #[schemars(range(min = 1))]
    pub bot_id: i64,

    /// LINE WORKS group or domain name: the part after "@" of a login ID ("グループまたはドメイン名").
    /// For the login ID hogehoge@testtest, write testtest.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(
        validation = Rule::new("!self.contains('@')").message("domain is only the part after @ of a login ID: for hogehoge@testtest write testtest"),
        validation = Rule::new("self.contains('@') || self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$')").message("domain may contain only letters, digits, dots and hyphens, e.g. testtest or example.co.jp")
    )]
    pub domain: String,

    /// Numeric ID of the LINE WORKS domain (Admin screen > Company information). Optional: when
    /// set, the operator checks that the bot was added to this very domain (Admin screen > Service
    /// > Bot > "Bot追加"); when unset, any domain the bot is added to passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub domain_id: Option<i64>,

    /// LINE WORKS user who gets a DM when a visitor's host has no (or a wrong) user ID, and who
    /// receives the test notification: the part before "@" of the login ID ("ユーザーID").
    /// For the login ID hogehoge@testtest, write hogehoge.
    #[schemars(length(max = 128))]
    #[x_kube(
        validation = Rule::new("size(self) > 0").message("defaultUser is required: the part before @ of the login ID of the person who gets DMs for unknown hosts and the test notification"),
        validation = user_has_no_domain(),
        validation = user_characters()
    )]
    pub default_user: String,

    /// Talk room that also gets every visitor notification (without a mention): the room's
    /// "チャンネルID", found in the LINE WORKS app under the room's "..." menu > "チャンネルID" >
    /// "チャンネルIDをコピー", e.g. 12345a12-b12c-12d3-e123fghijkl. The bot must be invited to the room
    /// ("..." > "招待" > Bot). Leave it out (or empty) for DM-only notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = room_id_shape())]
    pub room_id: Option<String>,

    /// How the operator authenticates to LINE WORKS as the app registered in Developer Console.
    pub auth: NotifierAuth,

    /// Named notification targets for custom buttons of the reception app (for example
    /// "delivery" or "interview"): a caller of the relay says `route: delivery` instead of a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub routes: Vec<Route>,

    /// Where Alertmanager alerts sent to this notifier's relay endpoint (`…/alertmanager`) go.
    /// Without it every alert group goes to roomId, or to defaultUser when there is no room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Alerts>,

    /// Message texts. Japanese defaults are used for anything not set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Templates>,

    /// What callers of the relay may ask of this notifier beyond filling in the templates.
    /// The defaults are the safe ones: no caller-written text, DMs only within spec.domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_policy: Option<RelayPolicy>,

    /// Declarative test notification (the "テスト通知" button): set or change `id` and the operator
    /// sends one test message to defaultUser and, when set, to roomId. An id is sent at most once,
    /// also across operator restarts; the result is in status.lastTestNotification and the
    /// TestNotified condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_notification: Option<TestNotificationRequest>,

    /// Pause this notifier ("このチャットアプリケーションを使用する" unchecked): no token refresh, no
    /// checks, and the relay refuses notifications for it with 503.
    #[serde(default)]
    pub suspend: bool,

    /// Calls per minute per LINE WORKS API the operator allows itself for this domain: 60 on the
    /// Free plan, 240 on the Standard and Advanced plans. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 240))]
    pub rate_limit_per_minute: Option<i32>,

    /// LINE WORKS API 2.0 base URL. Default https://www.worksapis.com/v1.0. Override for a proxy
    /// or the local emulator; plain http is allowed only for localhost and 127.0.0.1, and any
    /// other host only if the operator's installer allowed it (--allow-host, Helm value
    /// allowedHosts): access tokens and messages go there.
    #[serde(
        default,
        rename = "apiBaseURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = base_url_rule("apiBaseURL"))]
    pub api_base_url: Option<String>,

    /// LINE WORKS OAuth base URL (…/oauth2/v2.0). Default https://auth.worksmobile.com/oauth2/v2.0.
    /// Override for a proxy or the local emulator; plain http is allowed only for localhost and
    /// 127.0.0.1, and any other host only if the operator's installer allowed it (--allow-host,
    /// Helm value allowedHosts): the client secret and refresh token go there.
    #[serde(
        default,
        rename = "authBaseURL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = base_url_rule("authBaseURL"))]
    pub auth_base_url: Option<String>,
}

/// What callers of the relay may ask of a notifier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RelayPolicy {
    /// Let callers send their own message text (the request's `text`) instead of the templates.
    /// Off by default: anyone holding the relay's token could otherwise make the bot say
    /// anything to anyone it can reach.
    #[serde(default)]
    pub allow_text: bool,

    /// Domains besides spec.domain whose users a caller may name as host (`user@domain`).
    /// `*` allows any domain, and hosts given as LINE WORKS user IDs (whose domain cannot be
    /// checked). Default: none, so a host outside spec.domain is refused with 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 253)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(d, d == '*' || d.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$'))").message("relayPolicy.hostDomains holds domain names such as example.co.jp, or *")
    )]
    pub host_domains: Vec<String>,
}

/// How the operator obtains OAuth tokens for the LINE WORKS app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'userAccount' || has(self.userAccount)").message("auth.mode userAccount needs auth.userAccount.redirectURL: the Redirect URL registered on the app in Developer Console"),
    validation = Rule::new("self.mode == 'userAccount' || !has(self.userAccount)").message("auth.userAccount is only used with auth.mode userAccount: remove it or set mode: userAccount"),
    validation = Rule::new("self.mode == 'serviceAccount' || !has(self.serviceAccount)").message("auth.serviceAccount is only used with auth.mode serviceAccount: remove it or set mode: serviceAccount")
)]
pub struct NotifierAuth {
    /// serviceAccount: the app's Service Account signs a JWT (fully declarative, no browser).
    /// userAccount: an administrator logs in once in a browser (authorization code flow), as in
    /// the vendor's manual setup; needs auth.userAccount.redirectURL.
    pub mode: AuthMode,

    /// Secret in the notifier's namespace holding the app's credentials from Developer Console >
    /// API 2.0 > (your app): Client ID, Client Secret, and for serviceAccount mode the Service
    /// Account ID and Private Key.
    pub credentials_secret_ref: CredentialsSecretRef,

    /// Settings for mode serviceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountAuth>,

    /// Settings for mode userAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_account: Option<UserAccountAuth>,

    /// OAuth scopes to request; they must be checked on the app in Developer Console > OAuth
    /// Scopes. Default: bot, bot.read.
    #[serde(default = "default_scopes")]
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 64)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.exists(s, s == 'bot' || s == 'bot.message')").message("scopes must include bot (or bot.message): without it the bot cannot send messages"),
        validation = Rule::new("self.all(s, s.matches('^[a-z][a-z.]*$'))").message("scopes are LINE WORKS scope names such as bot, bot.read or user.read")
    )]
    pub scopes: Vec<ScopeName>,

    /// Secret the operator creates and keeps the OAuth tokens in (owned by this notifier; never
    /// edit it by hand). Default: <notifier name>-lineworks-token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = secret_name_shape())]
    pub token_secret_name: Option<String>,
}

/// A LINE WORKS OAuth scope name, e.g. bot or bot.read.
pub type ScopeName = String;

fn default_scopes() -> Vec<ScopeName> {
    vec!["bot".into(), "bot.read".into()]
}

/// How the operator authenticates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// JWT signed with the app's Service Account private key.
    ServiceAccount,
    /// Authorization code from an administrator's browser login.
    UserAccount,
}

/// Where the app's credentials are, and under which keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the notifier's namespace.
    #[schemars(length(max = 253))]
    #[x_kube(
        validation = Rule::new("size(self) > 0").message("auth.credentialsSecretRef.name is required: the Secret holding the app's Client ID and Client Secret"),
        validation = secret_name_shape()
    )]
    pub name: String,

    /// Key holding the Client ID (Developer Console > API 2.0 > app > Client ID). Default clientId.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = secret_key_shape())]
    pub client_id_key: String,

    /// Key holding the Client Secret (Developer Console > API 2.0 > app > Client Secret).
    /// Default clientSecret.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = secret_key_shape())]
    pub client_secret_key: String,

    /// Key holding the Service Account ID (serviceAccount mode, unless
    /// auth.serviceAccount.serviceAccountId is set). Default serviceAccountId.
    #[serde(default = "default_service_account_id_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = secret_key_shape())]
    pub service_account_id_key: String,

    /// Key holding the Service Account's PKCS#8 private key, the "-----BEGIN PRIVATE KEY-----" file
    /// downloaded from Developer Console (serviceAccount mode). Default privateKey.
    #[serde(default = "default_private_key_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = secret_key_shape())]
    pub private_key_key: String,
}

fn default_client_id_key() -> String {
    "clientId".into()
}
fn default_client_secret_key() -> String {
    "clientSecret".into()
}
fn default_service_account_id_key() -> String {
    "serviceAccountId".into()
}
fn default_private_key_key() -> String {
    "privateKey".into()
}

/// Settings for Service Account (JWT) authentication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountAuth {
    /// Service Account ID shown in Developer Console > API 2.0 > app > Service Account, e.g.
    /// abcde.serviceaccount@example. When unset, it is read from the credentials Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_account_id: Option<String>,
}

/// Settings for User Account (authorization code) authentication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserAccountAuth {
    /// Redirect URL registered on the app in Developer Console > API 2.0 > app > Redirect URL.
    /// It must reach the operator's OAuth callback (for example
    /// https://lineworks-operator.example.com/oauth/callback).
    #[serde(rename = "redirectURL")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://localhost') || self.startsWith('http://127.0.0.1')").message("redirectURL must be an https:// URL (plain http only for localhost or 127.0.0.1), exactly as registered in Developer Console"))]
    pub redirect_url: String,
}

/// A named notification target (a custom button of the reception app).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.user) || has(self.roomId)").message("a route needs user, roomId, or both"))]
pub struct Route {
    /// Route name a caller uses, e.g. delivery or interview (lower case letters, digits, hyphens).
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]*[a-z0-9])?$')").message("route name must be lower case letters, digits and hyphens, e.g. delivery"))]
    pub name: String,

    /// User who gets a DM for this route: the part before "@" of the login ID, like defaultUser.
    /// A user LINE WORKS does not know gets defaultUser instead, as an unknown host does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = user_has_no_domain(), validation = user_characters())]
    pub user: Option<String>,

    /// Talk room ("チャンネルID") that gets a message for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = room_id_shape())]
    pub room_id: Option<String>,
}

/// Routing of Alertmanager alert groups: a label's value picks one of spec.routes, so that, for
/// example, critical alerts DM the on-call user while the rest go to the team's room.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Alerts {
    /// Label whose value picks the route, read from the alert group's common labels, e.g.
    /// severity or team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub route_by_label: Option<String>,

    /// Label value → name of one of spec.routes. A group whose value matches none (or that lacks
    /// the label) goes to roomId, or to defaultUser when there is no room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["value".into()]))]
    pub routes: Vec<AlertRoute>,
}

/// One label value and the route its alert groups take.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertRoute {
    /// The label's value, e.g. critical.
    #[schemars(length(min = 1, max = 128))]
    pub value: String,
    /// Name of a route in spec.routes.
    #[schemars(length(min = 1, max = 63))]
    pub route: String,
}

/// Message texts; visitor fields are inserted where the text names them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Templates {
    /// Text of a visitor notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<MessageTemplate>,

    /// Text of the test notification. Default "LINE WORKS テスト通知".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<MessageTemplate>,

    /// Text of one Alertmanager alert group (one message per group). Placeholders: {{status}}
    /// (発生 or 解消, in each variant's language), {{firing}} and {{resolved}} (counts, empty when
    /// 0), {{alertname}}, {{severity}}, {{summary}}, {{description}}, {{labels.NAME}} and
    /// {{annotations.NAME}} (the group's common labels and annotations), {{externalURL}}, and
    /// {{alerts}}: the alerts, one alertItem each, cut with "…ほか N 件" to fit 2,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<MessageTemplate>,

    /// Text of one alert inside {{alerts}}. Placeholders as for alert, of that one alert
    /// ({{status}} is its own), plus {{instance}}, {{startsAt}} and {{generatorURL}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_item: Option<MessageTemplate>,
}

/// A message text with optional per-language variants, shown to each reader in their language.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageTemplate {
    /// Text used when no variant matches the reader's language. LINE WORKS accepts at most 2,000
    /// characters per message.
    #[schemars(length(min = 1, max = 2000))]
    pub text: String,

    /// Per-language variants of the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["language".into()]))]
    pub i18n_texts: Vec<I18nText>,
}

/// The text for one language.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct I18nText {
    /// Language of this variant.
    pub language: Language,
    /// The text in that language (at most 2,000 characters).
    #[schemars(length(min = 1, max = 2000))]
    pub text: String,
}

/// Languages LINE WORKS messages can carry variants for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Language {
    #[serde(rename = "ja_JP")]
    Japanese,
    #[serde(rename = "en_US")]
    English,
    #[serde(rename = "ko_KR")]
    Korean,
    #[serde(rename = "zh_CN")]
    SimplifiedChinese,
    #[serde(rename = "zh_TW")]
    TraditionalChinese,
}

impl Language {
    /// The wire form LINE WORKS uses (`ja_JP`, …), the same as in the spec.
    pub fn code(self) -> &'static str {
        match self {
            Language::Japanese => "ja_JP",
            Language::English => "en_US",
            Language::Korean => "ko_KR",
            Language::SimplifiedChinese => "zh_CN",
            Language::TraditionalChinese => "zh_TW",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A request for one test notification.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TestNotificationRequest {
    /// A value not sent before sends one test notification, e.g. a date or a counter
    /// ("2026-11-23-1"). Each id is sent at most once: the last 16 sent are remembered in
    /// status.sentTestNotificationIds, so going back to an earlier id (A → B → A, or a GitOps
    /// revert) sends nothing.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$')").message("testNotification.id must be letters, digits, dots, hyphens or underscores, e.g. 2026-11-23-1"))]
    pub id: String,
}

/// Observed state, written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LineWorksNotifierStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Authorized, BotInService, TestNotified and Ready; a False condition's message says what to
    /// fix and where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Bot name as LINE WORKS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_name: Option<String>,

    /// Secret holding this notifier's OAuth tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,

    /// Secret holding the token callers present to the Deployment relay to send through this
    /// notifier (key `token`; generated, never overwritten: delete it to rotate). Absent while a
    /// Secret of that name belongs to something else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_token_secret_name: Option<String>,

    /// When the current access token expires (the token itself is only in the token Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<Time>,

    /// When the current refresh token lapses: 90 days after LINE WORKS issued it (at the
    /// authorization, or at a refresh with Refresh Token Rotation ON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_at: Option<Time>,

    /// URL an administrator must open to authorize the app (userAccount mode), when needed.
    #[serde(
        default,
        rename = "authorizationURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub authorization_url: Option<String>,

    /// Result of the most recent test notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test_notification: Option<TestNotificationStatus>,

    /// The value (its first 256 bytes) of the lineworks-operator.dev/reconcile-requested-at
    /// annotation last acted on (`lineworks-operator recheck` sets it): a new value re-runs the
    /// bot checks at once, at most once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,

    /// The bot checks' last pass: a digest of what it depended on (bot, domain, room, API base
    /// URL and the access token's issue time) and when it ran. A restarted or newly elected
    /// controller trusts it until the token's next renewal instead of asking LINE WORKS again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_checks_passed: Option<BotChecksPassed>,

    /// What visitor notifications reach now: All, DirectMessagesOnly (the room is broken; the
    /// relay still sends DMs) or None. Ready can be False while DMs still go out: Ready says a
    /// person has something to fix, this says what still works meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivering: Option<super::deliverable::Delivering>,

    /// The last 16 spec.testNotification.id values sent, oldest first. An id in this list is
    /// never sent again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub sent_test_notification_ids: Vec<String>,
}

/// How many sent test notification ids status remembers.
pub const SENT_TEST_IDS_KEPT: usize = 16;

impl LineWorksNotifierStatus {
    /// Whether the test notification `id` was sent already (and is still remembered).
    pub fn test_notification_sent(&self, id: &str) -> bool {
        self.sent_test_notification_ids.iter().any(|s| s == id)
            || self
                .last_test_notification
                .as_ref()
                .is_some_and(|t| t.id == id)
    }

    /// Remembers `id` as sent, forgetting the oldest beyond [`SENT_TEST_IDS_KEPT`].
    pub fn remember_test_notification(&mut self, id: &str) {
        self.sent_test_notification_ids.retain(|s| s != id);
        self.sent_test_notification_ids.push(id.to_string());
        let excess = self
            .sent_test_notification_ids
            .len()
            .saturating_sub(SENT_TEST_IDS_KEPT);
        self.sent_test_notification_ids.drain(..excess);
    }
}

/// A pass of the bot checks, as status remembers it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BotChecksPassed {
    /// SHA-256 (hex, 32 characters) of what the checks depended on.
    #[schemars(length(max = 64))]
    pub digest: String,
    /// When they passed.
    pub at: Time,
}

/// What happened to one test notification.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestNotificationStatus {
    /// spec.testNotification.id that was sent.
    pub id: String,
    /// When it was sent.
    pub sent_at: Time,
    /// Sending, Delivered (every target got it), PartiallyDelivered or Failed.
    pub result: DeliveryResult,
    /// One entry per target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetResult>,
}

/// Outcome of a delivery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeliveryResult {
    /// Recorded before the first message goes out, so a restart never sends it again; if it
    /// stays, the operator stopped mid-send and the result is unknown.
    Sending,
    Delivered,
    PartiallyDelivered,
    Failed,
}

/// Outcome for one user or room.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetResult {
    /// user or room.
    pub kind: TargetKind,
    /// The user (login ID) or room (channel ID).
    pub target: String,
    /// Whether LINE WORKS accepted the message.
    pub delivered: bool,
    /// LINE WORKS error code when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// LINE WORKS error description when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Kind of a notification target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TargetKind {
    User,
    Room,
}

impl TargetKind {
    /// The wire form (`user`, `room`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::User => "user",
            TargetKind::Room => "room",
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn user_has_no_domain() -> Rule {
    Rule::new("!self.contains('@')").message(
        "write only the part before @ of the login ID: for hogehoge@testtest write hogehoge (the domain goes in spec.domain)",
    )
}

fn user_characters() -> Rule {
    Rule::new("size(self) == 0 || self.contains('@') || self.matches('^[A-Za-z0-9._+-]+$')")
        .message("a LINE WORKS user ID may contain only letters, digits and . _ + -")
}

fn room_id_shape() -> Rule {
    Rule::new("self == '' || self.matches('^[A-Za-z0-9][A-Za-z0-9-]*$')").message(
        "roomId must be the talk room's チャンネルID (room menu ... > チャンネルID), e.g. 12345a12-b12c-12d3-e123fghijkl: letters, digits and hyphens",
    )
}

fn secret_name_shape() -> Rule {
    Rule::new("size(self) == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("must be a Kubernetes Secret name: lower case letters, digits, '-' and '.'")
}

fn secret_key_shape() -> Rule {
    Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("must be a Secret data key: letters, digits, '-', '_' and '.'")
}

fn base_url_rule(field: &str) -> Rule {
    Rule::new(
        "isURL(self) && !self.contains('@') && !self.contains('?') && !self.contains('#') && (self.startsWith('https://') || self.startsWith('http://localhost:') || self.startsWith('http://localhost/') || self.startsWith('http://127.0.0.1:') || self.startsWith('http://127.0.0.1/'))",
    )
    .message(Message::Message(format!(
        "{field} must be an https:// URL without user name, query or fragment; plain http is allowed only for localhost or 127.0.0.1 (the emulator). Hosts other than LINE WORKS's must also be allowed by the operator's installer (--allow-host, Helm value allowedHosts)"
    )))
}

impl LineWorksNotifierSpec {
    /// API base URL in effect, without a trailing slash.
    pub fn api_base_url(&self) -> &str {
        self.api_base_url
            .as_deref()
            .unwrap_or(DEFAULT_API_BASE_URL)
            .trim_end_matches('/')
    }

    /// OAuth base URL in effect, without a trailing slash.
    pub fn auth_base_url(&self) -> &str {
        self.auth_base_url
            .as_deref()
            .unwrap_or(DEFAULT_AUTH_BASE_URL)
            .trim_end_matches('/')
    }

    /// Calls per minute per API the operator allows itself.
    pub fn rate_limit_per_minute(&self) -> i32 {
        self.rate_limit_per_minute
            .unwrap_or(DEFAULT_RATE_LIMIT_PER_MINUTE)
    }

    /// Login ID of the default user, `user@domain`.
    pub fn default_user_login_id(&self) -> String {
        format!("{}@{}", self.default_user, self.domain)
    }

    /// LINE WORKS client settings for this notifier's endpoints and domain budget; `pacing` off
    /// only for measurements.
    pub fn client_config(
        &self,
        request_timeout: std::time::Duration,
        deadline: std::time::Duration,
        pacing: bool,
    ) -> lineworks_client::ClientConfig {
        lineworks_client::ClientConfig {
            api_base_url: self.api_base_url().to_string(),
            auth_base_url: self.auth_base_url().to_string(),
            domain: self.domain.clone(),
            // Known once credentials are read (the controller) or tokens stored (the relay).
            app: String::new(),
            rate_limit_per_minute: u32::try_from(self.rate_limit_per_minute())
                .ok()
                .filter(|_| pacing)
                .and_then(std::num::NonZeroU32::new),
            request_timeout,
            retry: lineworks_client::RetryPolicy {
                deadline,
                ..Default::default()
            },
        }
    }

    /// userAccount: the Redirect URL registered on the app (empty in serviceAccount mode).
    pub fn redirect_url(&self) -> &str {
        self.auth
            .user_account
            .as_ref()
            .map(|u| u.redirect_url.as_str())
            .unwrap_or_default()
    }

    /// Room to notify, if any (an empty roomId means DM only).
    pub fn room(&self) -> Option<&str> {
        self.room_id.as_deref().filter(|r| !r.is_empty())
    }
}

impl LineWorksNotifierStatus {
    /// The condition of that type, whatever generation it describes.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }
}

impl LineWorksNotifier {
    /// The condition of that type, whatever generation it describes.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.status.as_ref()?.condition(type_)
    }

    /// The condition of that type if it describes the current spec (its observedGeneration is
    /// the object's generation).
    pub fn current_condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.condition(type_)
            .filter(|c| c.observed_generation == self.metadata.generation)
    }

    /// Whether the condition describing the current spec has that status.
    pub fn condition_is(&self, type_: ConditionType, status: ConditionStatus) -> bool {
        self.current_condition(type_).is_some_and(|c| c.is(status))
    }

    /// Name of the Secret holding this notifier's tokens.
    pub fn token_secret_name(&self) -> String {
        match &self.spec.auth.token_secret_name {
            Some(name) if !name.is_empty() => name.clone(),
            _ => token_secret::default_name(&kube::ResourceExt::name_any(self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms_are_the_wire_forms() {
        for language in [
            Language::Japanese,
            Language::English,
            Language::Korean,
            Language::SimplifiedChinese,
            Language::TraditionalChinese,
        ] {
            assert_eq!(
                serde_json::to_value(language).ok(),
                Some(serde_json::Value::from(language.to_string()))
            );
        }
        for kind in [TargetKind::User, TargetKind::Room] {
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::from(kind.to_string()))
            );
        }
    }

    #[test]
    fn sent_test_ids_are_remembered_sixteen_deep() {
        let mut status = LineWorksNotifierStatus::default();
        for i in 0..20 {
            status.remember_test_notification(&i.to_string());
        }
        status.remember_test_notification("19");
        assert_eq!(status.sent_test_notification_ids.len(), SENT_TEST_IDS_KEPT);
        assert!(!status.test_notification_sent("3"), "forgotten");
        assert!(status.test_notification_sent("4") && status.test_notification_sent("19"));
        assert_eq!(
            status.sent_test_notification_ids.last().map(String::as_str),
            Some("19")
        );
    }

    #[test]
    fn conditions_are_read_by_type_and_generation() {
        let mut n = LineWorksNotifier::new(
            "n",
            serde_json::from_value(serde_json::json!({
                "botId": 1, "domain": "d", "defaultUser": "u",
                "auth": {"mode": "serviceAccount", "credentialsSecretRef": {"name": "s"}}
            }))
            .unwrap_or_else(|e| panic!("spec: {e}")),
        );
        n.metadata.generation = Some(2);
        let condition = |type_: &str, status: &str, generation| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "NotifierReady".into(),
            message: String::new(),
            observed_generation: Some(generation),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        n.status = Some(LineWorksNotifierStatus {
            conditions: vec![
                condition("Ready", "True", 2),
                condition("Authorized", "True", 1),
            ],
            ..Default::default()
        });
        assert!(n.condition_is(ConditionType::Ready, ConditionStatus::True));
        assert!(!n.condition_is(ConditionType::Ready, ConditionStatus::False));
        // Authorized describes an older spec: present, but not current.
        assert!(n.condition(ConditionType::Authorized).is_some());
        assert!(!n.condition_is(ConditionType::Authorized, ConditionStatus::True));
        assert!(n.condition(ConditionType::BotInService).is_none());
    }
}
