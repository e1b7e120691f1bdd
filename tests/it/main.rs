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
mod hardening;
mod harness;
mod hostile;
mod http;
mod https;
mod isolation;
mod oneoff;
mod ops;
mod pebble;
mod readme;
mod releases;
mod resources;
mod secrets;
mod timers;
mod up;
mod volumes;
