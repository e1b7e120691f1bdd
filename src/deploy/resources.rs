//! The resource use cases: create, link and unlink (config changes rolled
//! out like `config:set`), destroy, backups and restores, export and
//! import, and bringing every resource back at start-up or after its
//! container vanished. They work on the provider's `Resources` and the
//! store's records; the password is sealed in the record and opened here,
//! and leaves only in a linked app's config or `resources:url`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{DeployError, Deployer, Result};
use crate::progress::Progress;
use crate::release::config::Change;
use crate::resources::{
    BackupInfo, Kind, Password, Reader, Resource, ResourceError, Resources, Terminal, Writer,
};
use crate::runtime::OneOffIo;
use crate::store::{ResourceRecord, StoreError};

impl From<ResourceError> for DeployError {
    fn from(e: ResourceError) -> Self {
        match e {
            ResourceError::NotFound(m) => DeployError::Store(StoreError::NotFound(m)),
            ResourceError::Refused(m) => DeployError::Refused(m),
            ResourceError::Failed(m) => DeployError::Failed(m),
        }
    }
}

/// What `resources:info` shows (no password).
pub struct ResourceInfo {
    pub record: ResourceRecord,
    pub status: String,
    pub host: String,
    pub port: u16,
}

impl Deployer {
    async fn resources(&self) -> Result<Arc<dyn Resources>> {
        self.provider.resources().await.map_err(DeployError::Failed)
    }

    /// The record and the resource it describes, password opened.
    async fn open_resource(&self, name: &str) -> Result<(ResourceRecord, Resource)> {
        let rec = self.provider.store.resource(name).await?;
        let r = self.resource_of(&rec)?;
        Ok((rec, r))
    }

    fn resource_of(&self, rec: &ResourceRecord) -> Result<Resource> {
        let kind = Kind::parse(&rec.kind).ok_or_else(|| {
            DeployError::Failed(format!(
                "resource {} has an unknown type {}",
                rec.name, rec.kind
            ))
        })?;
        let pw = self.provider.configs.open_resource_password(
            &rec.name,
            &rec.password_nonce,
            &rec.password_ciphertext,
        )?;
        Ok(Resource {
            name: rec.name.clone(),
            kind,
            version: rec.version.clone(),
            image: rec.image.clone(),
            password: Password::from_opened(pw),
            links: rec.links.keys().cloned().collect(),
        })
    }

    /// `resources:create`: the record (password sealed), then the
    /// resource, ready. A resource that never became ready is removed.
    pub async fn create_resource(
        &self,
        name: &str,
        kind: Kind,
        version: Option<&str>,
        actor: &str,
        progress: &Progress,
    ) -> Result<ResourceRecord> {
        let res = self.resources().await?;
        let (image, version) = self.settings.resources.image_for(kind, version);
        let pw = Password::generate();
        let (nonce, ct) = self
            .provider
            .configs
            .seal_resource_password(name, pw.expose());
        let rec = ResourceRecord {
            name: name.to_string(),
            kind: kind.as_str().to_string(),
            version,
            image,
            created_at: crate::store::now_rfc3339(),
            created_by: actor.to_string(),
            password_nonce: nonce,
            password_ciphertext: ct,
            links: Default::default(),
        };
        self.provider.store.create_resource(&rec).await?;
        let r = self.resource_of(&rec)?;
        if let Err(e) = res.ensure(&r, progress).await {
            if let Err(e) = res.remove(name).await {
                tracing::warn!(resource = name, error = %e, "removing a failed resource");
            }
            let _ = self.provider.store.delete_resource(name).await;
            return Err(e.into());
        }
        Ok(rec)
    }

    pub async fn resource_info(&self, name: &str) -> Result<ResourceInfo> {
        let (record, r) = self.open_resource(name).await?;
        let res = self.resources().await?;
        let at = res.endpoint(&r);
        let status = res.status(&r).await?;
        Ok(ResourceInfo {
            record,
            status,
            host: at.host,
            port: at.port,
        })
    }

    /// The resource's full URL (with its password), for admins.
    pub async fn resource_url(&self, name: &str) -> Result<String> {
        let (_, r) = self.open_resource(name).await?;
        let res = self.resources().await?;
        Ok(r.url(&res.endpoint(&r)))
    }

    /// `resources:link`: the app joins the resource's network and gets
    /// `PREFIX_URL` in a new config version, rolled out like `config:set`.
    /// Returns the config change.
    pub async fn link_resource(
        &self,
        name: &str,
        app: &str,
        prefix: Option<&str>,
        actor: &str,
        progress: &Progress,
    ) -> Result<super::ConfigChange> {
        let store = &self.provider.store;
        store.app(app).await?;
        let (rec, _) = self.open_resource(name).await?;
        let kind = Kind::parse(&rec.kind).unwrap_or(Kind::Postgres);
        let prefix = prefix.unwrap_or(kind.default_prefix()).to_string();
        let key = format!("{prefix}_URL");
        crate::names::validate_config_key(&key).map_err(DeployError::Refused)?;
        if let Some(p) = rec.links.get(app) {
            return Err(DeployError::Refused(format!(
                "{name} is already linked to {app} as {p}_URL"
            )));
        }
        for other in store.resources().await? {
            if other.links.get(app) == Some(&prefix) {
                return Err(DeployError::Refused(format!(
                    "{app} already has {key} from resource {}: use --as PREFIX",
                    other.name
                )));
            }
        }
        if self.provider.configs.get(app, &key).await?.is_some() {
            return Err(DeployError::Refused(format!(
                "{app} already has {key} in its config: use --as PREFIX, or config:unset it first"
            )));
        }
        let rec = store.set_resource_link(name, app, Some(&prefix)).await?;
        let r = self.resource_of(&rec)?;
        let res = self.resources().await?;
        if let Err(e) = res.ensure(&r, progress).await {
            let _ = store.set_resource_link(name, app, None).await;
            return Err(e.into());
        }
        let url = r.url(&res.endpoint(&r));
        self.change_config(app, actor, &[Change::Set(key, url)], false, progress)
            .await
    }

    /// `resources:unlink`: `PREFIX_URL` leaves the app's config in a new
    /// release, then the resource leaves the app's network.
    pub async fn unlink_resource(
        &self,
        name: &str,
        app: &str,
        actor: &str,
        progress: &Progress,
    ) -> Result<super::ConfigChange> {
        let store = &self.provider.store;
        let rec = store.resource(name).await?;
        let Some(prefix) = rec.links.get(app) else {
            return Err(DeployError::Refused(format!(
                "{name} is not linked to {app}"
            )));
        };
        let key = format!("{prefix}_URL");
        let change = self
            .change_config(app, actor, &[Change::Unset(key)], false, progress)
            .await?;
        let rec = store.set_resource_link(name, app, None).await?;
        let r = self.resource_of(&rec)?;
        self.resources().await?.ensure(&r, progress).await?;
        Ok(change)
    }

    /// Before an app is destroyed: its links go (the resources leave its
    /// network, so the network can be removed); its config goes with it.
    pub(super) async fn forget_links_of(&self, app: &str) -> Result<()> {
        let store = &self.provider.store;
        for rec in store.resources().await? {
            if rec.links.contains_key(app) {
                let rec = store.set_resource_link(&rec.name, app, None).await?;
                let r = self.resource_of(&rec)?;
                self.resources()
                    .await?
                    .ensure(&r, &Progress::discard())
                    .await?;
            }
        }
        Ok(())
    }

    /// `resources:destroy`: refused while linked (checked with the delete,
    /// atomically); the record goes first, so nothing re-creates the
    /// container being removed, then the container, its data and its
    /// backups.
    pub async fn destroy_resource(&self, name: &str) -> Result<()> {
        let res = self.resources().await?;
        self.provider.store.delete_resource(name).await?;
        res.remove(name).await?;
        Ok(())
    }

    /// `resources:backup` (and the daily schedule's): a new backup, then
    /// the oldest beyond `[resources] backup_keep` go.
    pub async fn backup_resource(&self, name: &str, trigger: &str) -> Result<BackupInfo> {
        let (_, r) = self.open_resource(name).await?;
        let res = self.resources().await?;
        let info = res.backup(&r, trigger).await?;
        let keep = self.settings.resources.backup_keep;
        if let Err(e) = res.prune_backups(name, keep).await {
            tracing::warn!(resource = name, error = %e, "removing old backups");
        }
        Ok(info)
    }

    pub async fn resource_backups(&self, name: &str) -> Result<Vec<BackupInfo>> {
        self.provider.store.resource(name).await?;
        Ok(self.resources().await?.backups(name).await?)
    }

    pub async fn restore_resource(&self, name: &str, backup: &str) -> Result<()> {
        let (_, r) = self.open_resource(name).await?;
        Ok(self.resources().await?.restore(&r, backup).await?)
    }

    pub async fn export_resource(&self, name: &str, out: Writer) -> Result<()> {
        let (_, r) = self.open_resource(name).await?;
        Ok(self.resources().await?.export(&r, out).await?)
    }

    /// `resources:import`: a dump of the resource's own type (checked from
    /// its first bytes), of at most `[resources] max_import_bytes`.
    pub async fn import_resource(&self, name: &str, mut input: Reader) -> Result<()> {
        let (_, r) = self.open_resource(name).await?;
        let res = self.resources().await?;
        let mut head = Vec::with_capacity(5);
        (&mut input)
            .take(5)
            .read_to_end(&mut head)
            .await
            .map_err(|e| DeployError::Failed(format!("reading the dump: {e}")))?;
        match Kind::of_dump(&head) {
            Some(k) if k == r.kind => {}
            Some(k) => {
                return Err(DeployError::Refused(format!(
                    "this is {}; {name} is {}",
                    k.dump_name(),
                    r.kind
                )))
            }
            None => {
                return Err(DeployError::Refused(format!(
                    "stdin is not {} (resources:export {name} makes one)",
                    r.kind.dump_name()
                )))
            }
        }
        let limit = self.settings.resources.max_import_bytes;
        let over = Arc::new(AtomicBool::new(false));
        let body = Limited {
            inner: std::io::Cursor::new(head).chain(input),
            left: limit,
            over: over.clone(),
        };
        let result = res.import(&r, Box::new(body)).await;
        if over.load(Ordering::SeqCst) {
            return Err(DeployError::Refused(format!(
                "the dump is larger than [resources] max_import_bytes ({limit} bytes)"
            )));
        }
        Ok(result?)
    }

    pub async fn resource_console(
        &self,
        name: &str,
        io: OneOffIo,
        tty: Option<Terminal>,
    ) -> Result<i64> {
        let (_, r) = self.open_resource(name).await?;
        Ok(self.resources().await?.console(&r, io, tty).await?)
    }

    /// Start-up, and after a resource's container vanished: brings every
    /// resource (or the one named) back to its record. Failures are
    /// logged, not fatal: the rack still serves its apps.
    pub async fn recover_resources(&self, only: Option<&str>, progress: &Progress) {
        let records = match self.provider.store.resources().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "listing resources");
                return;
            }
        };
        if records.is_empty() {
            return;
        }
        let res = match self.resources().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "resources cannot be reached");
                return;
            }
        };
        for rec in records.iter().filter(|r| only.is_none_or(|o| o == r.name)) {
            let r = match self.resource_of(rec) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(resource = %rec.name, error = %e, "opening resource");
                    continue;
                }
            };
            match res.ensure(&r, progress).await {
                Ok(()) => tracing::info!(resource = %rec.name, "resource ready"),
                Err(e) => tracing::error!(resource = %rec.name, error = %e, "resource not ready"),
            }
        }
    }
}

/// A reader that fails once more than `left` bytes came through, and says
/// so in `over` (the import's own limit).
struct Limited<R> {
    inner: R,
    left: u64,
    over: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            if n > self.left {
                self.over.store(true, Ordering::SeqCst);
                return Poll::Ready(Err(std::io::Error::other("over the import limit")));
            }
            self.left -= n;
        }
        r
    }
}
