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
mod tests {
    use super::*;

    fn tree(names: &[&str]) -> TreeInfo {
        TreeInfo {
            root: names.iter().map(|s| s.to_string()).collect(),
            ..TreeInfo::default()
        }
    }

    #[test]
    fn manifests_and_templates_are_sane() {
        assert_eq!(all().len(), BUILDPACKS.len());
        for b in all() {
            assert!(!b.detect.is_empty(), "{}", b.name);
            dockerfile::check_classic(b.dockerfile).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            let images = b.image_args();
            assert_eq!(
                images.first().map(|(a, _)| a.as_str()),
                Some("BASE_IMAGE"),
                "{}",
                b.name
            );
            assert!(
                images.iter().all(|(_, d)| !d.is_empty()),
                "{}: image args need public defaults",
                b.name
            );
            let ins = dockerfile::instructions(b.dockerfile);
            let first_from = ins.iter().find(|i| i.keyword == "FROM").expect("FROM");
            assert!(first_from.args.starts_with("${BASE_IMAGE}"), "{}", b.name);
            assert!(
                ins.iter().any(|i| i.keyword == "CMD"),
                "{}: needs a CMD",
                b.name
            );
        }
    }

    #[test]
    fn dependencies_install_before_the_source_is_copied() {
        for name in ["node", "python", "go", "rust"] {
            let b = by_name(name).expect(name);
            let ins = dockerfile::instructions(b.dockerfile);
            let copy_all = ins
                .iter()
                .position(|i| i.keyword == "COPY" && i.args.starts_with(". "))
                .expect("COPY . ");
            let first_run = ins.iter().position(|i| i.keyword == "RUN").expect("RUN");
            assert!(
                first_run < copy_all,
                "{name}: dependency RUN must come before COPY . ."
            );
        }
    }

    #[test]
    fn detection_order() {
        let cases: &[(&[&str], &str)] = &[
            (&["package.json", "index.html", "Procfile"], "node"),
            (&["requirements.txt"], "python"),
            (&["pyproject.toml", "public/"], "python"),
            (&["go.mod", "go.sum"], "go"),
            (&["Cargo.toml", "src/"], "rust"),
            (&["index.html"], "static"),
            (&["public/", "Procfile"], "static"),
            (&["Procfile", "run.sh"], "procfile"),
        ];
        for (names, want) in cases {
            assert_eq!(
                detect(&tree(names)).expect("match").name,
                *want,
                "{names:?}"
            );
        }
        // `public` as a file is not a directory.
        let e = detect(&tree(&["public", "README.md"])).expect_err("no match");
        for what in [
            "Dockerfile",
            "package.json",
            "requirements.txt",
            "pyproject.toml",
            "go.mod",
            "Cargo.toml",
            "index.html",
            "public/",
            "Procfile",
        ] {
            assert!(e.0.contains(what), "{e} lacks {what}");
        }
    }

    #[test]
    fn image_overrides() {
        let go = by_name("go").expect("go");
        let defaults: Vec<String> = go.image_args().into_iter().map(|(a, _)| a).collect();
        assert_eq!(defaults, vec!["BASE_IMAGE", "RUN_IMAGE"]);
        let mut o = HashMap::new();
        assert!(go.image_build_args(&o).is_empty());
        o.insert("go".to_string(), "stub-go".to_string());
        o.insert("go.RUN_IMAGE".to_string(), "stub-run".to_string());
        o.insert("node".to_string(), "stub-node".to_string());
        let args = go.image_build_args(&o);
        assert_eq!(args.len(), 2);
        assert_eq!(args["BASE_IMAGE"], "stub-go");
        assert_eq!(args["RUN_IMAGE"], "stub-run");
        o.insert("go.BASE_IMAGE".to_string(), "explicit".to_string());
        assert_eq!(go.image_build_args(&o)["BASE_IMAGE"], "explicit");
    }
}
