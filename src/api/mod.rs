//! The Kubernetes API of the operator: the `LineWorksNotifier` custom resource and the vocabulary
//! of its status conditions.

pub mod conditions;
pub mod contract;
pub mod deliverable;
pub mod notifier;

pub use notifier::*;

/// API group of every resource this operator defines.
pub const GROUP: &str = "lineworks-operator.dev";
