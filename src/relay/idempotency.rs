//! Idempotency keys, per target: a retried request with the same key and body sends again only
//! the targets that failed, and never one that was delivered (or may have been); once nothing
//! is left to retry it gets the answer as it stands. While the first is still in flight a
//! repeat waits for its answer. The same key with another body is a conflict. Keys are
//! remembered for a window, per notifier.

use std::collections::HashMap;
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

struct Slot {
    body_hash: [u8; 32],
    at: Instant,
    entry: Entry,
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

pub struct Store {
    window: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl Store {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn claim(&self, key: &str, body_hash: [u8; 32]) -> Claim {
        let mut slots = self.lock();
        let now = Instant::now();
        let window = self.window;
        if slots.len() > 10_000 {
            slots.retain(|_, s| {
                now.duration_since(s.at) < window || matches!(s.entry, Entry::InFlight(_))
            });
        }
        if let Some(slot) = slots.get(key)
            && now.duration_since(slot.at) < window
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
            if let Some(slot) = slots.get_mut(key) {
                slot.entry = Entry::InFlight(rx);
            }
            return Claim::Retry(answer, tx);
        }
        let (tx, rx) = watch::channel(None);
        slots.insert(
            key.to_string(),
            Slot {
                body_hash,
                at: now,
                entry: Entry::InFlight(rx),
            },
        );
        Claim::New(tx)
    }

    pub fn finish(&self, key: &str, sender: &watch::Sender<Option<Answer>>, answer: Answer) {
        if let Some(slot) = self.lock().get_mut(key) {
            slot.entry = Entry::Done(answer.clone());
        }
        let _ = sender.send(Some(answer));
    }
}
