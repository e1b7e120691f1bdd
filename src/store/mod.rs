//! Durable state: keys, apps and their settings and domains, config
//! versions (ciphertext only), builds, releases with the deploy journal,
//! resources and their links (passwords sealed), and the audit trail. `traits.rs` is the interface (`Store`, composed of
//! one trait per kind of state), `records.rs` the records it hands out,
//! `sqlite/` the local provider's backend (the S3 backend lives in
//! `aws::store`), `conformance.rs` the tests every backend must pass.
//!
//! A store keeps what it is given. It never sees plaintext config values
//! (`release/` encrypts before calling it) and knows nothing about SSH, git
//! or Docker.

mod records;
mod sqlite;
mod traits;

#[cfg(test)]
pub(crate) mod conformance;

pub use records::{
    now_rfc3339, AppRecord, AppSettings, AppState, BuildRecord, BuildStatus, Commit, ConfigVersion,
    Event, EventFilter, Formation, KeyRecord, ParseRecordError, Procfile, RefUpdateJournal,
    ReleaseRecord, ReleaseStatus, ResourceRecord, SealedValue,
};
pub use sqlite::SqliteStore;
pub use traits::{
    AppStore, BuildStore, ConfigStore, EventStore, KeyStore, ReleaseStore, ResourceStore, Store,
    TimerStore, VolumeStore,
};

/// One import for code that calls store methods on a concrete store
/// (`SqliteStore`, `S3Store`) rather than on `dyn Store`:
/// `use crate::store::prelude::*;`.
pub mod prelude {
    pub use super::traits::{
        AppStore, BuildStore, ConfigStore, EventStore, KeyStore, ReleaseStore, ResourceStore,
        Store, TimerStore, VolumeStore,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
