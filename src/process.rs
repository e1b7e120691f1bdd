//! The one place child processes are spawned.
