//! The network of one build: a bridge of its own (so concurrent builds
//! cannot reach each other), never Docker's default `docker0`, named so the
//! host firewall (`crate::firewall`) covers it; removed when the build
//! ends, and leftovers of a crashed run swept when the builder starts.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;

use super::builder::BuildError;

const L_MANAGED: &str = "rack.managed";
const L_NS: &str = "rack.ns";
const L_BUILD: &str = "rack.build-network";

/// A build's network; dropping it removes it (in the background: the
/// engine may still be removing the build's last container).
pub(super) struct BuildNetwork {
    docker: Docker,
    pub name: String,
}

/// Creates `NS-build-BUILD_ID`.
pub(super) async fn create(
    docker: &Docker,
    ns: &str,
    build_id: &str,
) -> Result<BuildNetwork, BuildError> {
    let name = format!("{ns}-build-{build_id}");
    let req = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (L_MANAGED.to_string(), "1".to_string()),
            (L_NS.to_string(), ns.to_string()),
            (L_BUILD.to_string(), "1".to_string()),
        ])),
        options: Some(HashMap::from([(
            crate::firewall::BRIDGE_NAME_OPTION.to_string(),
            crate::firewall::bridge_name(ns, &name),
        )])),
        ..Default::default()
    };
    docker
        .create_network(req)
        .await
        .map_err(|e| BuildError::Unreachable(format!("creating the build network: {e}")))?;
    Ok(BuildNetwork {
        docker: docker.clone(),
        name,
    })
}

async fn remove(docker: &Docker, name: &str) {
    for _ in 0..10 {
        match docker.remove_network(name).await {
            Ok(()) => return,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            Err(e) => {
                tracing::debug!(network = name, error = %e, "build network not removed yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::warn!(network = name, "build network left behind");
}

impl BuildNetwork {
    /// Removes the network, waiting until the engine did.
    pub async fn remove(mut self) {
        let name = std::mem::take(&mut self.name);
        remove(&self.docker, &name).await;
    }
}

impl Drop for BuildNetwork {
    /// A cancelled build: removal goes on in the background (and what a
    /// runtime shut down stops is swept at the next start).
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let (docker, name) = (self.docker.clone(), std::mem::take(&mut self.name));
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { remove(&docker, &name).await });
        }
    }
}

/// Removes the build networks of namespace `ns` left by an earlier run.
pub(super) async fn sweep(docker: &Docker, ns: &str) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{L_BUILD}=1"), format!("{L_NS}={ns}")],
    )]);
    let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let Ok(nets) = docker.list_networks(Some(opts)).await else {
        return;
    };
    for n in nets {
        if let Some(name) = n.name {
            remove(docker, &name).await;
        }
    }
}
