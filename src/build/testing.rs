//! Test support (used by this crate's tests and by `tests/it`; the server
//! never calls it): the offline stand-ins for the buildpacks' base images.
//!
//! No registry can be reached from the test machine, so the buildpack
//! templates are built `FROM` a stub image: the test busybox image
//! (`rack-test/busybox:latest`, made by `scripts/test` with `docker import`)
//! plus shell stubs named `npm`, `pip`, `python3`, `go` and `cargo` in
//! `/usr/local/bin`. Each stub prints `stub: TOOL ARGS` (so the calls show
//! in the build output), appends `TOOL ARGS` to `/rack-stub.log`, and fakes
//! the effect the template relies on (`node_modules/`, a `target/release/`
//! binary, ...). The "binaries" they produce, and `npm start` /
//! `python3 app.py`, serve `/app` with busybox `httpd` on `$PORT`, so a
//! stub-built image can also be deployed and health-checked.
//!
//! ```text
//! let docker = rack::build::connect_docker(None).await?;
//! let base_images = rack::build::testing::ensure_stub_images(&docker).await?;
//! let options = BuildOptions { base_images, ..BuildOptions::default() };
//! ```

use std::collections::HashMap;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::builder::BuildError;
use super::buildpack;

/// The test base image (busybox-static imported as an image).
pub const TEST_BASE_IMAGE: &str = "rack-test/busybox:latest";
/// The stub image every buildpack builds from in the tests.
pub const STUB_IMAGE: &str = "rack-test/buildpack-stubs:latest";

/// What a test prints when Docker is down.
pub const DOCKER_DOWN: &str =
    "Docker engine not reachable at /var/run/docker.sock: start dockerd (scripts/test does)";

const STUBS: &[(&str, &str)] = &[
    ("npm", include_str!("stubs/npm")),
    ("pip", include_str!("stubs/pip")),
    ("python3", include_str!("stubs/python3")),
    ("go", include_str!("stubs/go")),
    ("cargo", include_str!("stubs/cargo")),
];

/// The `BuildOptions::base_images` map that points every image arg of every
/// buildpack at the stub image (two-stage templates run on busybox).
pub fn stub_base_images() -> HashMap<String, String> {
    let mut out = HashMap::new();
    for b in buildpack::all() {
        for (arg, _) in b.image_args() {
            let image = if arg == "BASE_IMAGE" {
                STUB_IMAGE
            } else {
                TEST_BASE_IMAGE
            };
            out.insert(format!("{}.{arg}", b.name), image.to_string());
        }
    }
    out
}

/// FNV-1a over the stub scripts: the label that says the image is current.
fn stubs_digest() -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for (name, script) in STUBS {
        for b in name.bytes().chain([0]).chain(script.bytes()).chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

const DIGEST_LABEL: &str = "rack-test.stubs";

fn stub_context() -> Vec<u8> {
    let dockerfile = format!(
        "ARG BASE_IMAGE={TEST_BASE_IMAGE}\nFROM ${{BASE_IMAGE}}\nCOPY stubs/ /usr/local/bin/\nLABEL {DIGEST_LABEL}={}\n",
        stubs_digest()
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(super::context::CONTEXT_MTIME);
        tar.append_data(&mut h, path, data).expect("in-memory tar");
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644);
    for (name, script) in STUBS {
        add(&format!("stubs/{name}"), script.as_bytes(), 0o755);
    }
    tar.into_inner().expect("in-memory tar")
}

/// Builds [`STUB_IMAGE`] unless it exists with the current stubs, and
/// returns [`stub_base_images`]. Fails if [`TEST_BASE_IMAGE`] is missing.
///
/// Never rebuilds an up-to-date image: a rebuild while another test builds
/// from it would move the tag under that test and defeat its cache checks.
pub async fn ensure_stub_images(docker: &Docker) -> Result<HashMap<String, String>, BuildError> {
    // Serialized within the process; tokio's Mutex works across runtimes.
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = LOCK.lock().await;
    if let Ok(img) = docker.inspect_image(STUB_IMAGE).await {
        let labels = img.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(DIGEST_LABEL) == Some(&stubs_digest()) {
            return Ok(stub_base_images());
        }
    }
    if docker.inspect_image(TEST_BASE_IMAGE).await.is_err() {
        return Err(BuildError::Failed(format!(
            "{TEST_BASE_IMAGE} is missing: scripts/test creates it (docker import of a busybox-static rootfs)"
        )));
    }
    let opts = BuildImageOptionsBuilder::new()
        .t(STUB_IMAGE)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream =
        docker.build_image(opts, None, Some(bollard::body_full(stub_context().into())));
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(s) = info.stream {
                    log.push_str(&s);
                }
                if let Some(e) = info.error_detail {
                    return Err(BuildError::Failed(format!(
                        "stub image: {:?}\n{log}",
                        e.message
                    )));
                }
            }
            Err(e) => return Err(BuildError::Failed(format!("stub image: {e}\n{log}"))),
        }
    }
    Ok(stub_base_images())
}

/// For tests: the local Docker engine, or a panic with [`DOCKER_DOWN`].
pub async fn test_docker() -> Docker {
    match super::connect_docker(None).await {
        Ok(d) => d,
        Err(e) => panic!("{DOCKER_DOWN} ({e})"),
    }
}
