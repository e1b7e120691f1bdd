//! How a build's image is named on the rack's Docker engine
//! (`rack/APP:BUILD`), shared by `build/` (which tags it) and the runtimes
//! (which run, list and prune it). Knows nothing of builds or the store.

use std::collections::HashMap;

use bollard::Docker;

/// The image tag of a build.
pub fn image_tag(app: &str, build_id: &str) -> String {
    format!("rack/{app}:{build_id}")
}

/// The build id a tag of `app` names (`rack/APP:BUILD` → `BUILD`).
pub fn build_of_tag<'a>(app: &str, tag: &'a str) -> Option<&'a str> {
    tag.strip_prefix(&image_tag(app, ""))
}

/// The app's build tags (`rack/APP:*`) present in the engine, sorted.
pub async fn app_image_tags(
    docker: &Docker,
    app: &str,
) -> Result<Vec<String>, bollard::errors::Error> {
    let prefix = image_tag(app, "");
    let repo = prefix.trim_end_matches(':');
    let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
    let images = docker
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await?;
    let mut tags: Vec<String> = images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .filter(|t| t.starts_with(&prefix))
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}
