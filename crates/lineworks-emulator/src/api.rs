//! `/v1.0/bots/...`: bot reads and message sends, with the documented status codes, `{code,
//! description}` error bodies, scopes, rate limits and `rateLimit-*` headers.

// Handlers return the HTTP answer as the error of their helpers; it is built once per request,
// on the way out, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::state::{Delivered, Shared};
use super::world::World;

const READ_SCOPES: &[&str] = &["bot", "bot.read"];
const SEND_SCOPES: &[&str] = &["bot", "bot.message"];
const LANGUAGES: &[&str] = &["ja_JP", "en_US", "ko_KR", "zh_CN", "zh_TW"];

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "description": description})),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("{what} not found"),
    )
}

/// Authenticates the bearer token, checks its scope and counts the call against the app's
/// domain; returns the `rateLimit-*` headers to put on the answer.
fn admit(
    state: &Shared,
    headers: &HeaderMap,
    api: &'static str,
    scopes: &[&str],
) -> Result<HeaderMap, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Authorization: Bearer <token> is required",
            )
        })?;
    let mut guard = state.lock();
    let grant = guard
        .access
        .get(token)
        .filter(|g| SystemTime::now() < g.expires_at)
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::FORBIDDEN,
                "UNAUTHORIZED",
                "The access token is invalid or expired",
            )
        })?;
    if !grant.scopes.iter().any(|s| scopes.contains(&s.as_str())) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            &format!("scope {} is required", scopes.join(" or ")),
        ));
    }
    let domain_id = guard
        .world
        .app(&grant.client_id)
        .map(|a| a.domain_id)
        .unwrap_or_default();
    let check = guard.count_call(domain_id, api);
    let mut out = HeaderMap::new();
    if check.limit > 0 {
        let remaining = check.limit.saturating_sub(check.used);
        for (name, value) in [
            ("rateLimit-limit", check.limit.to_string()),
            ("rateLimit-remaining", remaining.to_string()),
            ("rateLimit-used", check.used.to_string()),
            ("rateLimit-reset", check.reset.as_secs().max(1).to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.insert(name, v);
            }
        }
    }
    if !check.allowed {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "API rate limit exceeded",
        );
        response.headers_mut().extend(out);
        return Err(response);
    }
    Ok(out)
}

fn with_headers(headers: HeaderMap, response: Response) -> Response {
    let mut response = response;
    response.headers_mut().extend(headers);
    response
}

fn parse_bot_id(raw: &str) -> Option<i64> {
    raw.parse().ok()
}

#[derive(Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
}

/// One page of `items` and the cursor of the next (the index, opaque to clients).
fn paginate(
    world: &World,
    items: Vec<Value>,
    cursor: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), Response> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER",
                    "invalid cursor",
                )
            })?,
    };
    let size = world.page_size.max(1);
    let end = (start + size).min(items.len());
    let page = items
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len()).then(|| format!("page-{end}"));
    Ok((page, next))
}

pub async fn get_bot(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(bot_id): Path<String>,
) -> Response {
    let limits = match admit(&state, &headers, "get_bot", READ_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let guard = state.lock();
    let Some(bot) = parse_bot_id(&bot_id).and_then(|id| guard.world.bot(id)) else {
        return with_headers(limits, not_found("Bot"));
    };
    let body = json!({
        "botId": bot.bot_id,
        "botName": bot.bot_name,
        "photoUrl": "https://example.com/bot.png",
        "description": "",
        "administrators": ["admin"],
        "subadministrators": [],
        "allowDomains": bot.allow_domains,
        "enableCallback": false,
        "callbackEvents": [],
        "channelEvents": [],
    });
    with_headers(limits, (StatusCode::OK, axum::Json(body)).into_response())
}

pub async fn list_bot_domains(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(bot_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let limits = match admit(&state, &headers, "list_bot_domains", READ_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let guard = state.lock();
    let Some(bot) = parse_bot_id(&bot_id).and_then(|id| guard.world.bot(id)) else {
        return with_headers(limits, not_found("Bot"));
    };
    let items = bot
        .domains
        .iter()
        .map(|d| json!({"domainId": d, "visible": true, "allowToSelectedMember": false}))
        .collect();
    match paginate(&guard.world, items, q.cursor.as_deref()) {
        Ok((page, next)) => with_headers(
            limits,
            axum::Json(json!({"domains": page, "responseMetaData": {"nextCursor": next}}))
                .into_response(),
        ),
        Err(r) => r,
    }
}

/// The channel, if it exists and the bot is in it.
fn channel_for_bot<'a>(
    world: &'a World,
    bot_id: &str,
    channel_id: &str,
) -> Result<&'a super::world::ChannelDef, Response> {
    let bot = parse_bot_id(bot_id)
        .and_then(|id| world.bot(id))
        .ok_or_else(|| not_found("Bot"))?;
    let channel = world
        .channel(channel_id)
        .ok_or_else(|| not_found("Channel"))?;
    if !channel.bots.contains(&bot.bot_id) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "The bot is not a member of the channel",
        ));
    }
    Ok(channel)
}

pub async fn get_channel(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((bot_id, channel_id)): Path<(String, String)>,
) -> Response {
    let limits = match admit(&state, &headers, "get_channel", READ_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let guard = state.lock();
    match channel_for_bot(&guard.world, &bot_id, &channel_id) {
        Ok(c) => with_headers(
            limits,
            axum::Json(json!({
                "domainId": c.domain_id,
                "channelId": c.channel_id,
                "title": c.title,
                "channelType": {"type": "group"},
            }))
            .into_response(),
        ),
        Err(r) => with_headers(limits, r),
    }
}

pub async fn list_channel_members(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((bot_id, channel_id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let limits = match admit(&state, &headers, "list_channel_members", READ_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let guard = state.lock();
    let channel = match channel_for_bot(&guard.world, &bot_id, &channel_id) {
        Ok(c) => c,
        Err(r) => return with_headers(limits, r),
    };
    let items = channel.members.iter().map(|m| json!(m)).collect();
    match paginate(&guard.world, items, q.cursor.as_deref()) {
        Ok((page, next)) => with_headers(
            limits,
            axum::Json(json!({"members": page, "responseMetaData": {"nextCursor": next}}))
                .into_response(),
        ),
        Err(r) => r,
    }
}

/// Reads `{"content": {...}}` strictly: JSON, no unknown fields, documented types and limits.
fn read_message(headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    let bad = |why: String| error(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", &why);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
        ));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("body must be an object".into()))?;
    only_keys(object, &["content"], "body").map_err(bad)?;
    let content = object
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("content is required".into()))?;
    validate_content(content).map_err(bad)?;
    Ok(Value::Object(content.clone()))
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what} has an unknown field {k}")),
        None => Ok(()),
    }
}

fn text_field(object: &Map<String, Value>, name: &str, max: usize) -> Result<(), String> {
    let text = object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("content.{name} is required and must be a string"))?;
    let chars = text.chars().count();
    if chars == 0 || chars > max {
        return Err(format!(
            "content.{name} must have 1 to {max} characters, not {chars}"
        ));
    }
    Ok(())
}

fn validate_content(content: &Map<String, Value>) -> Result<(), String> {
    let kind = content
        .get("type")
        .and_then(Value::as_str)
        .ok_or("content.type is required")?;
    match kind {
        "text" => {
            only_keys(content, &["type", "text", "i18nTexts"], "text content")?;
            text_field(content, "text", 2000)?;
            if let Some(list) = content.get("i18nTexts") {
                let list = list.as_array().ok_or("i18nTexts must be an array")?;
                for item in list {
                    let item = item.as_object().ok_or("i18nTexts items must be objects")?;
                    only_keys(item, &["language", "text"], "i18nTexts item")?;
                    let language = item
                        .get("language")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !LANGUAGES.contains(&language) {
                        return Err(format!("i18nTexts language {language:?} is not supported"));
                    }
                    text_field(item, "text", 2000)?;
                }
            }
            Ok(())
        }
        "link" => {
            only_keys(
                content,
                &["type", "contentText", "linkText", "link"],
                "link content",
            )?;
            for f in ["contentText", "linkText", "link"] {
                text_field(content, f, 1000)?;
            }
            Ok(())
        }
        "button_template" => {
            only_keys(
                content,
                &["type", "contentText", "actions", "i18nContentTexts"],
                "button_template content",
            )?;
            text_field(content, "contentText", 1000)?;
            let actions = content
                .get("actions")
                .and_then(Value::as_array)
                .ok_or("actions is required")?;
            if actions.is_empty() || actions.len() > 10 {
                return Err(format!(
                    "actions must have 1 to 10 items, not {}",
                    actions.len()
                ));
            }
            for action in actions {
                let action = action.as_object().ok_or("actions items must be objects")?;
                match action.get("type").and_then(Value::as_str) {
                    Some("uri") => {
                        only_keys(action, &["type", "label", "uri"], "uri action")?;
                        text_field(action, "label", 1000)?;
                        text_field(action, "uri", 1000)?;
                    }
                    Some("message") => {
                        only_keys(
                            action,
                            &["type", "label", "text", "postback"],
                            "message action",
                        )?;
                        text_field(action, "label", 1000)?;
                    }
                    other => return Err(format!("action type {other:?} is not supported")),
                }
            }
            Ok(())
        }
        "image" | "flex" | "sticker" | "file" | "carousel" | "image_carousel" | "list_template" => {
            Err(format!(
                "content type {kind} is not supported by this emulator"
            ))
        }
        other => Err(format!("content.type {other:?} is not a message type")),
    }
}

pub async fn send_user_message(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((bot_id, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let limits = match admit(&state, &headers, "send_user_message", SEND_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let content = match read_message(&headers, &body) {
        Ok(c) => c,
        Err(r) => return with_headers(limits, r),
    };
    let mut guard = state.lock();
    let world = &guard.world;
    let Some(bot) = parse_bot_id(&bot_id).and_then(|id| world.bot(id)) else {
        return with_headers(limits, not_found("Bot"));
    };
    let Some(target) = world.user(&user).filter(|u| !u.deleted) else {
        return with_headers(limits, not_found("User"));
    };
    if !world
        .user_domain(target)
        .is_some_and(|d| bot.domains.contains(&d))
    {
        return with_headers(
            limits,
            error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "The bot is not added to the user's domain",
            ),
        );
    }
    let delivered = Delivered {
        bot_id: bot.bot_id,
        kind: "user".into(),
        target: user,
        resolved: target.user_id.clone(),
        content,
    };
    guard.delivered.push(delivered);
    with_headers(limits, StatusCode::CREATED.into_response())
}

pub async fn send_channel_message(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((bot_id, channel_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let limits = match admit(&state, &headers, "send_channel_message", SEND_SCOPES) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let content = match read_message(&headers, &body) {
        Ok(c) => c,
        Err(r) => return with_headers(limits, r),
    };
    let mut guard = state.lock();
    let (bot, resolved) = match channel_for_bot(&guard.world, &bot_id, &channel_id) {
        Ok(c) => (
            parse_bot_id(&bot_id).unwrap_or_default(),
            c.channel_id.clone(),
        ),
        Err(r) => return with_headers(limits, r),
    };
    guard.delivered.push(Delivered {
        bot_id: bot,
        kind: "channel".into(),
        target: channel_id,
        resolved,
        content,
    });
    with_headers(limits, StatusCode::CREATED.into_response())
}
