//! The relay's requests for a new token, read from Events (see
//! [`token_rejected`](crate::api::contract::token_rejected)): which notifier, and the fingerprint
//! of the token LINE WORKS rejected. Kept in memory; after a restart the Event watch lists them
//! again, and one whose fingerprint is not the stored token's is ignored.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::LineWorksNotifier;
use crate::api::contract::token_rejected;

/// Fingerprints remembered per notifier: more than one relay replica or one renewal can need,
/// few enough that forged Events cannot grow memory.
const PER_NOTIFIER: usize = 4;

#[derive(Default)]
pub struct RefreshRequests {
    /// `namespace/name` → (notifier UID, fingerprints of rejected tokens, newest last).
    by_notifier: Mutex<HashMap<String, (String, Vec<String>)>>,
}

impl RefreshRequests {
    /// Records the request an Event carries if it names a notifier the controller knows (by
    /// namespace, name and UID) and a well-formed fingerprint; returns that notifier to
    /// reconcile.
    pub fn record(
        &self,
        event: &Event,
        notifiers: &Store<LineWorksNotifier>,
    ) -> Option<ObjectRef<LineWorksNotifier>> {
        let regarding = &event.involved_object;
        if event.reason.as_deref() != Some(token_rejected::REASON) {
            return None;
        }
        let ns = regarding.namespace.clone().or_else(|| event.namespace())?;
        // An Event lives in its object's namespace; one elsewhere speaks for nothing.
        if event.namespace().as_deref() != Some(ns.as_str()) {
            return None;
        }
        let reference = ObjectRef::new(regarding.name.as_deref()?).within(&ns);
        let notifier = notifiers.get(&reference)?;
        let uid = notifier.metadata.uid.clone()?;
        if regarding.uid.as_deref() != Some(uid.as_str()) {
            return None;
        }
        let fingerprint = event
            .annotations()
            .get(token_rejected::FINGERPRINT_ANNOTATION)
            .filter(|f| f.len() <= 64 && f.chars().all(|c| c.is_ascii_hexdigit()))?
            .clone();
        let key = format!("{ns}/{}", notifier.name_any());
        let mut map = lock(&self.by_notifier);
        let entry = map.entry(key).or_insert_with(|| (uid.clone(), Vec::new()));
        if entry.0 != uid {
            // The notifier was deleted and created again under the same name.
            *entry = (uid, Vec::new());
        }
        if !entry.1.contains(&fingerprint) {
            entry.1.push(fingerprint);
            let excess = entry.1.len().saturating_sub(PER_NOTIFIER);
            entry.1.drain(..excess);
        }
        Some(reference)
    }

    /// Whether a relay reported the token with this fingerprint rejected for this notifier.
    pub fn requested(&self, key: &str, uid: Option<&str>, fingerprint: &str) -> bool {
        lock(&self.by_notifier)
            .get(key)
            .is_some_and(|(owner, seen)| {
                Some(owner.as_str()) == uid && seen.iter().any(|f| f == fingerprint)
            })
    }

    pub fn forget(&self, key: &str) {
        lock(&self.by_notifier).remove(key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
