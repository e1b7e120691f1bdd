//! Pushing a built image (`rack/APP:BUILD` on the rack's Docker engine) to
//! the app's ECR repository.
//!
//! Credentials come from `GetAuthorizationToken`, fetched for every push
//! (tokens last 12 hours; a long-lived rack must never hold a stale one).
//! The token is base64 of `AWS:PASSWORD`. The registry host is the token's
//! proxy endpoint, unless `RACK_ECR_REGISTRY` names another (tests push to a
//! local registry standing in for ECR's). The pushed image is then named by
//! digest, `REGISTRY/rack-RACK/APP@sha256:...`, which is what task
//! definitions reference: a tag could move, a digest cannot.
//!
//! `apps:destroy` deletes the repository with [`delete_repository`].

use base64::Engine;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::{or_absent, AwsContext, AwsError, Result};
use crate::progress::Progress;

/// The env var that overrides the registry host images are pushed to.
pub const REGISTRY_ENV: &str = "RACK_ECR_REGISTRY";

/// An image as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// `sha256:...`
    pub digest: String,
    /// `REGISTRY/rack-RACK/APP@sha256:...`: what a task definition runs.
    pub reference: String,
    /// `REGISTRY/rack-RACK/APP:TAG`
    pub tagged: String,
}

/// Registry credentials from a fresh `GetAuthorizationToken`: (host,
/// username, password).
async fn credentials(ctx: &AwsContext) -> Result<(String, String, String)> {
    let out = ctx
        .ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| AwsError::api("ECR.GetAuthorizationToken", e))?;
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| AwsError::Invalid("ECR returned no authorization data".into()))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| AwsError::Invalid("ECR returned no authorization token".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            AwsError::Invalid("ECR authorization token is not base64 of USER:PASSWORD".into())
        })?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| AwsError::Invalid("ECR authorization token is not USER:PASSWORD".into()))?;
    let host = data
        .proxy_endpoint()
        .unwrap_or_default()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    Ok((host, user.to_string(), password.to_string()))
}

/// `... digest: sha256:abc size: 527` → `sha256:abc`.
fn digest_in(status: &str) -> Option<String> {
    let rest = status.split("digest: ").nth(1)?;
    let d = rest.split_whitespace().next()?;
    (d.starts_with("sha256:") && d.len() == 71).then(|| d.to_string())
}

/// Pushes `local_tag` as `tag` to the app's repository and returns it by
/// digest. The registry is the token's, or `RACK_ECR_REGISTRY`.
pub async fn push_image(
    ctx: &AwsContext,
    docker: &Docker,
    local_tag: &str,
    app: &str,
    tag: &str,
    progress: &Progress,
) -> Result<PushedImage> {
    let registry = std::env::var(REGISTRY_ENV).ok().filter(|r| !r.is_empty());
    push_image_to(ctx, docker, local_tag, app, tag, registry, progress).await
}

/// [`push_image`] with an explicit registry override.
pub async fn push_image_to(
    ctx: &AwsContext,
    docker: &Docker,
    local_tag: &str,
    app: &str,
    tag: &str,
    registry_override: Option<String>,
    progress: &Progress,
) -> Result<PushedImage> {
    let (token_host, user, password) = credentials(ctx).await?;
    let registry = registry_override.unwrap_or(token_host);
    if registry.is_empty() {
        return Err(AwsError::Invalid(
            "ECR returned no registry endpoint".into(),
        ));
    }
    let repo = format!("{registry}/{}", ctx.repository_name(app));
    let tagged = format!("{repo}:{tag}");
    docker
        .tag_image(
            local_tag,
            Some(TagImageOptionsBuilder::new().repo(&repo).tag(tag).build()),
        )
        .await
        .map_err(|e| AwsError::Docker(format!("tagging {local_tag} as {tagged}: {e}")))?;
    progress.stage(format!("Pushing {tagged}"));
    let creds = DockerCredentials {
        username: Some(user),
        password: Some(password),
        serveraddress: Some(registry.clone()),
        ..Default::default()
    };
    let mut stream = docker.push_image(
        &repo,
        Some(PushImageOptionsBuilder::new().tag(tag).build()),
        Some(creds),
    );
    let mut digest = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let Some(status) = info.status else { continue };
                if let Some(d) = digest_in(&status) {
                    digest = Some(d);
                }
                // Per-layer byte counters are noise in a push session;
                // show each layer's outcome and the final digest.
                if info.progress_detail.is_none()
                    || matches!(
                        status.as_str(),
                        "Pushed" | "Layer already exists" | "Mounted from"
                    )
                {
                    progress.detail(status);
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    // The pushed name is only a means of transport: drop the extra tag
    // (the image keeps its rack/APP:BUILD tag).
    untag(docker, &tagged).await;
    if let Some(f) = failure {
        return Err(AwsError::Docker(format!("pushing {tagged}: {f}")));
    }
    let digest = digest.ok_or_else(|| {
        AwsError::Docker(format!("pushing {tagged}: the registry reported no digest"))
    })?;
    progress.detail(format!("pushed {repo}@{digest}"));
    Ok(PushedImage {
        reference: format!("{repo}@{digest}"),
        digest,
        tagged,
    })
}

/// Removes the name `image` from the engine, never its layers (best
/// effort: an image that is gone is fine).
pub async fn untag(docker: &Docker, image: &str) {
    let _ = docker
        .remove_image(
            image,
            Some(RemoveImageOptionsBuilder::new().noprune(true).build()),
            None,
        )
        .await;
}

/// Whether the image `reference` (`REGISTRY/REPO@sha256:...` as a task
/// definition runs it, or `REGISTRY/REPO:TAG`) is still in ECR: a rollback
/// to a release whose image expired is refused up front.
pub async fn image_exists(ctx: &AwsContext, reference: &str) -> Result<bool> {
    use aws_sdk_ecr::types::ImageIdentifier;
    let Some((_, rest)) = reference.split_once('/') else {
        return Ok(false);
    };
    let (repo, id) = match rest.split_once('@') {
        Some((repo, digest)) => (
            repo,
            ImageIdentifier::builder().image_digest(digest).build(),
        ),
        None => match rest.rsplit_once(':') {
            Some((repo, tag)) => (repo, ImageIdentifier::builder().image_tag(tag).build()),
            None => return Ok(false),
        },
    };
    if let Some(registry) = std::env::var(REGISTRY_ENV).ok().filter(|r| !r.is_empty()) {
        // Pushed to a plain registry instead of ECR (tests): ask it.
        let reference = match &id.image_digest {
            Some(d) => d.clone(),
            None => id.image_tag.clone().unwrap_or_default(),
        };
        return Ok(
            registry_has(&registry, &format!("/v2/{repo}/manifests/{reference}")).await? == 200,
        );
    }
    let answer = ctx
        .ecr
        .batch_get_image()
        .repository_name(repo)
        .image_ids(id)
        .send()
        .await;
    let Some(out) = or_absent("ECR.BatchGetImage", answer, AwsError::is_not_found)? else {
        return Ok(false);
    };
    Ok(!out.images().is_empty())
}

/// The status of a HEAD request for `path` on a plain-HTTP registry.
async fn registry_has(registry: &str, path: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |e: std::io::Error| AwsError::Invalid(format!("registry {registry}: {e}"));
    let req = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {registry}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json\r\n\
         Connection: close\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(registry)
        .await
        .map_err(fail)?;
    s.write_all(req.as_bytes()).await.map_err(fail)?;
    let mut head = Vec::new();
    (&mut s)
        .take(64 * 1024)
        .read_to_end(&mut head)
        .await
        .map_err(fail)?;
    Ok(String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// Deletes the app's repository and its images (a repository already
/// gone is no error).
pub async fn delete_repository(ctx: &AwsContext, app: &str) -> Result<()> {
    let answer = ctx
        .ecr
        .delete_repository()
        .repository_name(ctx.repository_name(app))
        .force(true)
        .send()
        .await;
    or_absent("ECR.DeleteRepository", answer, AwsError::is_not_found)?;
    Ok(())
}

#[cfg(test)]
mod tests;
