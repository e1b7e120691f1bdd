//! The paths of an app's stack had before [`super::lifecycle`]; callers
//! outside `aws/` still use them.

pub use super::lifecycle::{
    app_outputs, create_app, destroy_app, AppOutputs, APP_TEMPLATE, MAX_HOSTS,
};
