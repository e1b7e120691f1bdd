//! `S3Store`: the [`Store`](crate::store::Store) interface on the rack's
//! bucket, built on [`S3State`]'s compare-and-swap (layout in
//! [`super::state`]; on top of it this module uses):
//!
//! ```text
//! rack/keys.json                 all SSH keys, one mutable object (If-Match),
//!                                so "not the last admin" and "fingerprint
//!                                unique" are checked atomically
//! domains/HOST.json              claim of a host name by one app
//!                                (If-None-Match: hosts are unique)
//! procfiles/BUILD_ID.json        the Procfile recorded with a build
//! timers/BUILD_ID.json           the timers (app.json) recorded with a build
//! apps/APP/timer-states.json     the scheduler's state of the app's timers
//! ```
//!
//! Release records are created with `If-None-Match` (allocating vN) and
//! only their status and journal fields change later, with `If-Match`. The
//! commit point of a deploy is the head's `release` field: `commit_release`
//! writes the head first, then marks the release succeeded, and
//! `fail_pending_releases` never fails a release that is the head's current
//! one (it marks it succeeded instead), so a crash between the two writes
//! leaves exactly one current release.
//!
//! One file per part of the interface (`keys`, `apps`, `config`, `builds`,
//! `releases`, `events`); this one holds what they share: the error
//! mapping, the app head and the one read-modify-write loop.

mod apps;
mod builds;
mod config;
mod events;
mod keys;
mod releases;
mod resources;
mod timers;
mod volumes;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state::{Head, S3State};
use super::AwsError;
use crate::store::{Result, StoreError};

fn store_err(e: AwsError) -> StoreError {
    match e {
        AwsError::NotFound(m) => StoreError::NotFound(m),
        AwsError::Conflict(m) => StoreError::Conflict(m),
        // StoreError has no backend variant yet: the AWS message verbatim.
        other => StoreError::Refused(other.to_string()),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const CAS_ATTEMPTS: usize = 25;

pub struct S3Store {
    state: S3State,
    /// The rack's KMS key: each config version gets a data key of its own.
    key_arn: String,
}

impl S3Store {
    pub fn new(state: S3State, key_arn: impl Into<String>) -> S3Store {
        S3Store {
            state,
            key_arn: key_arn.into(),
        }
    }

    /// Read-modify-write of the JSON object `key` with If-Match, again on
    /// a concurrent change (412). An absent object starts as `absent()`
    /// (written with If-None-Match) or fails with its error; `change`
    /// failing aborts without writing; `busy()` is the error once
    /// [`CAS_ATTEMPTS`] writes have lost.
    async fn read_modify_write<T>(
        &self,
        key: &str,
        absent: impl Fn() -> Result<T> + Send,
        mut change: impl FnMut(&mut T) -> Result<()> + Send,
        busy: impl FnOnce() -> StoreError + Send,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
    {
        for _ in 0..CAS_ATTEMPTS {
            let (mut value, etag) = match self.state.get_json::<T>(key).await.map_err(store_err)? {
                Some((v, etag)) => (v, Some(etag)),
                None => (absent()?, None),
            };
            change(&mut value)?;
            match self.state.put_json(key, &value, etag.as_deref()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_precondition_failed() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(busy())
    }

    async fn head(&self, app: &str) -> Result<Head> {
        self.state
            .head(app)
            .await
            .map_err(store_err)?
            .map(|(h, _)| h)
            .ok_or_else(|| StoreError::NotFound(format!("no app named '{app}'")))
    }

    /// Changes the app's head by compare-and-swap ([`S3State::update_head`]).
    async fn update_head(&self, app: &str, mut change: impl FnMut(&mut Head) + Send) -> Result<()> {
        self.state
            .update_head(app, move |h| {
                change(h);
                Ok(())
            })
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    /// App names (from `apps/APP/head.json`).
    async fn app_names(&self) -> Result<Vec<String>> {
        let keys = self.state.list("apps/", None).await.map_err(store_err)?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                k.strip_prefix("apps/")?
                    .strip_suffix("/head.json")
                    .map(str::to_string)
            })
            .collect())
    }

    /// Deletes one object (no error when it is already gone).
    async fn delete_object(&self, key: String) -> Result<()> {
        self.state
            .ctx
            .s3
            .delete_object()
            .bucket(&self.state.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_err(AwsError::api("S3.DeleteObject", e)))
    }
}

#[cfg(test)]
mod tests;
