//! The store's interface, one small trait per kind of state. `Store` is
//! all of them together (what `Arc<dyn Store>` holds); code that needs one
//! kind can name just that trait. Every method is one short, atomic
//! operation on the backend (SQLite locally, S3 on aws).

use std::collections::BTreeMap;

use super::{
    now_rfc3339, AppRecord, AppSettings, AppState, BuildRecord, Commit, ConfigVersion, Event,
    EventFilter, Formation, KeyRecord, Procfile, ReleaseRecord, ReleaseStatus, ResourceRecord,
    Result,
};
use crate::timers::{Timer, TimerState};
use crate::volumes::Volume;

/// SSH keys: admins and per-app deploy keys.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    async fn add_key(&self, key: &KeyRecord) -> Result<()>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;
    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>>;
    /// Removes a key; refuses to remove the last admin key, checked in the
    /// same transaction so two concurrent removals cannot both pass.
    async fn remove_key(&self, name: &str) -> Result<()>;
}

/// Apps, their `apps:set` settings and their domains.
#[async_trait::async_trait]
pub trait AppStore: Send + Sync {
    async fn create_app(&self, name: &str) -> Result<AppRecord>;
    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>>;
    /// The app, or a NotFound error phrased for users.
    async fn app(&self, name: &str) -> Result<AppRecord>;
    async fn list_apps(&self) -> Result<Vec<AppRecord>>;
    async fn set_app_settings(&self, name: &str, settings: &AppSettings) -> Result<()>;
    /// Removes the app and everything stored about it except audit events.
    async fn delete_app(&self, name: &str) -> Result<()>;
    async fn domains(&self, app: &str) -> Result<Vec<String>>;
    /// Claims `host` for the app; a host routed to another app is a Conflict.
    async fn add_domain(&self, app: &str, host: &str) -> Result<()>;
    async fn remove_domain(&self, app: &str, host: &str) -> Result<()>;
}

/// Config versions: whole snapshots of sealed values (ciphertext only).
#[async_trait::async_trait]
pub trait ConfigStore: Send + Sync {
    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>>;
    async fn config_version(&self, app: &str, version: i64) -> Result<ConfigVersion>;
    /// Next version number the app's config would get.
    async fn next_config_version(&self, app: &str) -> Result<i64>;
    /// Records a whole config version. Fails with Conflict if `version` is
    /// taken (a concurrent writer won): the caller re-reads and retries, so
    /// no acknowledged change is ever lost.
    async fn put_config_version(&self, app: &str, cv: &ConfigVersion) -> Result<()>;
}

/// Build records and the Procfile found in each build.
#[async_trait::async_trait]
pub trait BuildStore: Send + Sync {
    async fn insert_build(&self, b: &BuildRecord) -> Result<()>;
    /// Records the end of a build (every field but the identity).
    async fn finish_build(&self, b: &BuildRecord) -> Result<()>;
    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord>;
    /// Newest first.
    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>>;
    /// At start-up: builds that were running when the process died can never
    /// finish; mark them failed so nothing shows "running" forever.
    async fn fail_running_builds(&self, reason: &str) -> Result<usize>;
    async fn set_build_procfile(&self, id: &str, procfile: &Procfile) -> Result<()>;
    /// The Procfile entries recorded with a build (`None`: no Procfile).
    async fn build_procfile(&self, id: &str) -> Result<Option<Procfile>>;
}

/// Releases, the app's running state and the deploy journal: the commit
/// point of a deploy (`commit_release`) and the ref update a committed
/// release still owes (`ReleaseRecord::ref_update`, `clear_ref_update`).
#[async_trait::async_trait]
pub trait ReleaseStore: Send + Sync {
    async fn app_state(&self, app: &str) -> Result<AppState>;
    async fn set_formation(&self, app: &str, formation: &Formation) -> Result<()>;
    /// Creates the next `vN` (pending). Version allocation and insert are
    /// one transaction, so concurrent creators never share a number.
    async fn create_release(&self, mut r: ReleaseRecord) -> Result<ReleaseRecord>;
    async fn set_release_status(&self, app: &str, version: i64, to: ReleaseStatus) -> Result<()>;
    /// The commit point of a deploy: the release becomes current (with its
    /// rollout id and counts) and succeeded.
    async fn commit_release(
        &self,
        app: &str,
        version: i64,
        deploy_id: &str,
        formation: &Formation,
    ) -> Result<()> {
        let commit = Commit {
            release: Some(version),
            deploy_id: deploy_id.to_owned(),
            formation: formation.clone(),
        };
        self.commit(app, commit).await
    }
    /// A rollout of the current release (scale, restart) committed.
    async fn commit_rollout(
        &self,
        app: &str,
        deploy_id: &str,
        formation: &Formation,
    ) -> Result<()> {
        let commit = Commit {
            release: None,
            deploy_id: deploy_id.to_owned(),
            formation: formation.clone(),
        };
        self.commit(app, commit).await
    }
    /// What `commit_release` and `commit_rollout` do. The app's running
    /// state changes in one atomic write: one SQLite transaction (with the
    /// release's status), or one conditional write of the app's S3 head,
    /// after which the release is marked succeeded (recovery finishes that
    /// step if a crash comes between).
    async fn commit(&self, app: &str, commit: Commit) -> Result<()>;
    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()>;
    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord>;
    /// Newest first.
    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>>;
    /// At start-up: releases that were rolling out when the process died and
    /// never became current are failed (rolled back).
    async fn fail_pending_releases(&self) -> Result<usize>;
}

/// The audit trail. Events outlive the apps they name.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Records an event, stamped now.
    async fn add_event(
        &self,
        actor: &str,
        app: Option<&str>,
        action: &str,
        outcome: &str,
    ) -> Result<()> {
        let event = Event {
            id: 0,
            time: now_rfc3339(),
            actor: actor.to_owned(),
            app: app.map(str::to_owned),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.append_event(event).await
    }
    /// Newest `limit` events, oldest first. `apps` restricts to those apps
    /// (for deploy keys); `app` to one app.
    async fn events(
        &self,
        app: Option<&str>,
        apps: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let filter = EventFilter {
            allowed: apps.map(<[String]>::to_vec),
            limit,
        };
        self.select_events(app, filter).await
    }
    /// Records `event`; its `id` is ignored (ids are the store's).
    async fn append_event(&self, event: Event) -> Result<()>;
    /// `events` in the backend: reads the events (of `app` when given)
    /// newest first and returns what [`EventFilter::select`] picks.
    async fn select_events(&self, app: Option<&str>, filter: EventFilter) -> Result<Vec<Event>>;
}

/// The timers recorded with a build (from its `app.json`) and the
/// scheduler's state of each timer (last tick fired, suspended, last run).
#[async_trait::async_trait]
pub trait TimerStore: Send + Sync {
    /// Records the timers of a build (an empty list: none).
    async fn set_build_timers(&self, id: &str, timers: &[Timer]) -> Result<()>;
    /// The timers recorded with a build (none when it had no `app.json`).
    async fn build_timers(&self, id: &str) -> Result<Vec<Timer>>;
    /// Every timer state of the app, by timer name.
    async fn timer_states(&self, app: &str) -> Result<BTreeMap<String, TimerState>>;
    /// Replaces one timer's state (callers serialise their
    /// read-modify-write with `timers::update_state`).
    async fn put_timer_state(&self, app: &str, name: &str, state: &TimerState) -> Result<()>;
    /// Forgets the app's timer states (`apps:destroy`).
    async fn delete_timer_states(&self, app: &str) -> Result<()>;
}

/// An app's persistent volumes (the records: where the data lives is the
/// runtime's business). They go with the app (`delete_app`).
#[async_trait::async_trait]
pub trait VolumeStore: Send + Sync {
    /// The app's volumes, by name.
    async fn volumes(&self, app: &str) -> Result<Vec<Volume>>;
    /// Records a new volume; a name the app already has is a Conflict.
    async fn add_volume(&self, app: &str, volume: &Volume) -> Result<()>;
    /// Forgets one volume; NotFound when the app has none of that name.
    async fn remove_volume(&self, app: &str, name: &str) -> Result<()>;
}

/// Resources (databases the rack runs for apps) and their links.
#[async_trait::async_trait]
pub trait ResourceStore: Send + Sync {
    /// Records a new resource; a name already taken is a Conflict.
    async fn create_resource(&self, r: &ResourceRecord) -> Result<()>;
    /// The resource, or a NotFound error phrased for users.
    async fn resource(&self, name: &str) -> Result<ResourceRecord>;
    /// Every resource, by name.
    async fn resources(&self) -> Result<Vec<ResourceRecord>>;
    /// Links `app` with `prefix` (Some) or unlinks it (None). Returns the
    /// record as it is now; NotFound when the resource is gone.
    async fn set_resource_link(
        &self,
        name: &str,
        app: &str,
        prefix: Option<&str>,
    ) -> Result<ResourceRecord>;
    /// Removes the record; refused (Refused) while an app is linked.
    async fn delete_resource(&self, name: &str) -> Result<()>;
}

/// Durable state behind one interface: every part above. Implemented for
/// any type that implements them all; used as `Arc<dyn Store>` (a method
/// of a part is callable on `dyn Store` without importing the part).
pub trait Store:
    KeyStore
    + AppStore
    + ConfigStore
    + BuildStore
    + ReleaseStore
    + EventStore
    + TimerStore
    + VolumeStore
    + ResourceStore
{
}

impl<T> Store for T where
    T: KeyStore
        + AppStore
        + ConfigStore
        + BuildStore
        + ReleaseStore
        + EventStore
        + TimerStore
        + VolumeStore
        + ResourceStore
{
}
