//! rack: a self-hosted, Heroku-style git-push deploy server.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants between them.

pub mod appsettings;
#[cfg(feature = "aws")]
pub mod aws;
pub mod backup;
pub mod build;
pub mod certs;
pub mod client;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod firewall;
pub mod git;
pub mod handover;
pub mod housekeeping;
pub mod images;
pub mod lines;
mod listener;
pub mod metrics;
pub mod names;
pub mod process;
pub mod progress;
pub mod provider;
pub mod release;
pub mod resources;
pub mod router;
pub mod runtime;
pub mod secret_file;
pub mod server;
pub mod ssh;
pub mod state;
pub mod store;
pub mod testhook;
#[cfg(test)]
mod testing;
pub mod timers;
pub mod volumes;

/// What `rack version` says: `rack X.Y.Z`. Test builds (debug assertions)
/// append `RACK_TEST_VERSION_SUFFIX`, so a test can tell two processes of
/// one binary apart across `rack update`; release builds ignore it.
pub fn version() -> String {
    let suffix = if cfg!(debug_assertions) {
        std::env::var("RACK_TEST_VERSION_SUFFIX").unwrap_or_default()
    } else {
        String::new()
    };
    format!(
        "rack {}{}",
        env!("CARGO_PKG_VERSION"),
        names::printable(&suffix)
    )
}
