//! Condition types and reasons of a `LineWorksNotifier`: the vendor's troubleshooting checklist,
//! made machine-readable. The strings are API: tools and people match on them, so they never change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Declares an enum whose string form is each variant's own name, so the two cannot drift.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The wire form, e.g. in `status.conditions[].reason`.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)* }
            }

            /// The value whose wire form is `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// The condition types a notifier reports.
    ConditionType {
        /// The operator holds a valid OAuth token for the app.
        Authorized,
        /// The bot exists, is added to the domain, and is in the configured talk room.
        BotInService,
        /// The most recent declarative test notification reached every target.
        TestNotified,
        /// Summary: the notifier can deliver visitor notifications.
        Ready,
        /// For GitOps tools (kstatus): the operator is still working the notifier out. Present
        /// only while True.
        Reconciling,
        /// For GitOps tools (kstatus): a person must act; the reason and message say what.
        /// Present only while True.
        Stalled,
    }
}

named_enum! {
    /// Status of a condition, as Kubernetes spells it.
    ConditionStatus {
        True,
        False,
        Unknown,
    }
}

impl ConditionStatus {
    /// Reads `status.conditions[].status`; anything but True or False means Unknown, as the
    /// Kubernetes API conventions say.
    pub fn of(wire: &str) -> Self {
        Self::parse(wire).unwrap_or(Self::Unknown)
    }
}

/// Typed reads of a stored condition, so a misspelt status or reason fails to compile.
pub trait ConditionExt {
    fn condition_status(&self) -> ConditionStatus;
    /// The reason, if it is one of ours.
    fn condition_reason(&self) -> Option<Reason>;

    fn is(&self, status: ConditionStatus) -> bool {
        self.condition_status() == status
    }
}

impl ConditionExt for Condition {
    fn condition_status(&self) -> ConditionStatus {
        ConditionStatus::of(&self.status)
    }

    fn condition_reason(&self) -> Option<Reason> {
        Reason::parse(&self.reason)
    }
}

named_enum! {
    /// Why a condition has its status. Each False reason maps to one thing a person fixes.
    Reason {
        // Authorized
        TokenValid,
        CredentialsSecretMissing,
        CredentialsSecretNotAllowed,
        EndpointNotAllowed,
        CredentialsKeyMissing,
        InvalidClientCredentials,
        AuthorizationRequired,
        AuthorizationDenied,
        RefreshTokenExpired,
        ReauthorizationRequired,
        ScopeMissing,
        PrivateKeyInvalid,
        TokenEndpointUnavailable,
        // BotInService
        BotReachable,
        BotNotFound,
        BotNotInDomain,
        BotNotInRoom,
        RoomNotFound,
        Suspended,
        // TestNotified
        NotRequested,
        TestNotificationDelivered,
        TestNotificationFailed,
        DefaultUserNotFound,
        // Ready
        NotifierReady,
        Reconciling,
        Stalled,
        NotAuthorized,
        BotNotInService,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_the_variant_names() {
        assert_eq!(Reason::BotNotInDomain.to_string(), "BotNotInDomain");
        assert_eq!(ConditionType::ALL.len(), 6);
        assert_eq!(ConditionType::Ready.as_str(), "Ready");
        assert_eq!(Reason::parse("BotNotInRoom"), Some(Reason::BotNotInRoom));
        assert_eq!(Reason::parse("botNotInRoom"), None);
        assert_eq!(ConditionStatus::of("True"), ConditionStatus::True);
        assert_eq!(ConditionStatus::of("true"), ConditionStatus::Unknown);
        assert_eq!(ConditionStatus::of(""), ConditionStatus::Unknown);
    }
}
