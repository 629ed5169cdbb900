//! `/oauth2/v2.0`: authorize (consent page), token (JWT bearer, authorization code, refresh with
//! rotation on or off) and revoke, rejecting what LINE WORKS would reject: non-form bodies,
//! unknown clients, wrong secrets, bad or expired assertions, reused or expired codes, unknown,
//! expired or rotated-away refresh tokens, scopes the app was not granted.
//!
//! Longer than 500 lines because it is one OAuth server: the three grants share client
//! authentication, scope checks and token minting, and reading them side by side is how the
//! rejections are kept faithful.

// Handlers return the HTTP answer as the error of their helpers; it is built once per request,
// on the way out, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::json;

use super::state::{AccessGrant, CodeGrant, RefreshGrant, Shared, Subject, new_token};
use super::world::AppDef;

/// Clock skew tolerated on `iat`/`exp`.
const SKEW_SECS: u64 = 60;
/// Longest assertion lifetime accepted (samples all use 60 minutes).
const MAX_ASSERTION_SECS: u64 = 3600;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The form, read strictly: `application/x-www-form-urlencoded`, every key once.
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed form body",
        )
    })?;
    let mut form = HashMap::new();
    for (k, v) in pairs {
        if form.insert(k.clone(), v).is_some() {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {k} appears more than once"),
            ));
        }
    }
    Ok(form)
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Response> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{name} is required"),
            )
        })
}

/// The app named by client_id, if the secret matches.
fn authenticate_client(state: &Shared, form: &HashMap<String, String>) -> Result<AppDef, Response> {
    let client_id = field(form, "client_id")?;
    let secret = field(form, "client_secret")?;
    let guard = state.lock();
    match guard.world.app(client_id) {
        Some(app) if app.client_secret == secret => Ok(app.clone()),
        _ => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )),
    }
}

/// The form of a token or revoke request, and the app whose credentials it carries.
fn authenticated_form(
    state: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, AppDef), Response> {
    let form = read_form(headers, body)?;
    let app = authenticate_client(state, &form)?;
    Ok((form, app))
}

fn parse_scopes(scope: &str) -> Vec<String> {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn check_scopes(app: &AppDef, scopes: &[String]) -> Result<(), Response> {
    match scopes.iter().find(|s| !app.scopes.contains(s)) {
        None if !scopes.is_empty() => Ok(()),
        None => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required",
        )),
        Some(s) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("scope {s} is not registered on the app"),
        )),
    }
}

pub async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (form, app) = match authenticated_form(&state, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let grant_type = match field(&form, "grant_type") {
        Ok(g) => g,
        Err(r) => return r,
    };
    let result = match grant_type {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => jwt_grant(&app, &form),
        "authorization_code" => code_grant(&state, &app, &form),
        "refresh_token" => return refresh_grant(&state, &app, &form),
        other => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other:?} is not supported"),
        )),
    };
    match result {
        Ok((subject, scopes)) => {
            let subject_for_access = subject.clone();
            let refresh = new_token("rt-");
            state.lock().refresh.insert(
                refresh.clone(),
                RefreshGrant {
                    client_id: app.client_id.clone(),
                    scopes: scopes.clone(),
                    subject,
                    expires_at: SystemTime::now()
                        + Duration::from_secs(app.refresh_token_lifetime_secs),
                    rotated: false,
                },
            );
            issue(&state, &app, &scopes, subject_for_access, Some(refresh))
        }
        Err(r) => r,
    }
}

/// Issues an access token (and returns the refresh token given, if any).
fn issue(
    state: &Shared,
    app: &AppDef,
    scopes: &[String],
    subject: Subject,
    refresh: Option<String>,
) -> Response {
    let access = new_token("at-");
    state.lock().access.insert(
        access.clone(),
        AccessGrant {
            client_id: app.client_id.clone(),
            scopes: scopes.to_vec(),
            subject,
            expires_at: SystemTime::now() + Duration::from_secs(app.access_token_lifetime_secs),
        },
    );
    let expires_in = if app.expires_in_as_string {
        json!(app.access_token_lifetime_secs.to_string())
    } else {
        json!(app.access_token_lifetime_secs)
    };
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scopes.join(" "),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
}

/// Checks an RS256 JWT's signature with the app's public key and reads its claims. Done here with
/// ring directly, not through the client's JWT crypto provider, so a mistake in the client's
/// signing is caught instead of shared.
fn verify_assertion(assertion: &str, key: &DecodingKey) -> Result<AssertionClaims, String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    if header.alg != Algorithm::RS256 {
        return Err(format!("alg must be RS256, not {:?}", header.alg));
    }
    let (message, signature) = assertion
        .rsplit_once('.')
        .ok_or_else(|| "not a JWT".to_string())?;
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .map_err(|_| "the signature is not base64url".to_string())?;
    let der = key.try_get_as_bytes().map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| "InvalidSignature".to_string())?;
    // Every claim is required (the struct has no optional fields).
    jsonwebtoken::dangerous::insecure_decode::<AssertionClaims>(assertion)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

fn jwt_grant(
    app: &AppDef,
    form: &HashMap<String, String>,
) -> Result<(Subject, Vec<String>), Response> {
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let assertion = field(form, "assertion")?;
    let scopes = parse_scopes(field(form, "scope")?);
    check_scopes(app, &scopes)?;
    let pem = app
        .public_key_pem
        .as_deref()
        .ok_or_else(|| invalid("the app has no Service Account key"))?;
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| invalid("the app's public key is unusable"))?;
    let claims = verify_assertion(assertion, &key)
        .map_err(|why| invalid(&format!("assertion rejected: {why}")))?;
    if claims.iss != app.client_id {
        return Err(invalid(
            "assertion rejected: iss is not the app's Client ID",
        ));
    }
    let now = now_secs();
    if claims.exp + SKEW_SECS <= now {
        return Err(invalid("assertion rejected: expired"));
    }
    if claims.iat > now + SKEW_SECS {
        return Err(invalid("assertion iat is in the future"));
    }
    if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_ASSERTION_SECS + SKEW_SECS {
        return Err(invalid(
            "assertion exp must be after iat and at most 60 minutes later (seconds, not milliseconds)",
        ));
    }
    if !app.service_accounts.contains(&claims.sub) {
        return Err(invalid(
            "assertion sub is not a Service Account of this app",
        ));
    }
    Ok((Subject::ServiceAccount(claims.sub), scopes))
}

fn code_grant(
    state: &Shared,
    app: &AppDef,
    form: &HashMap<String, String>,
) -> Result<(Subject, Vec<String>), Response> {
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let code = field(form, "code")?;
    let mut guard = state.lock();
    let grant = guard
        .codes
        .get_mut(code)
        .ok_or_else(|| invalid("unknown authorization code"))?;
    if grant.client_id != app.client_id {
        return Err(invalid("the code was issued to another client"));
    }
    if grant.used {
        return Err(invalid("the authorization code was already used"));
    }
    if SystemTime::now() >= grant.expires_at {
        return Err(invalid("the authorization code expired (10 minutes)"));
    }
    if let Some(redirect) = form.get("redirect_uri")
        && *redirect != grant.redirect_uri
    {
        return Err(invalid("redirect_uri differs from the one authorized"));
    }
    grant.used = true;
    Ok((grant.subject.clone(), grant.scopes.clone()))
}

fn refresh_grant(state: &Shared, app: &AppDef, form: &HashMap<String, String>) -> Response {
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let token = match field(form, "refresh_token") {
        Ok(t) => t.to_string(),
        Err(r) => return r,
    };
    let mut guard = state.lock();
    let Some(grant) = guard.refresh.get(&token).cloned() else {
        return invalid("unknown or revoked refresh token");
    };
    if grant.client_id != app.client_id {
        return invalid("the refresh token was issued to another client");
    }
    if SystemTime::now() >= grant.expires_at {
        guard.refresh.remove(&token);
        return invalid("the refresh token expired");
    }
    let rotated = if app.refresh_token_rotation {
        // The old token stops working the moment a new one is issued (or after the reuse window).
        if app.refresh_token_reuse_secs == 0 {
            guard.refresh.remove(&token);
        } else if let Some(old) = guard.refresh.get_mut(&token) {
            let until = SystemTime::now() + Duration::from_secs(app.refresh_token_reuse_secs);
            old.expires_at = old.expires_at.min(until);
            old.rotated = true;
        }
        let new = new_token("rt-");
        guard.refresh.insert(
            new.clone(),
            RefreshGrant {
                expires_at: SystemTime::now()
                    + Duration::from_secs(app.refresh_token_lifetime_secs),
                rotated: false,
                ..grant.clone()
            },
        );
        Some(new)
    } else {
        None
    };
    guard.refreshes += 1;
    drop(guard);
    issue(state, app, &grant.scopes, grant.subject.clone(), rotated)
}

pub async fn revoke(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (form, app) = match authenticated_form(&state, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let token = match field(&form, "token") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut guard = state.lock();
    let owned_access = guard
        .access
        .get(token)
        .is_some_and(|g| g.client_id == app.client_id);
    let owned_refresh = guard
        .refresh
        .get(token)
        .is_some_and(|g| g.client_id == app.client_id);
    if owned_access {
        guard.access.remove(token);
    }
    if owned_refresh {
        guard.refresh.remove(token);
    }
    StatusCode::OK.into_response()
}

#[derive(Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    response_type: Option<String>,
    state: Option<String>,
}

/// Checks an authorization request against the app's registration.
fn check_authorize(state: &Shared, q: &AuthorizeQuery) -> Result<(AppDef, Vec<String>), String> {
    let client_id = q.client_id.as_deref().ok_or("client_id is missing")?;
    let app = state
        .lock()
        .world
        .app(client_id)
        .cloned()
        .ok_or_else(|| format!("no app has Client ID {client_id}"))?;
    let redirect = q.redirect_uri.as_deref().ok_or("redirect_uri is missing")?;
    if !app.redirect_uris.iter().any(|r| r == redirect) {
        return Err(format!(
            "redirect_uri {redirect} is not registered on the app"
        ));
    }
    if q.response_type.as_deref() != Some("code") {
        return Err("response_type must be code".into());
    }
    let scopes = parse_scopes(q.scope.as_deref().unwrap_or_default());
    if scopes.is_empty() {
        return Err("scope is missing".into());
    }
    if let Some(s) = scopes.iter().find(|s| !app.scopes.contains(s)) {
        return Err(format!("scope {s} is not registered on the app"));
    }
    Ok((app, scopes))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The consent page: pick an administrator account and allow.
pub async fn authorize_page(
    State(state): State<Shared>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let (app, scopes) = match check_authorize(&state, &q) {
        Ok(x) => x,
        Err(why) => {
            return page(
                StatusCode::BAD_REQUEST,
                "LINE WORKS: invalid request",
                &escape(&why),
            );
        }
    };
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let form = format!(
        "<p>App {} asks for: {}</p><form method=\"post\" action=\"authorize\">{}{}{}{}{}\
         <label>Login ID <input id=\"login_id\" name=\"login_id\" placeholder=\"admin@example\"></label>\
         <button id=\"allow\" type=\"submit\">Allow</button></form>",
        escape(&app.client_id),
        escape(&scopes.join(", ")),
        hidden("client_id", &app.client_id),
        hidden(
            "redirect_uri",
            q.redirect_uri.as_deref().unwrap_or_default()
        ),
        hidden("scope", &scopes.join(" ")),
        hidden("response_type", "code"),
        hidden("state", q.state.as_deref().unwrap_or_default()),
    );
    page(StatusCode::OK, "LINE WORKS login", &form)
}

#[derive(Deserialize)]
pub struct ConsentForm {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    response_type: Option<String>,
    state: Option<String>,
    login_id: Option<String>,
}

/// The consent form's submit: only a super or sub administrator may authorize.
pub async fn authorize_submit(State(state): State<Shared>, Form(f): Form<ConsentForm>) -> Response {
    let q = AuthorizeQuery {
        client_id: f.client_id,
        redirect_uri: f.redirect_uri,
        scope: f.scope,
        response_type: f.response_type,
        state: f.state,
    };
    let (app, scopes) = match check_authorize(&state, &q) {
        Ok(x) => x,
        Err(why) => {
            return page(
                StatusCode::BAD_REQUEST,
                "LINE WORKS: invalid request",
                &escape(&why),
            );
        }
    };
    let login = f.login_id.unwrap_or_default();
    let mut guard = state.lock();
    let Some(user) = guard.world.user(&login).cloned() else {
        return page(
            StatusCode::UNAUTHORIZED,
            "LINE WORKS: login failed",
            "unknown login ID",
        );
    };
    let redirect = q.redirect_uri.unwrap_or_default();
    let separator = if redirect.contains('?') { '&' } else { '?' };
    if !user.admin || user.deleted {
        // As RFC 6749 4.1.2.1 has it: the refusal goes back to the client's redirect URI. (What
        // LINE WORKS does for a member who is not an administrator is not documented.)
        let query = serde_urlencoded::to_string([
            ("error", "access_denied"),
            (
                "error_description",
                "only a super or sub administrator can authorize this app",
            ),
            ("state", q.state.as_deref().unwrap_or_default()),
        ])
        .unwrap_or_default();
        return (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{redirect}{separator}{query}"))],
        )
            .into_response();
    }
    let code = new_token("code-");
    let code_lifetime = Duration::from_secs(guard.world.authorization_code_lifetime_secs);
    guard.codes.insert(
        code.clone(),
        CodeGrant {
            client_id: app.client_id,
            redirect_uri: redirect.clone(),
            scopes,
            subject: Subject::User(user.user_id),
            expires_at: SystemTime::now() + code_lifetime,
            used: false,
        },
    );
    let query = serde_urlencoded::to_string([
        ("code", code.as_str()),
        ("state", q.state.as_deref().unwrap_or_default()),
    ])
    .unwrap_or_default();
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{redirect}{separator}{query}"))],
    )
        .into_response()
}
