//! What the emulated LINE WORKS tenant contains: domains, users, apps, bots and talk rooms. Read
//! from a JSON file at start (`emulator --world FILE`) or replaced through `PUT /admin/world`.
//! These are the emulator's own types, in its own format; nothing here is shared with the client.

use serde::{Deserialize, Serialize};

/// The whole emulated tenant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct World {
    #[serde(default)]
    pub domains: Vec<DomainDef>,
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub apps: Vec<AppDef>,
    #[serde(default)]
    pub bots: Vec<BotDef>,
    #[serde(default)]
    pub channels: Vec<ChannelDef>,
    /// Calls per minute per API per domain (Free 60, Standard/Advanced 240); 0 turns limits off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_minute: u32,
    /// How the per-minute count is kept; LINE WORKS does not say, so clients must hold under both.
    #[serde(default)]
    pub rate_window: RateWindow,
    /// Items per page of the paged list APIs.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Lifetime of authorization codes (LINE WORKS: 10 minutes).
    #[serde(default = "default_code_lifetime")]
    pub authorization_code_lifetime_secs: u64,
}

fn default_code_lifetime() -> u64 {
    600
}

fn default_rate_limit() -> u32 {
    240
}
fn default_page_size() -> usize {
    50
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainDef {
    pub domain_id: i64,
    /// The part after @ of login IDs in this domain.
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserDef {
    pub user_id: String,
    /// `local@domain`.
    pub login_id: String,
    #[serde(default)]
    pub deleted: bool,
    /// Super or sub administrator (may authorize apps in the browser flow).
    #[serde(default)]
    pub admin: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDef {
    pub client_id: String,
    pub client_secret: String,
    /// Domain whose rate budget the app's calls count against.
    pub domain_id: i64,
    /// Registered OAuth scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Service Account IDs of this app.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// PEM public key that verifies the Service Account's JWT assertions.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    #[serde(default)]
    pub refresh_token_rotation: bool,
    /// With rotation on, how long the previous refresh token still works after it was rotated
    /// (some services allow such a reuse window; LINE WORKS's is unknown, so 0 = none).
    #[serde(default)]
    pub refresh_token_reuse_secs: u64,
    #[serde(default = "default_access_lifetime")]
    pub access_token_lifetime_secs: u64,
    #[serde(default = "default_refresh_lifetime")]
    pub refresh_token_lifetime_secs: u64,
    /// Answer `expires_in` as a string ("86400") instead of a number: both are seen in the wild.
    #[serde(default)]
    pub expires_in_as_string: bool,
}

fn default_access_lifetime() -> u64 {
    86_400
}
fn default_refresh_lifetime() -> u64 {
    90 * 86_400
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BotDef {
    pub bot_id: i64,
    pub bot_name: String,
    /// Domains the bot may be added to.
    #[serde(default)]
    pub allow_domains: Vec<i64>,
    /// Domains the bot was added to (admin screen > Service > Bot > Bot追加).
    #[serde(default)]
    pub domains: Vec<i64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelDef {
    pub channel_id: String,
    pub domain_id: i64,
    #[serde(default)]
    pub title: String,
    /// User IDs of the room's members.
    #[serde(default)]
    pub members: Vec<String>,
    /// Bots invited to the room.
    #[serde(default)]
    pub bots: Vec<i64>,
}

impl Default for World {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            users: Vec::new(),
            apps: Vec::new(),
            bots: Vec::new(),
            channels: Vec::new(),
            rate_limit_per_minute: default_rate_limit(),
            rate_window: RateWindow::default(),
            page_size: default_page_size(),
            authorization_code_lifetime_secs: default_code_lifetime(),
        }
    }
}

impl World {
    pub fn app(&self, client_id: &str) -> Option<&AppDef> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    pub fn bot(&self, bot_id: i64) -> Option<&BotDef> {
        self.bots.iter().find(|b| b.bot_id == bot_id)
    }

    pub fn channel(&self, channel_id: &str) -> Option<&ChannelDef> {
        self.channels.iter().find(|c| c.channel_id == channel_id)
    }

    /// A user by user ID or login ID.
    pub fn user(&self, id_or_login: &str) -> Option<&UserDef> {
        self.users
            .iter()
            .find(|u| u.user_id == id_or_login || u.login_id.eq_ignore_ascii_case(id_or_login))
    }

    /// The domain of a user, from the part after @ of the login ID.
    pub fn user_domain(&self, user: &UserDef) -> Option<i64> {
        let name = user.login_id.rsplit_once('@')?.1;
        self.domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .map(|d| d.domain_id)
    }
}

/// How the emulator counts calls against the per-minute limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateWindow {
    /// Calls within the current calendar minute of the wall clock.
    CalendarMinute,
    /// Calls within the last 60 seconds (the default: a test's count never straddles a minute).
    #[default]
    Sliding,
}
