//! `/admin/...`: the emulator's own control surface over HTTP (world, faults, delivered messages,
//! request counts, token expiry), for the demo and for tests that run it as a process.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::state::{Fault, Shared};
use super::world::World;

pub(crate) async fn admin_world(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.lock().world.clone())
}
pub(crate) async fn admin_put_world(
    State(s): State<Shared>,
    axum::Json(world): axum::Json<World>,
) -> impl IntoResponse {
    s.lock().world = world;
    StatusCode::NO_CONTENT
}
pub(crate) async fn admin_faults(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.lock().faults.clone())
}
pub(crate) async fn admin_add_fault(
    State(s): State<Shared>,
    axum::Json(fault): axum::Json<Fault>,
) -> impl IntoResponse {
    s.lock().faults.push(fault);
    StatusCode::CREATED
}
pub(crate) async fn admin_clear_faults(State(s): State<Shared>) -> impl IntoResponse {
    s.lock().faults.clear();
    StatusCode::NO_CONTENT
}
pub(crate) async fn admin_messages(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.lock().delivered.clone())
}
pub(crate) async fn admin_clear_messages(State(s): State<Shared>) -> impl IntoResponse {
    s.lock().delivered.clear();
    StatusCode::NO_CONTENT
}
pub(crate) async fn admin_requests(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.lock().requests.clone())
}
pub(crate) async fn admin_expire_tokens(State(s): State<Shared>) -> impl IntoResponse {
    s.lock().access.clear();
    StatusCode::NO_CONTENT
}
pub(crate) async fn admin_revoke_all(State(s): State<Shared>) -> impl IntoResponse {
    let mut guard = s.lock();
    guard.access.clear();
    guard.refresh.clear();
    StatusCode::NO_CONTENT
}
