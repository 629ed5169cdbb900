//! A small emulated tenant and clients pointed at it.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lineworks_client::{
    ClientConfig, ClientCredentials, LineWorksClient, RateLimits, RetryPolicy, SecretString,
    ServiceAccount,
};
use lineworks_emulator::{AppDef, BotDef, ChannelDef, DomainDef, Emulator, UserDef, World};

pub const DOMAIN: &str = "testtest";
pub const DOMAIN_ID: i64 = 10_000_001;
pub const OTHER_DOMAIN_ID: i64 = 10_000_002;
pub const CLIENT_ID: &str = "client-1";
pub const CLIENT_SECRET: &str = "s3cr3t-client-secret-value";
pub const SERVICE_ACCOUNT: &str = "sa-1.serviceaccount@testtest";
pub const BOT: i64 = 2_000_001;
pub const LONELY_BOT: i64 = 2_000_002;
pub const ROOM: &str = "12345a12-b12c-12d3-e123fghijkl";
pub const ROOM_WITHOUT_BOT: &str = "98765b98-c98d-98e7-f987ghijklm";
pub const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn user(id: &str, login: &str, admin: bool) -> UserDef {
    UserDef {
        user_id: id.into(),
        login_id: login.into(),
        deleted: false,
        admin,
    }
}

/// One domain with three people, an app with a Service Account, a bot added to the domain and
/// invited to one room, and a second bot added nowhere.
pub fn world() -> World {
    World {
        domains: vec![
            DomainDef {
                domain_id: DOMAIN_ID,
                name: DOMAIN.into(),
            },
            DomainDef {
                domain_id: OTHER_DOMAIN_ID,
                name: "elsewhere".into(),
            },
        ],
        users: vec![
            user("u-hoge", "hogehoge@testtest", false),
            user("u-jinji", "jinji@testtest", false),
            user("u-admin", "admin@testtest", true),
            user("u-far", "far@elsewhere", false),
        ],
        apps: vec![AppDef {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            domain_id: DOMAIN_ID,
            scopes: vec!["bot".into(), "bot.read".into()],
            redirect_uris: vec![REDIRECT.into()],
            service_accounts: vec![SERVICE_ACCOUNT.into()],
            public_key_pem: Some(fixture("service-account.pub")),
            refresh_token_rotation: false,
            refresh_token_reuse_secs: 0,
            access_token_lifetime_secs: 86_400,
            refresh_token_lifetime_secs: 90 * 86_400,
            expires_in_as_string: true,
        }],
        bots: vec![
            BotDef {
                bot_id: BOT,
                bot_name: "RECEPTIONIST".into(),
                allow_domains: vec![DOMAIN_ID],
                domains: vec![DOMAIN_ID],
            },
            BotDef {
                bot_id: LONELY_BOT,
                bot_name: "Preparing".into(),
                allow_domains: vec![DOMAIN_ID],
                domains: vec![],
            },
        ],
        channels: vec![
            ChannelDef {
                channel_id: ROOM.into(),
                domain_id: DOMAIN_ID,
                title: "受付".into(),
                members: vec!["u-hoge".into(), "u-jinji".into(), "u-admin".into()],
                bots: vec![BOT],
            },
            ChannelDef {
                channel_id: ROOM_WITHOUT_BOT.into(),
                domain_id: DOMAIN_ID,
                title: "雑談".into(),
                members: vec!["u-hoge".into()],
                bots: vec![],
            },
        ],
        ..World::default()
    }
}

pub async fn emulator(world: World) -> Emulator {
    lineworks_client::install_crypto_provider();
    Emulator::start(world, "127.0.0.1:0")
        .await
        .expect("emulator starts")
}

/// A client with fast retries, pacing off unless asked.
pub fn client(emulator: &Emulator, deadline: Duration, per_minute: Option<u32>) -> LineWorksClient {
    let mut config = ClientConfig::new(DOMAIN);
    config.api_base_url = emulator.api_base_url();
    config.auth_base_url = emulator.auth_base_url();
    config.rate_limit_per_minute = per_minute.and_then(NonZeroU32::new);
    config.request_timeout = Duration::from_secs(2);
    config.retry = RetryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_attempts: 8,
        deadline,
    };
    LineWorksClient::new(config, Arc::new(RateLimits::default())).expect("client")
}

pub fn credentials() -> ClientCredentials {
    ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from(CLIENT_SECRET),
    }
}

pub fn service_account(key_fixture: &str) -> ServiceAccount {
    ServiceAccount::new(SERVICE_ACCOUNT, &SecretString::from(fixture(key_fixture)))
        .expect("key parses")
}

pub fn scopes() -> Vec<String> {
    vec!["bot".into(), "bot.read".into()]
}
