//! Releases and config. Plaintext config values exist only inside this
//! module and leave it only as `ConfigVars` handed to a caller that shows
//! them to an admin, or (later) as a `SecretEnv` handed straight to container
//! creation. The store only ever sees ciphertext.

pub mod config;
pub mod crypto;
pub mod procfile;
pub mod secret_env;

pub use secret_env::SecretEnv;
