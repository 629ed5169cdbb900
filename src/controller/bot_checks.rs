//! The BotInService step, the vendor's troubleshooting checklist as API calls: the bot exists,
//! is added to the domain, and (with a room) is in the room. A pass is remembered in status with
//! a digest of what it depended on, so an unchanged notifier with the same token costs LINE WORKS
//! nothing, also after a controller restart or a change of leader.

use lineworks_client::{LineWorksClient, LineWorksError, SecretString};

use super::authorization::Authorized;
use super::context::Context;
use super::diagnosis::{self, in_service_message};
use super::findings::Findings;
use super::verdict::{Verdict, not_in_service, unauthorized};
use crate::api::conditions::{ConditionStatus, ConditionType, Reason};
use crate::api::{AuthMode, BotChecksPassed, LineWorksNotifier};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the bot checks depend on, as a digest: the spec fields they read and the token they ran
/// with (so they run again at each scheduled renewal, a natural periodic re-verification).
pub fn digest(notifier: &LineWorksNotifier, token_version: &str) -> String {
    use sha2::{Digest, Sha256};
    let spec = &notifier.spec;
    let depends_on = format!(
        "{}|{:?}|{:?}|{}|{token_version}",
        spec.bot_id,
        spec.domain_id,
        spec.room(),
        spec.api_base_url()
    );
    Sha256::digest(depends_on.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// BotInService=True without a call, when this spec already passed with this token: in this
/// process (the cached object may not show the status written by the pass yet: a reconcile that
/// follows its own write closely), or before it, as status still says.
pub fn remembered(
    ctx: &Context,
    key: &str,
    notifier: &LineWorksNotifier,
    findings: &mut Findings,
    authorized: &Authorized,
) -> Option<Verdict> {
    let want = digest(notifier, &authorized.version);
    // This process's pass counts for the generation it was made for: a spec change (any field:
    // a new test notification id, say) checks again, as a current BotInService=True requires.
    let memory = ctx
        .verified(key)
        .filter(|(p, generation)| p.digest == want && *generation == notifier.metadata.generation)
        .map(|(p, _)| p);
    let in_memory = memory.is_some();
    let in_status = findings
        .status
        .bot_checks_passed
        .as_ref()
        .is_some_and(|p| p.digest == want);
    let in_service = notifier.condition_is(ConditionType::BotInService, ConditionStatus::True);
    let remembered = in_memory || (in_status && in_service);
    if !remembered {
        tracing::debug!(
            notifier = key,
            in_memory,
            in_status,
            in_service,
            "bot checks not remembered: checking"
        );
    }
    if let Some(passed) = memory {
        // Status is written from this object's copy, which may predate the pass.
        findings.status.bot_checks_passed = Some(passed);
    }
    remembered.then(|| {
        Verdict::new(
            ConditionType::BotInService,
            ConditionStatus::True,
            Reason::BotReachable,
            in_service_message(&notifier.spec),
        )
    })
}

/// Records a check's outcome: its verdict, and whether to remember the pass.
pub fn record(
    ctx: &Context,
    key: &str,
    notifier: &LineWorksNotifier,
    authorized: &Authorized,
    outcome: Result<Verdict, LineWorksError>,
    findings: &mut Findings,
) {
    match outcome {
        Ok(verdict) => {
            let passed = verdict.is_true().then(|| BotChecksPassed {
                digest: digest(notifier, &authorized.version),
                at: Time(k8s_openapi::jiff::Timestamp::now()),
            });
            ctx.set_verified(
                key,
                passed.clone().map(|p| (p, notifier.metadata.generation)),
            );
            findings.status.bot_checks_passed = passed;
            findings.set(verdict);
        }
        Err(e) => {
            ctx.set_verified(key, None);
            findings.status.bot_checks_passed = None;
            findings.diagnose(diagnosis::check_failure(ConditionType::BotInService, &e));
        }
    }
}

/// Runs the checks. `Err` only for failures that say nothing about the configuration.
pub async fn check(
    notifier: &LineWorksNotifier,
    lineworks: &LineWorksClient,
    token: &SecretString,
    findings: &mut Findings,
) -> Result<Verdict, LineWorksError> {
    let spec = &notifier.spec;
    // The three calls at once, read in the checklist's order: a new notifier is Ready two LINE
    // WORKS round trips sooner. A bot that is not found costs the other two calls, on a path
    // that backs off.
    let room_check = async {
        match spec.room() {
            Some(room) => Some(lineworks.get_channel(token, spec.bot_id, room).await),
            None => None,
        }
    };
    let (bot, domains, room) = futures::join!(
        lineworks.get_bot(token, spec.bot_id),
        lineworks.list_bot_domains(token, spec.bot_id),
        room_check
    );
    let bot = match bot {
        Ok(bot) => bot,
        Err(LineWorksError::NotFound { .. }) => {
            return Ok(not_in_service(
                Reason::BotNotFound,
                format!(
                    "LINE WORKS has no bot {}: copy the Bot ID from Developer Console > Bot and set spec.botId",
                    spec.bot_id
                ),
            ));
        }
        Err(e @ LineWorksError::Forbidden { .. }) => {
            // The token in hand keeps its scopes: say how to get one with the app's new ones.
            let then = match notifier.spec.auth.mode {
                AuthMode::ServiceAccount => {
                    "make sure spec.auth.scopes lists them (a change there gets a new token at once)"
                }
                AuthMode::UserAccount => {
                    "authorize again (`lineworks-operator authorize NAME --listen ADDR`): a refreshed token keeps the scopes it was authorized with"
                }
            };
            findings.set(unauthorized(
                Reason::ScopeMissing,
                format!("the token may not read bots ({e}): in Developer Console > API 2.0 > (app) > OAuth Scopes check bot and bot.read and save; then {then}"),
            ));
            return Ok(Verdict::new(
                ConditionType::BotInService,
                ConditionStatus::Unknown,
                Reason::NotAuthorized,
                "waiting for Authorized",
            ));
        }
        Err(e) => return Err(e),
    };
    findings.status.bot_name = Some(bot.bot_name.clone());
    let domains = domains?;
    let added = match spec.domain_id {
        Some(id) => domains.iter().any(|d| d.domain_id == id),
        None => !domains.is_empty(),
    };
    if !added {
        return Ok(not_in_service(
            Reason::BotNotInDomain,
            format!(
                "bot {} ({}) is not added to {} (shown as 準備中): LINE WORKS admin screen > Service > Bot > Bot追加 > add it",
                spec.bot_id,
                bot.bot_name,
                spec.domain_id
                    .map(|d| format!("domain {d}"))
                    .unwrap_or_else(|| "any domain".into())
            ),
        ));
    }
    if let (Some(room), Some(found)) = (spec.room(), room) {
        match found {
            Ok(_) => {}
            Err(LineWorksError::NotFound { .. }) => {
                // LINE WORKS answers 404 both for a room that does not exist and for one the bot
                // was never invited to: say both.
                return Ok(not_in_service(
                    Reason::RoomNotFound,
                    format!(
                        "LINE WORKS shows bot {} no talk room {room}: either the チャンネルID is wrong (copy it from the room menu ... > チャンネルID into spec.roomId, or remove roomId for DM only) or the bot is not a member (open the room > ... > 招待 > Bot > {})",
                        spec.bot_id, bot.bot_name
                    ),
                ));
            }
            Err(LineWorksError::Forbidden { .. }) => {
                return Ok(not_in_service(
                    Reason::BotNotInRoom,
                    format!(
                        "bot {} is not in talk room {room}: in LINE WORKS open the room > ... > 招待 > Bot > {}",
                        spec.bot_id, bot.bot_name
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Verdict::new(
        ConditionType::BotInService,
        ConditionStatus::True,
        Reason::BotReachable,
        in_service_message(spec),
    ))
}
