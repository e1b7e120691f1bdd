//! Buildpack detection: which template from `buildpacks/` builds a commit
//! that has no Dockerfile, and the build args that point it at its images.
//!
//! The templates are compiled into the binary; see `buildpacks/README.md`.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::context::TreeInfo;
use super::dockerfile;

macro_rules! buildpack {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/buildpacks/",
                $name,
                "/buildpack.toml"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/buildpacks/",
                $name,
                "/Dockerfile"
            )),
        )
    };
}

/// In detection order: the first match wins.
const BUILDPACKS: &[(&str, &str, &str)] = &[
    buildpack!("node"),
    buildpack!("python"),
    buildpack!("go"),
    buildpack!("rust"),
    buildpack!("static"),
    buildpack!("procfile"),
];

#[derive(Debug, Deserialize)]
struct Manifest {
    name: String,
    description: String,
    detect: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Buildpack {
    pub name: &'static str,
    pub description: String,
    /// Root paths, any of which selects this buildpack (`dir/` for a directory).
    pub detect: Vec<String>,
    /// The Dockerfile template, used as is.
    pub dockerfile: &'static str,
}

impl Buildpack {
    /// Whether the root of the tree matches.
    pub fn matches(&self, tree: &TreeInfo) -> bool {
        self.detect.iter().any(|d| match d.strip_suffix('/') {
            Some(dir) => tree.has_dir(dir),
            None => tree.has_file(d),
        })
    }

    /// The `*_IMAGE` args the template declares before its first `FROM`, with
    /// their defaults (`BASE_IMAGE`, and `RUN_IMAGE` for two-stage builds).
    pub fn image_args(&self) -> Vec<(String, String)> {
        dockerfile::global_args(self.dockerfile)
            .into_iter()
            .filter(|(name, _)| name.ends_with("_IMAGE"))
            .map(|(name, default)| (name, default.unwrap_or_default()))
            .collect()
    }

    /// Build args for the image args from the operator's overrides: key
    /// `NAME` sets `BASE_IMAGE`, key `NAME.ARG` sets any image arg (so
    /// `go.RUN_IMAGE`). Args without an override keep the template default
    /// and are not passed.
    pub fn image_build_args(&self, overrides: &HashMap<String, String>) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for (arg, _default) in self.image_args() {
            let key = format!("{}.{arg}", self.name);
            let value = overrides.get(&key).or_else(|| {
                (arg == "BASE_IMAGE")
                    .then(|| overrides.get(self.name))
                    .flatten()
            });
            if let Some(v) = value {
                out.insert(arg, v.clone());
            }
        }
        out
    }
}

/// All buildpacks, in detection order.
pub fn all() -> &'static [Buildpack] {
    static ALL: OnceLock<Vec<Buildpack>> = OnceLock::new();
    ALL.get_or_init(|| {
        BUILDPACKS
            .iter()
            .map(|(name, manifest, df)| {
                let m: Manifest =
                    toml::from_str(manifest).expect("buildpack.toml is checked by the tests");
                debug_assert_eq!(&m.name, name);
                Buildpack {
                    name,
                    description: m.description,
                    detect: m.detect,
                    dockerfile: df,
                }
            })
            .collect()
    })
}

/// Looks a buildpack up by name.
pub fn by_name(name: &str) -> Option<&'static Buildpack> {
    all().iter().find(|b| b.name == name)
}

/// No Dockerfile and no buildpack matched: says what was looked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoMatch(pub String);

/// Picks the buildpack for a tree without a Dockerfile.
pub fn detect(tree: &TreeInfo) -> Result<&'static Buildpack, NoMatch> {
    if let Some(b) = all().iter().find(|b| b.matches(tree)) {
        return Ok(b);
    }
    let looked: Vec<String> = all()
        .iter()
        .map(|b| format!("{} ({})", b.detect.join(" or "), b.name))
        .collect();
    Err(NoMatch(format!(
        "no Dockerfile at the repository root and no buildpack matched; looked for: Dockerfile, {}",
        looked.join(", ")
    )))
}

#[cfg(test)]
mod tests;
