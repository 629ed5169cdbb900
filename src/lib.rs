//! lineworks-operator: LINE WORKS visitor notifications, declared as Kubernetes objects.

pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
#[cfg(feature = "local-control-plane")]
pub mod demo;
pub mod endpoints;
pub(crate) mod http_server;
pub mod kube_client;
mod oauth_callback;
pub mod reference;
pub mod relay;
pub mod telemetry;
pub mod templates;
pub mod watch_trim;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "lineworks-operator";
