//! End-to-end tests: the real `rack` binary, the real OpenSSH client and
//! (for pushes) the real `git`.

#[cfg(feature = "aws")]
mod aws;
mod build_secrets;
mod builds;
mod client;
mod commands;
mod disk;
mod git;
mod harness;
mod hostile;
mod http;
mod isolation;
mod oneoff;
mod ops;
mod readme;
mod releases;
mod resources;
mod secrets;
mod timers;
mod up;
mod volumes;
