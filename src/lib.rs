//! rack: a self-hosted, Heroku-style git-push deploy server.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants between them.

pub mod appsettings;
#[cfg(feature = "aws")]
pub mod aws;
pub mod build;
pub mod client;
pub mod cmd;
pub mod config;
pub mod deploy;
pub mod firewall;
pub mod git;
pub mod housekeeping;
pub mod images;
mod listener;
pub mod names;
pub mod process;
pub mod progress;
pub mod provider;
pub mod release;
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
