//! rack: a self-hosted, Heroku-style git-push deploy server.
//!
//! See ARCHITECTURE.md for the map of modules and the invariants between them.

pub mod build;
pub mod git;
pub mod names;
pub mod process;
pub mod progress;
