//! The local provider's resources: one Docker container per resource,
//! named `NS-res.NAME` (app containers and networks never hold a `.`, app
//! volumes start `NS.`, so nothing an app or its volumes are called can
//! collide), with a named volume of the same name for
//! its data and a network of its own. It joins the network of each linked
//! app (`NS-APP`) under the alias `NAME.resource`, and only those: an app
//! that is not linked has no route to it. Restart policy
//! `unless-stopped`; a container removed behind the rack's back is
//! re-created on the same volume (`watch` reports it, the `Deployer`
//! re-ensures it).
//!
//! - `exec.rs`: streams in and out of `docker exec`.
//! - `dumps.rs`: export, import, backups as files under
//!   `DATA_DIR/backups/NAME/`.
//!
//! It relies only on the official images' contract (`POSTGRES_PASSWORD`,
//! `POSTGRES_USER`, `POSTGRES_DB`, the data directories, the ports, the
//! clients on PATH). It knows nothing of apps beyond their network names.

mod dumps;
mod exec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::StreamExt;

use super::{
    BackupInfo, Endpoint, Kind, Reader, Resource, ResourceError, Resources, Result, Terminal,
    Writer, PG_USER,
};
use crate::progress::Progress;
use crate::runtime::local::LocalRuntime;
use crate::runtime::OneOffIo;

const L_RESOURCE: &str = "rack.resource";
const L_RESOURCE_NS: &str = "rack.resource-ns";
const L_KIND: &str = "rack.resource-kind";

/// How long a resource may take to accept connections (a first start
/// initialises its data directory).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The Docker-backed `Resources`.
pub struct LocalResources {
    rt: LocalRuntime,
    ns: String,
    /// `DATA_DIR/backups`
    backups: PathBuf,
    /// One change of a resource's container at a time (ensure, import).
    locks: std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

fn engine(what: &str, e: DockerError) -> ResourceError {
    ResourceError::Failed(format!("{what}: Docker engine: {e}"))
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl LocalResources {
    pub fn new(rt: LocalRuntime, backups: PathBuf) -> LocalResources {
        let ns = rt.options().namespace.clone();
        LocalResources {
            rt,
            ns,
            backups,
            locks: Default::default(),
        }
    }

    fn docker(&self) -> &Docker {
        self.rt.engine()
    }

    /// The container's, the volume's and the own network's name.
    fn object(&self, name: &str) -> String {
        format!("{}-res.{name}", self.ns)
    }

    fn lock_of(&self, name: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    fn labels(&self, r: Option<&Resource>, name: &str) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (L_RESOURCE.to_string(), name.to_string()),
            (L_RESOURCE_NS.to_string(), self.ns.clone()),
        ]);
        if let Some(r) = r {
            l.insert(L_KIND.to_string(), r.kind.as_str().to_string());
        }
        l
    }

    async fn ensure_image(&self, image: &str, progress: &Progress) -> Result<()> {
        if self.docker().inspect_image(image).await.is_ok() {
            return Ok(());
        }
        progress.stage(format!("Pulling {image}"));
        let opts = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut pull = self.docker().create_image(Some(opts), None, None);
        while let Some(item) = pull.next().await {
            item.map_err(|e| engine(&format!("pulling {image}"), e))?;
        }
        Ok(())
    }

    async fn ensure_volume(&self, r: &Resource) -> Result<()> {
        let name = self.object(&r.name);
        if self.docker().inspect_volume(&name).await.is_ok() {
            return Ok(());
        }
        let req = VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(self.labels(Some(r), &r.name)),
            ..Default::default()
        };
        self.docker()
            .create_volume(req)
            .await
            .map_err(|e| engine(&format!("creating volume {name}"), e))?;
        Ok(())
    }

    async fn ensure_own_network(&self, r: &Resource) -> Result<String> {
        let name = self.object(&r.name);
        if let Ok(n) = self.docker().inspect_network(&name, None).await {
            return Ok(n.id.unwrap_or(name));
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels(Some(r), &r.name)),
            ..Default::default()
        };
        match self.docker().create_network(req).await {
            Ok(n) => Ok(n.id),
            Err(e) => Err(engine(&format!("creating network {name}"), e)),
        }
    }

    fn container_body(&self, r: &Resource, net: &str) -> ContainerCreateBody {
        let pw = r.password.expose();
        let (env, cmd, data) = match r.kind {
            Kind::Postgres => (
                vec![
                    format!("POSTGRES_PASSWORD={pw}"),
                    format!("POSTGRES_USER={PG_USER}"),
                    format!("POSTGRES_DB={}", r.database()),
                ],
                None,
                "/var/lib/postgresql/data",
            ),
            Kind::Redis => (
                Vec::new(),
                // AOF for durability; no RDB save points (an import
                // replaces dump.rdb and reloads it, see dumps.rs).
                Some(
                    [
                        "redis-server",
                        "--requirepass",
                        pw,
                        "--appendonly",
                        "yes",
                        "--save",
                        "",
                        "--enable-debug-command",
                        "local",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                "/data",
            ),
        };
        let host = HostConfig {
            init: Some(true),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            network_mode: Some(net.to_string()),
            mounts: Some(vec![Mount {
                target: Some(data.into()),
                source: Some(self.object(&r.name)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(r.image.clone()),
            env: Some(env),
            cmd,
            labels: Some(self.labels(Some(r), &r.name)),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// The container's id, creating it when missing.
    async fn ensure_container(
        &self,
        r: &Resource,
        net: &str,
        progress: &Progress,
    ) -> Result<String> {
        let name = self.object(&r.name);
        match self.docker().inspect_container(&name, None).await {
            Ok(c) => return Ok(c.id.unwrap_or(name)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(&format!("inspecting {name}"), e)),
        }
        progress.stage(format!("Creating the {} container of {}", r.kind, r.name));
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let c = self
            .docker()
            .create_container(Some(opts), self.container_body(r, net))
            .await
            .map_err(|e| engine(&format!("creating container {name}"), e))?;
        Ok(c.id)
    }

    /// Joins the networks of exactly the linked apps (and its own).
    async fn converge_networks(&self, r: &Resource, id: &str, own: &str) -> Result<()> {
        let info = self
            .docker()
            .inspect_container(id, None)
            .await
            .map_err(|e| engine("inspecting the resource container", e))?;
        let joined: HashMap<String, String> = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, e)| (name, e.network_id.unwrap_or_default()))
            .collect();
        let mut wanted = Vec::new();
        for app in &r.links {
            self.rt
                .app_network(app)
                .await
                .map_err(|e| ResourceError::Failed(e.to_string()))?;
            wanted.push(format!("{}-{app}", self.ns));
        }
        let own_name = self.object(&r.name);
        for (name, net_id) in &joined {
            if *name == own_name || net_id == own || wanted.contains(name) {
                continue;
            }
            let req = NetworkDisconnectRequest {
                container: id.to_string(),
                force: Some(true),
            };
            if let Err(e) = self.docker().disconnect_network(name, req).await {
                if !is_not_found(&e) {
                    return Err(engine(&format!("leaving network {name}"), e));
                }
            }
        }
        for name in wanted.iter().filter(|n| !joined.contains_key(*n)) {
            let req = NetworkConnectRequest {
                container: id.to_string(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![alias(&r.name)]),
                    ..Default::default()
                }),
            };
            self.docker()
                .connect_network(name, req)
                .await
                .map_err(|e| engine(&format!("joining network {name}"), e))?;
        }
        Ok(())
    }

    async fn ensure_impl(&self, r: &Resource, progress: &Progress) -> Result<()> {
        let lock = self.lock_of(&r.name);
        let _g = lock.lock().await;
        self.ensure_image(&r.image, progress).await?;
        self.ensure_volume(r).await?;
        let own = self.ensure_own_network(r).await?;
        let id = self
            .ensure_container(r, &self.object(&r.name), progress)
            .await?;
        self.converge_networks(r, &id, &own).await?;
        let running = self
            .docker()
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            self.docker()
                .start_container(&id, None)
                .await
                .map_err(|e| engine(&format!("starting {}", r.name), e))?;
        }
        self.wait_ready(r, &id).await
    }

    /// Waits until `r` accepts connections, checked with its own client
    /// inside the container.
    async fn wait_ready(&self, r: &Resource, id: &str) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.is_ready(r, id).await {
                return Ok(());
            }
            let state = self
                .docker()
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|c| c.state);
            let dead = state
                .as_ref()
                .is_some_and(|s| s.running != Some(true) && s.restarting != Some(true));
            if dead || Instant::now() > deadline {
                let logs = self.last_lines(id, 10).await;
                return Err(ResourceError::Failed(format!(
                    "{} did not start accepting connections{}:\n{}",
                    r.name,
                    if dead { " (its container stopped)" } else { "" },
                    logs.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn is_ready(&self, r: &Resource, id: &str) -> bool {
        let pw = r.password.expose();
        match r.kind {
            Kind::Postgres => {
                let db = r.database();
                let argv = [
                    "pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    PG_USER,
                    "-d",
                    &db,
                ];
                exec::run_checked(self.docker(), id, &argv, Vec::new(), "pg_isready")
                    .await
                    .is_ok()
            }
            Kind::Redis => {
                let argv = ["redis-cli", "-h", "127.0.0.1", "ping"];
                let env = vec![format!("REDISCLI_AUTH={pw}")];
                exec::run_checked(self.docker(), id, &argv, env, "redis-cli ping")
                    .await
                    .is_ok_and(|out| out == "PONG")
            }
        }
    }

    async fn last_lines(&self, id: &str, n: usize) -> Vec<String> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut s = self.docker().logs(id, Some(opts));
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = s.next().await {
            for l in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                lines.push(format!("  {l}"));
            }
        }
        lines
    }

    /// The running container's id, or why there is none.
    async fn running(&self, name: &str) -> Result<String> {
        match self
            .docker()
            .inspect_container(&self.object(name), None)
            .await
        {
            Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(true) => {
                Ok(c.id.unwrap_or_else(|| self.object(name)))
            }
            Ok(_) => Err(ResourceError::Failed(format!(
                "{name} is not running (resources:info {name})"
            ))),
            Err(e) if is_not_found(&e) => Err(ResourceError::Failed(format!(
                "{name} has no container (the rack re-creates it; try again in a moment)"
            ))),
            Err(e) => Err(engine("inspecting the resource container", e)),
        }
    }

    async fn status_impl(&self, r: &Resource) -> Result<String> {
        match self
            .docker()
            .inspect_container(&self.object(&r.name), None)
            .await
        {
            Ok(c) => {
                let status = c
                    .state
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                if status == "running"
                    && !self.is_ready(r, c.id.as_deref().unwrap_or_default()).await
                {
                    return Ok("starting".into());
                }
                Ok(status)
            }
            Err(e) if is_not_found(&e) => Ok("missing".into()),
            Err(e) => Err(engine("inspecting the resource container", e)),
        }
    }

    async fn remove_impl(&self, name: &str) -> Result<()> {
        let lock = self.lock_of(name);
        let _g = lock.lock().await;
        let object = self.object(name);
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker().remove_container(&object, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(&format!("removing container {object}"), e)),
        }
        let opts = RemoveVolumeOptionsBuilder::new().force(true).build();
        match self.docker().remove_volume(&object, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(&format!("removing volume {object}"), e)),
        }
        match self.docker().remove_network(&object).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine(&format!("removing network {object}"), e)),
        }
        dumps::remove_backups(&self.backups, name).await
    }

    async fn console_impl(&self, r: &Resource, io: OneOffIo, tty: Option<Terminal>) -> Result<i64> {
        let id = self.running(&r.name).await?;
        let (argv, env) = client(r);
        let e = exec::Exec {
            argv,
            env,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: Some(io.stderr),
            tty,
            what: "console",
        };
        Ok(exec::exec(self.docker(), &id, e).await?.code)
    }

    async fn watch_impl(&self, gone: tokio::sync::mpsc::Sender<String>) {
        loop {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), vec!["destroy".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{L_RESOURCE_NS}={}", self.ns)],
                ),
            ]);
            let opts = EventsOptionsBuilder::new().filters(&filters).build();
            let mut events = self.docker().events(Some(opts));
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                let name = ev
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove(L_RESOURCE));
                if let Some(name) = name {
                    if gone.send(name).await.is_err() {
                        return;
                    }
                }
            }
            if gone.is_closed() {
                return;
            }
            // The engine went away (restart): listen again shortly.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The alias linked apps reach a resource by.
fn alias(name: &str) -> String {
    format!("{name}.resource")
}

/// The type's interactive client and its environment (the password in the
/// environment, never in the argv).
fn client(r: &Resource) -> (Vec<String>, Vec<String>) {
    let pw = r.password.expose();
    match r.kind {
        Kind::Postgres => (
            ["psql", "-U", PG_USER, "-d", &r.database()]
                .map(String::from)
                .to_vec(),
            vec![format!("PGPASSWORD={pw}")],
        ),
        Kind::Redis => (
            vec!["redis-cli".to_string()],
            vec![format!("REDISCLI_AUTH={pw}")],
        ),
    }
}

impl Resources for LocalResources {
    fn endpoint(&self, r: &Resource) -> Endpoint {
        Endpoint {
            host: alias(&r.name),
            port: r.kind.port(),
        }
    }

    fn ensure<'a>(&'a self, r: &'a Resource, progress: &'a Progress) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.ensure_impl(r, progress))
    }

    fn status<'a>(&'a self, r: &'a Resource) -> BoxFuture<'a, Result<String>> {
        Box::pin(self.status_impl(r))
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_impl(name))
    }

    fn console<'a>(
        &'a self,
        r: &'a Resource,
        io: OneOffIo,
        tty: Option<Terminal>,
    ) -> BoxFuture<'a, Result<i64>> {
        Box::pin(self.console_impl(r, io, tty))
    }

    fn export<'a>(&'a self, r: &'a Resource, out: Writer) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.export_impl(r, out))
    }

    fn import<'a>(&'a self, r: &'a Resource, input: Reader) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.import_impl(r, input))
    }

    fn backup<'a>(
        &'a self,
        r: &'a Resource,
        trigger: &'a str,
    ) -> BoxFuture<'a, Result<BackupInfo>> {
        Box::pin(self.backup_impl(r, trigger))
    }

    fn backups<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<BackupInfo>>> {
        Box::pin(dumps::list_backups(&self.backups, name))
    }

    fn restore<'a>(&'a self, r: &'a Resource, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.restore_impl(r, id))
    }

    fn prune_backups<'a>(
        &'a self,
        name: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(dumps::prune_backups(&self.backups, name, keep))
    }

    fn watch(&self, gone: tokio::sync::mpsc::Sender<String>) -> BoxFuture<'_, ()> {
        Box::pin(self.watch_impl(gone))
    }
}
