//! Keeping secret build args out of image metadata. The classic builder
//! writes every build arg in effect into the history of each `RUN` step
//! (`|1 TOKEN=value /bin/sh -c ...`), which `docker history` shows and a
//! registry push carries. An image built with app build args is therefore
//! re-imported as one layer: its filesystem (a created, never started
//! container, exported as a stream) plus the runtime part of its config
//! (`CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`, `WORKDIR`, `USER`, `LABEL`,
//! `VOLUME`, `STOPSIGNAL`), under the same tag. The history then says only
//! "Imported"; the layered original is removed (its cached steps stay on the
//! engine, never pushed).

use bollard::models::{ContainerCreateBody, ImageConfig};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::builder::BuildError;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The `changes` that give the imported image `cfg`'s runtime config.
fn changes(cfg: &ImageConfig) -> Vec<String> {
    let mut c = Vec::new();
    if let Some(v) = &cfg.entrypoint {
        c.push(format!("ENTRYPOINT {}", json(v)));
    }
    if let Some(v) = &cfg.cmd {
        c.push(format!("CMD {}", json(v)));
    }
    for kv in cfg.env.iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            c.push(format!("ENV {k}={}", json(&v)));
        }
    }
    for p in cfg.exposed_ports.iter().flatten() {
        c.push(format!("EXPOSE {p}"));
    }
    if let Some(w) = cfg.working_dir.as_deref().filter(|w| !w.is_empty()) {
        c.push(format!("WORKDIR {w}"));
    }
    if let Some(u) = cfg.user.as_deref().filter(|u| !u.is_empty()) {
        c.push(format!("USER {u}"));
    }
    for (k, v) in cfg.labels.iter().flatten() {
        c.push(format!("LABEL {}={}", json(k), json(v)));
    }
    let vols: Vec<&String> = cfg.volumes.iter().flatten().collect();
    if !vols.is_empty() {
        c.push(format!("VOLUME {}", json(&vols)));
    }
    if let Some(s) = cfg.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        c.push(format!("STOPSIGNAL {s}"));
    }
    c
}

/// Replaces the image tagged `repo:tag` by its one-layer copy without
/// build history; returns the new image id.
pub(super) async fn flatten(docker: &Docker, repo: &str, tag: &str) -> Result<String, BuildError> {
    let full = format!("{repo}:{tag}");
    let fail = |what: &str, e: bollard::errors::Error| {
        BuildError::Failed(format!("dropping the build history of {full}: {what}: {e}"))
    };
    let old = docker
        .inspect_image(&full)
        .await
        .map_err(|e| fail("inspecting", e))?;
    let cfg = old.config.clone().unwrap_or_default();
    let body = ContainerCreateBody {
        image: Some(full.clone()),
        // Never started: a command only so the engine accepts the create.
        cmd: Some(vec!["/rack-export".into()]),
        entrypoint: Some(vec![]),
        network_disabled: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| fail("creating the export container", e))?;
    let exported = docker
        .export_container(&created.id)
        .map(|r| r.map_err(std::io::Error::other));
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes(&cfg))
        .build();
    let mut import =
        docker.create_image(Some(opts), Some(bollard::body_try_stream(exported)), None);
    let mut result = Ok(());
    while let Some(item) = import.next().await {
        if let Err(e) = item {
            result = Err(fail("importing", e));
            break;
        }
    }
    drop(import);
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&created.id, Some(rm)).await;
    result?;
    let new = docker
        .inspect_image(&full)
        .await
        .map_err(|e| fail("inspecting the copy", e))?;
    if let Some(old_id) = old.id.as_deref().filter(|o| Some(*o) != new.id.as_deref()) {
        // Only the layered top image: its parents are the build cache.
        let opts = RemoveImageOptionsBuilder::new().noprune(true).build();
        let _ = docker.remove_image(old_id, Some(opts), None).await;
    }
    Ok(new.id.unwrap_or_default())
}
