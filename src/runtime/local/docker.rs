//! Names, labels and the Docker calls the local runtime is made of.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, EndpointSettings, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;

use super::LocalRuntime;
use crate::runtime::{ProcessSpec, ReleaseSpec, RuntimeError};

pub(super) const L_MANAGED: &str = "rack.managed";
pub(super) const L_NS: &str = "rack.ns";
pub(super) const L_APP: &str = "rack.app";
pub(super) const L_RELEASE: &str = "rack.release";
pub(super) const L_DEPLOY: &str = "rack.deploy";
pub(super) const L_TYPE: &str = "rack.type";
pub(super) const L_NUMBER: &str = "rack.number";
pub(super) const L_PORT: &str = "rack.port";
pub(super) const L_ONEOFF: &str = "rack.oneoff";
pub(super) const L_NETWORK: &str = "rack.network";
/// A timer's one-off (`rack.timer=NAME`): kept after it exits, for `logs`.
pub(super) const L_TIMER: &str = "rack.timer";

/// Env names the runtime sets itself; the app's config cannot override them.
/// Capabilities of Docker's default set no app container keeps: raw
/// sockets (spoofing, sniffing on the app network), device nodes, audit
/// records.
const DROPPED_CAPS: &[&str] = &["NET_RAW", "MKNOD", "AUDIT_WRITE"];

const RESERVED_ENV: &[&str] = &["PORT", "RACK_APP", "RACK_RELEASE"];

/// One rack container, as listed.
#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub id: String,
    pub app: String,
    pub deploy: String,
    pub kind: String,
    pub number: u32,
    pub release: i64,
    pub port: Option<u16>,
    pub oneoff: bool,
    /// The timer a one-off ran for: its lines are `timer.NAME`.
    pub timer: Option<String>,
    /// running, exited, restarting, created, ...
    pub state: String,
    pub ip: Option<IpAddr>,
}

impl Instance {
    fn from_summary(c: ContainerSummary) -> Option<Instance> {
        let labels = c.labels.unwrap_or_default();
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let ip = first_ip(c.network_settings.and_then(|n| n.networks));
        Some(Instance {
            id: c.id?,
            app: get(L_APP),
            deploy: get(L_DEPLOY),
            kind: get(L_TYPE),
            number: get(L_NUMBER).parse().unwrap_or(0),
            release: get(L_RELEASE).parse().unwrap_or(0),
            port: get(L_PORT).parse().ok(),
            oneoff: labels.get(L_ONEOFF).is_some_and(|v| v == "1"),
            timer: labels.get(L_TIMER).cloned(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            ip,
        })
    }

    /// `web.1`
    pub fn source(&self) -> String {
        if let Some(t) = &self.timer {
            return format!("timer.{t}");
        }
        format!("{}.{}", self.kind, self.number)
    }

    /// Where the router reaches this instance: its own IP on the app
    /// network, at `PORT`.
    pub fn addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.ip?, self.port?))
    }
}

/// One instance `start`/`recover` is about to create.
pub(super) struct NewInstance<'a> {
    pub process: &'a ProcessSpec,
    pub number: u32,
}

/// 404 from the engine: already gone.
pub(super) fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A container's address: the first one set among its networks (it has
/// one, its app's network).
pub(super) fn first_ip(networks: Option<HashMap<String, EndpointSettings>>) -> Option<IpAddr> {
    networks?
        .values()
        .filter_map(|e| e.ip_address.as_deref())
        .find(|ip| !ip.is_empty())
        .and_then(|ip| ip.parse().ok())
}

fn engine(what: &str, e: DockerError) -> RuntimeError {
    RuntimeError::Engine(format!("{what}: {e}"))
}

impl LocalRuntime {
    fn ns(&self) -> &str {
        &self.inner.opts.namespace
    }

    /// `NS-APP`
    pub(super) fn network_name(&self, app: &str) -> String {
        format!("{}-{app}", self.ns())
    }

    pub(super) fn base_labels(&self, app: &str) -> HashMap<String, String> {
        HashMap::from([
            (L_MANAGED.to_string(), "1".to_string()),
            (L_NS.to_string(), self.ns().to_string()),
            (L_APP.to_string(), app.to_string()),
        ])
    }

    /// Every container of this rack (any state), or of one app.
    pub(super) async fn list(&self, app: Option<&str>) -> Result<Vec<Instance>, RuntimeError> {
        let mut labels = vec![format!("{L_MANAGED}=1"), format!("{L_NS}={}", self.ns())];
        if let Some(app) = app {
            labels.push(format!("{L_APP}={app}"));
        }
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker()
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine("listing containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(Instance::from_summary)
            .collect())
    }

    /// The app's network id, creating the network on first use.
    pub(super) async fn ensure_network(&self, app: &str) -> Result<String, RuntimeError> {
        let name = self.network_name(app);
        let _g = self.inner.net_lock.lock().await;
        if let Some(id) = self.find_network(&name).await? {
            return Ok(id);
        }
        let mut labels = self.base_labels(app);
        labels.insert(L_NETWORK.to_string(), name.clone());
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            // A bridge the host firewall knows as this rack's.
            options: Some(HashMap::from([(
                crate::firewall::BRIDGE_NAME_OPTION.to_string(),
                crate::firewall::bridge_name(self.ns(), &name),
            )])),
            ..Default::default()
        };
        let r = self
            .docker()
            .create_network(req)
            .await
            .map_err(|e| engine(&format!("creating network {name}"), e))?;
        Ok(r.id)
    }

    async fn find_network(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{L_NETWORK}={name}")])]);
        let nets = self
            .docker()
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| engine("listing networks", e))?;
        Ok(nets
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .find_map(|n| n.id))
    }

    pub(super) async fn remove_network(&self, app: &str) -> Result<(), RuntimeError> {
        let name = self.network_name(app);
        let _g = self.inner.net_lock.lock().await;
        while let Some(id) = self.find_network(&name).await? {
            match self.docker().remove_network(&id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(engine(&format!("removing network {name}"), e)),
            }
        }
        Ok(())
    }

    /// `PORT`: the app's setting, else the image's single EXPOSEd port,
    /// else 5000. Fails when the image is missing.
    pub(super) async fn port_for(&self, spec: &ReleaseSpec) -> Result<u16, RuntimeError> {
        let image = match self.docker().inspect_image(&spec.image).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => {
                return Err(RuntimeError::NotFound(format!(
                    "image {} not found",
                    spec.image
                )))
            }
            Err(e) => return Err(engine(&format!("inspecting image {}", spec.image), e)),
        };
        if let Some(p) = spec.port {
            return Ok(p);
        }
        let exposed = image
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default();
        let ports: Vec<u16> = exposed
            .iter()
            .filter_map(|p| {
                let (n, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                (proto == "tcp").then(|| n.parse().ok()).flatten()
            })
            .collect();
        Ok(match ports.as_slice() {
            [one] => *one,
            _ => 5000,
        })
    }

    /// `KEY=VALUE` list: the release's config, then the runtime's own.
    pub(super) fn env_for(&self, spec: &ReleaseSpec, port: u16) -> Vec<String> {
        let mut env: Vec<String> = spec
            .env
            .to_docker_env()
            .into_iter()
            .filter(|kv| {
                let key = kv.split('=').next().unwrap_or("");
                !RESERVED_ENV.contains(&key)
            })
            .collect();
        env.push(format!("PORT={port}"));
        env.push(format!("RACK_APP={}", spec.app));
        env.push(format!("RACK_RELEASE=v{}", spec.version));
        env
    }

    /// The host config every rack container gets: init, rotated logs, the
    /// app network, limits; no mounts (callers add the app's own volumes,
    /// `volumes.rs`; never a bind mount), no privileges, no published
    /// ports.
    pub(super) fn host_config(
        &self,
        net: &str,
        memory: Option<i64>,
        nano_cpus: Option<i64>,
        restart: bool,
    ) -> HostConfig {
        let o = &self.inner.opts;
        HostConfig {
            init: Some(true),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), o.log_max_size.clone()),
                    ("max-file".to_string(), o.log_max_file.to_string()),
                ])),
            }),
            network_mode: Some(net.to_string()),
            memory: memory.or(o.default_memory),
            nano_cpus: nano_cpus.or(o.default_nano_cpus),
            pids_limit: o.pids_limit,
            restart_policy: Some(RestartPolicy {
                name: Some(if restart {
                    RestartPolicyNameEnum::UNLESS_STOPPED
                } else {
                    RestartPolicyNameEnum::NO
                }),
                maximum_retry_count: None,
            }),
            privileged: Some(false),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // Raw sockets (spoofing on the app network) and the
            // rarely-needed privileged ones an app has no use for.
            cap_drop: Some(DROPPED_CAPS.iter().map(|c| c.to_string()).collect()),
            publish_all_ports: Some(false),
            ..Default::default()
        }
    }

    pub(super) fn networking(&self, net: &str) -> NetworkingConfig {
        NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.to_string(),
                EndpointSettings::default(),
            )])),
        }
    }

    /// Creates (does not start) one process instance of `spec`.
    pub(super) async fn create_instance(
        &self,
        spec: &ReleaseSpec,
        net: &str,
        port: u16,
        w: &NewInstance<'_>,
    ) -> Result<String, RuntimeError> {
        let p = w.process;
        let name = format!(
            "{}-{}-{}-{}-{}",
            self.ns(),
            spec.app,
            p.kind,
            w.number,
            spec.deploy_id
        );
        let mut labels = self.base_labels(&spec.app);
        labels.extend([
            (L_RELEASE.to_string(), spec.version.to_string()),
            (L_DEPLOY.to_string(), spec.deploy_id.clone()),
            (L_TYPE.to_string(), p.kind.clone()),
            (L_NUMBER.to_string(), w.number.to_string()),
            (L_PORT.to_string(), port.to_string()),
        ]);
        let mut host = self.host_config(net, p.memory_bytes, p.nano_cpus, true);
        host.mounts = Some(self.mounts_for(spec, Some(&p.kind)).await?);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(self.env_for(spec, port)),
            cmd: p
                .command
                .as_ref()
                .map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()]),
            labels: Some(labels),
            host_config: Some(host),
            networking_config: Some(self.networking(net)),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let mut r = self
            .docker()
            .create_container(Some(opts.clone()), body.clone())
            .await;
        if let Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) = &r
        {
            // A dead leftover with this name (recovery re-creating an
            // instance): it is ours, remove it and try once more.
            self.force_remove(&name).await;
            r = self.docker().create_container(Some(opts), body).await;
        }
        let r = r.map_err(|e| engine(&format!("creating {}.{}", p.kind, w.number), e))?;
        Ok(r.id)
    }

    pub(super) async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.docker().start_container(id, None).await
    }

    /// SIGTERM, SIGKILL after the grace period, then remove. Errors are
    /// logged: the container may already be gone.
    pub(super) async fn stop_and_remove(&self, id: &str) {
        let t = self.inner.opts.stop_grace.as_secs().min(i32::MAX as u64) as i32;
        let opts = StopContainerOptionsBuilder::new().t(t).build();
        match self.docker().stop_container(id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return,
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "stopping container"),
        }
        self.force_remove(id).await;
    }

    pub(super) async fn force_remove(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker().remove_container(id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            // 409: removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "removing container"),
        }
    }

    pub(super) async fn started_at(&self, id: &str) -> Option<String> {
        let c = self.docker().inspect_container(id, None).await.ok()?;
        c.state?.started_at
    }

    /// The last `n` lines a container wrote (stdout and stderr).
    pub(super) async fn last_log_lines(&self, id: &str, n: usize) -> Vec<String> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut stream = self.docker().logs(id, Some(opts));
        let mut text = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.extend_from_slice(chunk.as_ref());
        }
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<String> = text.lines().map(clean_line).collect();
        let skip = lines.len().saturating_sub(n);
        lines.into_iter().skip(skip).collect()
    }

    /// Image references every container of the engine was created from.
    pub(super) async fn images_in_use(
        &self,
    ) -> Result<std::collections::HashSet<String>, RuntimeError> {
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let list = self
            .docker()
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine("listing containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.image).collect())
    }

    /// `rack/APP:*` tags present in the engine.
    pub(super) async fn app_image_tags(&self, app: &str) -> Result<Vec<String>, RuntimeError> {
        crate::images::app_image_tags(self.docker(), app)
            .await
            .map_err(|e| engine("listing images", e))
    }

    /// Untags (and deletes when it was the last tag) one image; `false`
    /// when it is in use or already gone.
    pub(super) async fn remove_image_tag(&self, tag: &str) -> bool {
        let opts = RemoveImageOptionsBuilder::new().build();
        match self.docker().remove_image(tag, Some(opts), None).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => false,
            Err(e) => {
                tracing::warn!(image = tag, error = %e, "removing image");
                false
            }
        }
    }
}

/// A line of container output made safe to show in a terminal: control
/// characters (escape sequences, CR) are escaped, tabs kept.
pub(super) fn clean_line(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    for c in l.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
