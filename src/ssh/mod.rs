//! The SSH front door (russh): host key, limits, public-key authentication
//! bound to an `Identity`, and channel plumbing for exec requests.
//!
//! Identity is bound only in `auth_publickey`, which russh calls after the
//! signature check; an unsigned offer never authenticates anyone. This
//! module knows nothing about Docker or AWS: it hands an exec line either
//! to `git/` or to `cmd/` together with the channel's streams.

mod git_bridge;
pub mod hostkey;
mod session;
mod sessions;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::Config;
use russh::{MethodKind, MethodSet};

use crate::state::Rack;

pub use session::{Connection, ConnectionState};
pub use sessions::KeySessions;
pub use stream::PreauthDeadline;

/// The russh configuration: public key only, no probe delay, keepalives.
pub fn config(rack: &Rack, host_key: PrivateKey) -> Arc<Config> {
    Arc::new(Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        keys: vec![host_key],
        // OpenSSH probes with `none` first; answering at once saves a
        // second on every connection without weakening the timing of real
        // rejections.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: rack.settings.limits.max_auth_attempts,
        // Long builds are kept alive by git keepalives and SSH keepalives;
        // a peer that answers neither for this long is gone.
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}
