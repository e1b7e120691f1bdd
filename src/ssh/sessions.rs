//! Live sessions (exec requests running), counted per connection and per
//! key: one connection can multiplex many channels (OpenSSH's
//! ControlMaster), and one key can open many connections, so neither alone
//! bounds what a key runs at once.
//!
//! Knows nothing of what a session runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The rack-wide count of live sessions per key name.
#[derive(Debug)]
pub struct KeySessions {
    max_per_key: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl KeySessions {
    pub fn new(max_per_key: usize) -> Arc<KeySessions> {
        Arc::new(KeySessions {
            max_per_key,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a session of `key` on a connection whose live sessions are
    /// `conn`; `Err(limit)` when the key already runs its limit.
    pub fn start(
        self: &Arc<Self>,
        key: &str,
        conn: &Arc<AtomicUsize>,
    ) -> Result<SessionGuard, usize> {
        let mut counts = self.counts.lock().expect("session counts poisoned");
        let n = counts.entry(key.to_string()).or_insert(0);
        if *n >= self.max_per_key {
            return Err(self.max_per_key);
        }
        *n += 1;
        conn.fetch_add(1, Ordering::SeqCst);
        Ok(SessionGuard {
            owner: self.clone(),
            key: key.to_string(),
            conn: conn.clone(),
        })
    }
}

/// One live session; dropping it ends it in both counts.
#[derive(Debug)]
pub struct SessionGuard {
    owner: Arc<KeySessions>,
    key: String,
    conn: Arc<AtomicUsize>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.conn.fetch_sub(1, Ordering::SeqCst);
        let mut counts = self.owner.counts.lock().expect("session counts poisoned");
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
