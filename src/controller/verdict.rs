//! A condition's desired state, before it is merged into status: the one place that turns what
//! went wrong into a reason and a one-line fix.

use crate::api::conditions::{ConditionStatus, ConditionType, Reason};

/// What one condition should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
    /// For a summary (Ready): the reason of the condition that decided it, which its Event
    /// carries, so `kubectl describe` names the real cause (PrivateKeyInvalid, not NotAuthorized).
    pub cause: Option<Reason>,
}

impl Verdict {
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
            cause: None,
        }
    }

    /// The same verdict, decided by a condition whose reason is `cause`.
    pub fn caused_by(self, cause: Reason) -> Self {
        Self {
            cause: Some(cause),
            ..self
        }
    }

    /// The reason its Event carries.
    pub fn event_reason(&self) -> Reason {
        self.cause.unwrap_or(self.reason)
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// An Authorized=False verdict.
pub fn unauthorized(reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict::new(
        ConditionType::Authorized,
        ConditionStatus::False,
        reason,
        message,
    )
}

/// A BotInService=False verdict.
pub fn not_in_service(reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict::new(
        ConditionType::BotInService,
        ConditionStatus::False,
        reason,
        message,
    )
}
