//! The bodies of stored messages, by message id. Kept apart from the
//! indexes: queries answer with ids, and bodies are looked up only for the
//! messages an answer shows.

use log_format::events::MessageId;
use serde::{Deserialize, Serialize};

use super::{HashMap, presized};

/// A message's body and the time its sender's server gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub at_ms: u64,
    pub body: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bodies {
    #[serde(deserialize_with = "presized::map")]
    by_id: HashMap<MessageId, Stored>,
}

impl Bodies {
    pub fn insert(&mut self, id: MessageId, stored: Stored) {
        self.by_id.insert(id, stored);
    }

    pub fn remove(&mut self, id: MessageId) {
        self.by_id.remove(&id);
    }

    pub fn get(&self, id: MessageId) -> Option<&Stored> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every body, sorted by id, one per line.
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write;
        let mut all: Vec<_> = self.by_id.iter().collect();
        all.sort_by_key(|(id, _)| **id);
        let mut out = String::new();
        for (id, s) in all {
            let _ = writeln!(out, "body {id} {s:?}");
        }
        out
    }
}
