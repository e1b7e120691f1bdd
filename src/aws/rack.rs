//! The paths `rack install aws` / `rack uninstall aws` and the `[aws]`
//! table had before [`super::lifecycle`] and [`super::section`]; callers
//! outside `aws/` still use them.

pub use super::lifecycle::{install, install_with, uninstall, InstallOptions, RACK_TEMPLATE};
pub use super::section::{write_rack_toml, AwsSection, RackOutputs};
