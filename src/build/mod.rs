//! Builds: a pushed commit → a Docker image tagged `rack/APP:BUILD_ID`.
//!
//! Owns: the build context (the commit's tree streamed as a tar straight
//! from git objects, `.dockerignore` applied, no `.git`, symlinks and
//! executable bits kept, submodules skipped with a warning: `context`,
//! `dockerignore`), the Dockerfile checks (declared `ARG`s, BuildKit-only
//! syntax: `dockerfile`), buildpack detection and the templates embedded from
//! `buildpacks/` (`buildpack`), and the [`Builder`] that runs the build
//! through bollard with the rack's limits (memory, CPU, network mode,
//! timeout, a rack-wide concurrency limit) and streams the output
//! (`builder`, `output`).
//!
//! Does not know: SSH or git transport (it gets a repo path and a commit
//! id), the store (it hands lines to a [`LogSink`] and returns a
//! [`BuildResult`]; recording the build is the caller's job), config values
//! beyond the build args it is handed, releases, or the runtime.

mod builder;
pub mod buildpack;
pub mod context;
pub mod dockerfile;
pub mod dockerignore;
mod flatten;
mod network;
pub mod output;
pub mod testing;

pub use builder::{
    app_image_tags, connect_docker, image_tag, new_build_id, BuildError, BuildKind, BuildLimits,
    BuildOptions, BuildRequest, BuildResult, Builder, LogSink, NetworkMode, MAX_BUILD_MEMORY,
};
pub use dockerfile::declared_args;

#[cfg(test)]
mod docker_tests;
