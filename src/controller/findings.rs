//! What one reconcile's steps found, turned into status at the end.

use std::time::Duration;

use super::diagnosis::Diagnosis;
use super::verdict::Verdict;
use crate::api::conditions::ConditionType;
use crate::api::{LineWorksNotifier, LineWorksNotifierStatus};

pub struct Findings {
    /// At most one per condition type; later steps replace earlier verdicts of the same type.
    pub verdicts: Vec<Verdict>,
    /// A step hit something that may pass by itself (LINE WORKS down, rate limited): back off.
    pub transient: bool,
    /// When to look again although nothing changed (the token's renewal time).
    pub requeue: Option<Duration>,
    /// The status to write, starting from the stored one.
    pub status: LineWorksNotifierStatus,
}

impl Findings {
    pub fn new(notifier: &LineWorksNotifier) -> Self {
        let mut status = notifier.status.clone().unwrap_or_default();
        status.token_secret_name = Some(notifier.token_secret_name());
        Self {
            verdicts: Vec::new(),
            transient: false,
            requeue: None,
            status,
        }
    }

    pub fn set(&mut self, verdict: Verdict) {
        self.verdicts.retain(|v| v.type_ != verdict.type_);
        self.verdicts.push(verdict);
    }

    /// Records a diagnosis: its verdicts, and whether it may pass by itself.
    pub fn diagnose(&mut self, diagnosis: Diagnosis) {
        self.transient |= diagnosis.passing;
        for verdict in diagnosis.verdicts {
            self.set(verdict);
        }
    }

    pub fn get(&self, type_: ConditionType) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.type_ == type_)
    }

    pub fn is_true(&self, type_: ConditionType) -> bool {
        self.get(type_).is_some_and(Verdict::is_true)
    }
}
