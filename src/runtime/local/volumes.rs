//! The local runtime's volumes: one named Docker volume per app volume,
//! `NS.APP.NAME` (neither part may contain a `.`, so two apps or two racks
//! never share a name), labelled `rack.managed`, `rack.ns`, `rack.app` and
//! `rack.volume`. The mount spec is built here from the app's own
//! `Volume` records only: a user names a volume, never a Docker volume,
//! and a volume whose labels name another rack or app is refused rather
//! than mounted. No bind mounts exist.
//!
//! Export and import go through a helper container that is never started:
//! made from an empty image (`rack/volume.helper:1`, imported from an empty
//! tar, so no image needs pulling), with the one volume mounted at `/vol`,
//! read and written with the engine's archive API.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::docker::{is_not_found, L_APP, L_MANAGED, L_NS};
use super::{LocalRuntime, RemoveOnDrop};
use crate::runtime::{ReleaseSpec, RuntimeError};

pub(super) const L_VOLUME: &str = "rack.volume";
/// A helper container of `volumes:export`/`import` (removed after use;
/// recovery removes any a crash left).
const L_HELPER: &str = "rack.volume-helper";
const HELPER_IMAGE: &str = "rack/volume.helper:1";
const HELPER_MOUNT: &str = "/vol";

fn engine(what: &str, e: bollard::errors::Error) -> RuntimeError {
    RuntimeError::Engine(format!("{what}: {e}"))
}

impl LocalRuntime {
    /// `NS.APP.NAME`
    pub(super) fn volume_name(&self, app: &str, name: &str) -> String {
        format!("{}.{app}.{name}", self.inner.opts.namespace)
    }

    /// The app's Docker volume `name`, created on first use. One that
    /// exists with labels of another rack or app is refused.
    pub(super) async fn ensure_volume(
        &self,
        app: &str,
        name: &str,
    ) -> Result<String, RuntimeError> {
        let vname = self.volume_name(app, name);
        match self.docker().inspect_volume(&vname).await {
            Ok(v) => {
                let ok = v.labels.get(L_MANAGED).map(String::as_str) == Some("1")
                    && v.labels.get(L_NS) == Some(&self.inner.opts.namespace)
                    && v.labels.get(L_APP).map(String::as_str) == Some(app)
                    && v.labels.get(L_VOLUME).map(String::as_str) == Some(name);
                if !ok {
                    return Err(RuntimeError::Other(format!(
                        "the Docker volume {vname} exists but is not {app}'s volume {name}: refusing to mount it"
                    )));
                }
                return Ok(vname);
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(&format!("inspecting volume {vname}"), e)),
        }
        let mut labels = self.base_labels(app);
        labels.insert(L_VOLUME.to_string(), name.to_string());
        let req = VolumeCreateRequest {
            name: Some(vname.clone()),
            driver: Some("local".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker()
            .create_volume(req)
            .await
            .map_err(|e| engine(&format!("creating volume {vname}"), e))?;
        Ok(vname)
    }

    /// The mounts of an instance of `kind` (`None`: a one-off, which gets
    /// every volume of the app), creating the volumes on first use.
    pub(super) async fn mounts_for(
        &self,
        spec: &ReleaseSpec,
        kind: Option<&str>,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let mut mounts = Vec::new();
        for v in &spec.volumes {
            if kind.is_some_and(|k| !v.types.iter().any(|t| t == k)) {
                continue;
            }
            let source = self.ensure_volume(&spec.app, &v.name).await?;
            mounts.push(Mount {
                target: Some(v.path.clone()),
                source: Some(source),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            });
        }
        Ok(mounts)
    }

    /// The names of the app's Docker volumes (`NS.APP.*` with its labels).
    async fn app_volumes(&self, app: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{L_MANAGED}=1"),
                format!("{L_NS}={}", self.inner.opts.namespace),
                format!("{L_APP}={app}"),
            ],
        )]);
        let list = self
            .docker()
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| engine("listing volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with(&format!("{}.{app}.", self.inner.opts.namespace)))
            .collect())
    }

    /// Removes a Docker volume, waiting (up to the drain and stop time)
    /// while a stopping instance still uses it.
    async fn remove_volume_named(&self, vname: &str) -> Result<(), RuntimeError> {
        let o = &self.inner.opts;
        let deadline = Instant::now() + o.drain_max + o.stop_grace + Duration::from_secs(5);
        loop {
            let opts = RemoveVolumeOptionsBuilder::new().force(false).build();
            match self.docker().remove_volume(vname, Some(opts)).await {
                Ok(()) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) if Instant::now() < deadline => {
                    // In use by an instance of the previous rollout, which
                    // is draining and about to be removed.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(engine(&format!("removing volume {vname}"), e)),
            }
        }
    }

    pub(super) async fn destroy_volume_impl(
        &self,
        app: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        self.remove_volume_named(&self.volume_name(app, name)).await
    }

    /// Every Docker volume of the app (`apps:destroy`, after its
    /// containers are gone).
    pub(super) async fn destroy_app_volumes(&self, app: &str) -> Result<(), RuntimeError> {
        for v in self.app_volumes(app).await? {
            self.remove_volume_named(&v).await?;
        }
        Ok(())
    }

    /// Bytes on disk under each volume's mount point on the engine's host,
    /// when this process can read it (the engine runs here and the rack
    /// may read Docker's volume directory); `None` otherwise.
    pub(super) async fn volume_sizes_impl(
        &self,
        app: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, Option<u64>>, RuntimeError> {
        let mut out = BTreeMap::new();
        for name in names {
            let vname = self.volume_name(app, name);
            let size = match self.docker().inspect_volume(&vname).await {
                Ok(v) if v.labels.get(L_APP).map(String::as_str) == Some(app) => {
                    let dir = std::path::PathBuf::from(v.mountpoint);
                    tokio::task::spawn_blocking(move || disk_usage(&dir))
                        .await
                        .ok()
                        .flatten()
                }
                Ok(_) => None,
                Err(e) if is_not_found(&e) => Some(0),
                Err(e) => return Err(engine(&format!("inspecting volume {vname}"), e)),
            };
            out.insert(name.clone(), size);
        }
        Ok(out)
    }

    /// The empty helper image, imported once from an empty tar.
    async fn ensure_helper_image(&self) -> Result<(), RuntimeError> {
        if self.docker().inspect_image(HELPER_IMAGE).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = HELPER_IMAGE.split_once(':').expect("the name has a tag");
        let opts = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .build();
        let empty = bytes::Bytes::from(vec![0u8; 1024]);
        let mut s = self
            .docker()
            .create_image(Some(opts), Some(bollard::body_full(empty)), None);
        while let Some(r) = s.next().await {
            r.map_err(|e| engine("making the volume helper image", e))?;
        }
        Ok(())
    }

    /// A created (never started) container with the app's volume `name` at
    /// `/vol`; removed when the guard drops.
    async fn helper(&self, app: &str, name: &str) -> Result<(String, RemoveOnDrop), RuntimeError> {
        self.ensure_helper_image().await?;
        let vname = self.ensure_volume(app, name).await?;
        let mut labels = HashMap::from([
            (L_MANAGED.to_string(), "1".to_string()),
            (L_NS.to_string(), self.inner.opts.namespace.clone()),
            (L_HELPER.to_string(), format!("{app}.{name}")),
        ]);
        labels.insert(L_VOLUME.to_string(), name.to_string());
        let host = bollard::models::HostConfig {
            mounts: Some(vec![Mount {
                target: Some(HELPER_MOUNT.into()),
                source: Some(vname),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }]),
            network_mode: Some("none".into()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.into()),
            cmd: Some(vec!["/never-started".into()]),
            labels: Some(labels),
            host_config: Some(host),
            network_disabled: Some(true),
            ..Default::default()
        };
        let suffix: u32 = rand::random();
        let cname = format!(
            "{}-{app}-volume-{name}-{suffix:08x}",
            self.inner.opts.namespace
        );
        let r = self
            .docker()
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&cname).build()),
                body,
            )
            .await
            .map_err(|e| engine("creating the volume helper", e))?;
        let mut guard = RemoveOnDrop::new(self.clone());
        guard.ids.push(r.id.clone());
        Ok((r.id, guard))
    }

    pub(super) async fn export_volume_impl(
        &self,
        app: &str,
        name: &str,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), RuntimeError> {
        let (id, mut guard) = self.helper(app, name).await?;
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(&format!("{HELPER_MOUNT}/."))
            .build();
        let mut stream = self.docker().download_from_container(&id, Some(opts));
        let mut result = Ok(());
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if let Err(e) = out.write_all(&b).await {
                        result = Err(RuntimeError::Other(format!("writing the tar: {e}")));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(engine("reading the volume", e));
                    break;
                }
            }
        }
        drop(stream);
        let _ = out.flush().await;
        self.remove_all(&std::mem::take(&mut guard.ids)).await;
        result
    }

    pub(super) async fn import_volume_impl(
        &self,
        app: &str,
        name: &str,
        tar: Box<dyn AsyncRead + Send + Unpin>,
    ) -> Result<(), RuntimeError> {
        let (id, mut guard) = self.helper(app, name).await?;
        let opts = UploadToContainerOptionsBuilder::new()
            .path(HELPER_MOUNT)
            .no_overwrite_dir_non_dir("true")
            .build();
        let stream = tokio_stream_reader(tar);
        let r = self
            .docker()
            .upload_to_container(&id, Some(opts), bollard::body_try_stream(stream))
            .await
            .map_err(|e| engine("writing into the volume", e));
        self.remove_all(&std::mem::take(&mut guard.ids)).await;
        r
    }
}

/// `reader` as a stream of 64 KiB chunks.
fn tokio_stream_reader(
    reader: Box<dyn AsyncRead + Send + Unpin>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some(reader), |r| async move {
        use tokio::io::AsyncReadExt;
        let mut r = r?;
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(r)))
            }
            // The error ends the body; nothing is read after it.
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Bytes allocated under `dir` (blocks × 512), not following links;
/// `None` when it cannot be read.
fn disk_usage(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    std::fs::symlink_metadata(dir).ok()?;
    std::fs::read_dir(dir).ok()?;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some(total)
}
