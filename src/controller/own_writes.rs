//! The resourceVersions this controller's own writes replaced, per notifier. The watch delivers a
//! write some milliseconds after it returned, and a reconcile woken meanwhile (the token Secret it
//! just created wakes it at once) is handed the copy the write replaced. A reconcile handed one of
//! these versions reads the object again instead of working from it (and writing status from it).

use std::collections::HashMap;
use std::sync::Mutex;

/// A reconcile writes at most twice (finalizer, status): the last few versions are enough.
const KEPT: usize = 4;

#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, Vec<String>>>);

impl OwnWrites {
    /// Notes that this controller wrote notifier `key` over version `replaced`.
    pub fn wrote_over(&self, key: &str, replaced: Option<String>) {
        let Some(replaced) = replaced else { return };
        let mut map = self.lock();
        let versions = map.entry(key.to_string()).or_default();
        if versions.len() >= KEPT {
            versions.remove(0);
        }
        versions.push(replaced);
    }

    /// Whether a copy at `version` is older than this controller's own last writes.
    pub fn superseded(&self, key: &str, version: Option<&str>) -> bool {
        let mut map = self.lock();
        let Some(versions) = map.get(key) else {
            return false;
        };
        if version.is_some_and(|v| versions.iter().any(|s| s == v)) {
            return true;
        }
        // The cache has caught up (or someone else wrote since): nothing left to remember.
        map.remove(key);
        false
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_a_write_replaced_is_superseded_until_a_newer_one_is_seen() {
        let writes = OwnWrites::default();
        assert!(!writes.superseded("ns/a", Some("1")));
        writes.wrote_over("ns/a", Some("1".into())); // the finalizer, over version 1
        writes.wrote_over("ns/a", Some("2".into())); // status, over version 2
        assert!(writes.superseded("ns/a", Some("1")));
        assert!(writes.superseded("ns/a", Some("2")));
        assert!(!writes.superseded("ns/b", Some("2")), "per notifier");
        // Version 3 (what status wrote) arrives: the cache has caught up and the entry goes.
        assert!(!writes.superseded("ns/a", Some("3")));
        assert!(!writes.superseded("ns/a", Some("1")));
    }

    #[test]
    fn only_the_last_few_versions_are_kept() {
        let writes = OwnWrites::default();
        for v in 0..10 {
            writes.wrote_over("ns/a", Some(v.to_string()));
        }
        assert!(writes.superseded("ns/a", Some("9")));
        assert!(writes.superseded("ns/a", Some("6")));
        assert!(!writes.superseded("ns/a", Some("5")));
    }
}
