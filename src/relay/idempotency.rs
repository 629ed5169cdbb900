//! Idempotency keys, per target: a retried request with the same key and body sends again only
//! the targets that failed, and never one that was delivered (or may have been); once nothing
//! is left to retry it gets the answer as it stands. While the first is still in flight a
//! repeat waits for its answer. The same key with another body is a conflict. Keys are
//! remembered for a window, per notifier, and bounded: at most [`MAX_KEYS_PER_NOTIFIER`] per
//! notifier and [`MAX_KEYS`] in all, the oldest forgotten first; expiry walks a queue in claim
//! order, so no request scans the store. A slot whose delivery task vanished is free again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::api::{NotificationResult, TargetStatus};

/// The final answer to a notification.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub result: NotificationResult,
}

impl Answer {
    /// Whether a repeat of this request has something to send again.
    pub fn has_failed_targets(&self) -> bool {
        self.result
            .targets
            .iter()
            .any(|t| t.status == TargetStatus::Failed)
    }
}

enum Entry {
    InFlight(watch::Receiver<Option<Answer>>),
    Done(Answer),
}

impl Entry {
    /// In flight with no one left to answer: the delivery task is gone (it panicked or was
    /// cancelled) without finishing. Such a slot is treated as free, not "in flight" forever.
    fn abandoned(&self) -> bool {
        matches!(self, Entry::InFlight(rx) if rx.has_changed().is_err() && rx.borrow().is_none())
    }
}

struct Slot {
    body_hash: [u8; 32],
    at: Instant,
    entry: Entry,
}

/// A key as remembered: its SHA-256, so a 255-character key costs 32 bytes (twice: map and
/// queue) rather than its length.
type KeyId = [u8; 32];

fn key_id(key: &str) -> KeyId {
    Sha256::digest(key.as_bytes()).into()
}

/// One notifier's keys, and their claim order for expiry and eviction.
#[derive(Default)]
struct Keys {
    slots: HashMap<KeyId, Slot>,
    /// (claimed at, key), oldest first; a key claimed again after eviction appears twice, and
    /// the stale copy is skipped when its time does not match the slot's.
    order: VecDeque<(Instant, KeyId)>,
}

impl Keys {
    /// Drops expired slots from the front, then the oldest ones beyond `cap`. A slot whose
    /// delivery is still running is never dropped (its repeat must wait for it).
    fn prune(&mut self, now: Instant, window: Duration, cap: usize) {
        let mut rotated = 0;
        while let Some((at, key)) = self.order.front() {
            let over = self.slots.len() > cap;
            let expired = now.duration_since(*at) >= window;
            if !over && !expired {
                break;
            }
            let current = self.slots.get(key).map(|s| (s.at == *at, s));
            match current {
                // A stale queue entry: the key was claimed again later.
                None | Some((false, _)) => {}
                Some((true, slot))
                    if matches!(slot.entry, Entry::InFlight(_)) && !slot.entry.abandoned() =>
                {
                    // Still delivering (at most the relay's deadline): keep it, look again later
                    // — once per prune, so a queue of running deliveries is not spun through.
                    if let Some(front) = self.order.pop_front() {
                        self.order.push_back(front);
                    }
                    rotated += 1;
                    if rotated >= self.order.len() {
                        break;
                    }
                    continue;
                }
                Some((true, _)) => {
                    self.slots.remove(key);
                }
            }
            self.order.pop_front();
        }
    }
}

/// What to do with a keyed request.
pub enum Claim {
    /// First time: deliver, then call [`Store::finish`] with the sender.
    New(watch::Sender<Option<Answer>>),
    /// Seen with the same body: this is (or will be) the answer.
    Repeat(watch::Receiver<Option<Answer>>),
    /// Seen with the same body and answered with nothing left to retry.
    Done(Answer),
    /// Seen with the same body, and some targets failed: send those again (only those), then
    /// call [`Store::finish`] with the merged answer.
    Retry(Answer, watch::Sender<Option<Answer>>),
    /// Seen with a different body.
    Conflict,
}

/// Keys a notifier may have remembered at once; the oldest are forgotten first.
pub const MAX_KEYS_PER_NOTIFIER: usize = 10_000;
/// Keys remembered across all notifiers; beyond it the notifier holding the most loses its
/// oldest. Keys are kept as SHA-256 digests, so a full store is about 50 MiB whatever the keys'
/// length (measured: +46 MiB RSS for 100,000 answered keys).
pub const MAX_KEYS: usize = 100_000;

pub struct Store {
    window: Duration,
    per_notifier: usize,
    total: usize,
    notifiers: Mutex<HashMap<String, Keys>>,
}

pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl Store {
    pub fn new(window: Duration) -> Self {
        Self::with_limits(window, MAX_KEYS_PER_NOTIFIER, MAX_KEYS)
    }

    pub fn with_limits(window: Duration, per_notifier: usize, total: usize) -> Self {
        Self {
            window,
            per_notifier: per_notifier.max(1),
            total: total.max(1),
            notifiers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Keys>> {
        match self.notifiers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Keys remembered now, over all notifiers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().values().map(|k| k.slots.len()).sum()
    }

    /// Claims `key` of `notifier` (`namespace/name`).
    pub fn claim(&self, notifier: &str, key: &str, body_hash: [u8; 32]) -> Claim {
        let mut notifiers = self.lock();
        let now = Instant::now();
        let keys = notifiers.entry(notifier.to_string()).or_default();
        keys.prune(now, self.window, self.per_notifier);
        let key = key_id(key);
        if let Some(slot) = keys.slots.get(&key)
            && now.duration_since(slot.at) < self.window
            && !slot.entry.abandoned()
        {
            if slot.body_hash != body_hash {
                return Claim::Conflict;
            }
            let answer = match &slot.entry {
                Entry::InFlight(rx) => return Claim::Repeat(rx.clone()),
                Entry::Done(answer) if !answer.has_failed_targets() => {
                    return Claim::Done(answer.clone());
                }
                Entry::Done(answer) => answer.clone(),
            };
            let (tx, rx) = watch::channel(None);
            if let Some(slot) = keys.slots.get_mut(&key) {
                slot.entry = Entry::InFlight(rx);
            }
            return Claim::Retry(answer, tx);
        }
        let (tx, rx) = watch::channel(None);
        keys.slots.insert(
            key,
            Slot {
                body_hash,
                at: now,
                entry: Entry::InFlight(rx),
            },
        );
        keys.order.push_back((now, key));
        keys.prune(now, self.window, self.per_notifier);
        let total: usize = notifiers.values().map(|k| k.slots.len()).sum();
        if total > self.total {
            // The notifier holding the most keys gives up its oldest: one tenant's flood of
            // keys cannot make the relay forget another's.
            let excess = total - self.total;
            if let Some(biggest) = notifiers.values_mut().max_by_key(|k| k.slots.len()) {
                let cap = biggest.slots.len().saturating_sub(excess);
                biggest.prune(now, self.window, cap);
            }
        }
        notifiers.retain(|_, k| !k.slots.is_empty());
        Claim::New(tx)
    }

    pub fn finish(
        &self,
        notifier: &str,
        key: &str,
        sender: &watch::Sender<Option<Answer>>,
        answer: Answer,
    ) {
        if let Some(slot) = self
            .lock()
            .get_mut(notifier)
            .and_then(|k| k.slots.get_mut(&key_id(key)))
        {
            slot.entry = Entry::Done(answer.clone());
        }
        let _ = sender.send(Some(answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::api::{Outcome, Target};

    fn delivered() -> Answer {
        Answer {
            status: 200,
            result: NotificationResult {
                outcome: Outcome::Delivered,
                fallback: false,
                targets: vec![Target {
                    kind: "user".into(),
                    id: "hogehoge@testtest".into(),
                    status: TargetStatus::Delivered,
                    code: None,
                    description: None,
                }],
            },
        }
    }

    /// Claims and finishes `key` as delivered.
    fn deliver(store: &Store, notifier: &str, key: &str) {
        match store.claim(notifier, key, body_hash(key.as_bytes())) {
            Claim::New(tx) => store.finish(notifier, key, &tx, delivered()),
            _ => panic!("{key} was not new"),
        }
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn a_flood_of_keys_is_bounded_per_notifier_and_in_all_and_claims_stay_cheap() {
        let store = Store::new(Duration::from_secs(24 * 3600));
        let before = rss_kib();
        deliver(&store, "team-b/front", "b-visit-1");
        let key = |i: usize| format!("{i:0>200}");
        let batch = |from: usize| {
            let started = Instant::now();
            for i in from..from + 1_000 {
                deliver(&store, &format!("team-a/n{}", i % 20), &key(i));
            }
            started.elapsed()
        };
        let first = batch(0);
        for from in (1_000..99_000).step_by(1_000) {
            batch(from);
        }
        let last = batch(99_000);
        for i in 100_000..120_000 {
            deliver(&store, "team-a/n0", &key(i));
        }
        let after = rss_kib();
        eprintln!(
            "120,000 keys of 200 characters: {} kept, RSS +{:.1} MiB; 1,000 claims took {first:?} into an empty store, {last:?} into a full one",
            store.len(),
            after.saturating_sub(before) as f64 / 1024.0
        );
        assert!(store.len() <= MAX_KEYS, "{}", store.len());
        let per_notifier = store.lock().get("team-a/n0").map_or(0, |k| k.slots.len());
        assert!(per_notifier <= MAX_KEYS_PER_NOTIFIER, "{per_notifier}");
        // No scan of the store per claim: a full store costs about what an empty one does.
        assert!(
            last < first * 10,
            "claims got slower as the store filled: {first:?} → {last:?}"
        );
        // Another tenant's key survived the flood.
        assert!(matches!(
            store.claim("team-b/front", "b-visit-1", body_hash(b"b-visit-1")),
            Claim::Done(_)
        ));
    }

    #[test]
    fn a_slot_whose_delivery_vanished_is_free_again() {
        let store = Store::new(Duration::from_secs(60));
        let Claim::New(tx) = store.claim("ns/n", "k", body_hash(b"x")) else {
            panic!("new");
        };
        assert!(matches!(
            store.claim("ns/n", "k", body_hash(b"x")),
            Claim::Repeat(_)
        ));
        drop(tx); // the delivery task died without an answer
        assert!(matches!(
            store.claim("ns/n", "k", body_hash(b"x")),
            Claim::New(_)
        ));
    }

    #[test]
    fn a_delivery_in_progress_is_never_forgotten_to_make_room() {
        let store = Store::with_limits(Duration::from_secs(60), 2, 100);
        let Claim::New(_running) = store.claim("ns/n", "first", body_hash(b"1")) else {
            panic!("new");
        };
        for i in 0..10 {
            deliver(&store, "ns/n", &format!("later-{i}"));
        }
        assert!(matches!(
            store.claim("ns/n", "first", body_hash(b"1")),
            Claim::Repeat(_)
        ));
        assert!(store.len() <= 3, "{}", store.len());
    }

    #[test]
    fn keys_expire_after_the_window() {
        let store = Store::new(Duration::ZERO);
        deliver(&store, "ns/n", "k");
        assert!(matches!(
            store.claim("ns/n", "k", body_hash(b"k")),
            Claim::New(_)
        ));
    }
}
