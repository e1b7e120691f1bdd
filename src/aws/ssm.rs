//! The SSM parameters that hold an app's config values: one SecureString
//! per value, `/rack/RACK/APP/vN/KEY`, encrypted under the rack's KMS key.
//! ECS tasks get them as `secrets` references, so a task definition shows
//! parameter names, never values.
//!
//! This module knows nothing of releases or task definitions; it is
//! handed key/value pairs and gives back parameter ARNs.

use aws_sdk_ssm::types::ParameterType;

use super::{AwsContext, AwsError, Result};

/// `/rack/RACK/APP/vN/KEY`
pub fn parameter_name(ctx: &AwsContext, app: &str, version: i64, key: &str) -> String {
    format!("/rack/{}/{app}/v{version}/{key}", ctx.rack)
}

/// `/rack/RACK`: every parameter of the rack.
pub fn rack_path(ctx: &AwsContext) -> String {
    format!("/rack/{}", ctx.rack)
}

/// `/rack/RACK/APP`: every parameter of the app, all versions.
pub fn app_path(ctx: &AwsContext, app: &str) -> String {
    format!("/rack/{}/{app}", ctx.rack)
}

fn parameter_arn(ctx: &AwsContext, account_id: &str, name: &str) -> String {
    format!("arn:aws:ssm:{}:{account_id}:parameter{name}", ctx.region)
}

/// Puts every non-empty value of version `version` of the app's config
/// as a SecureString under `key_arn`; returns (KEY, parameter ARN) pairs.
/// Empty values are skipped: SSM cannot hold one (and an empty string
/// reveals nothing, so the caller may pass it in the open).
pub async fn put_config<'a>(
    ctx: &AwsContext,
    key_arn: &str,
    account_id: &str,
    app: &str,
    version: i64,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(String, String)>> {
    let mut refs = Vec::new();
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        let name = parameter_name(ctx, app, version, key);
        ctx.ssm
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .key_id(key_arn)
            .overwrite(true)
            .description(format!("rack {} app {app} v{version} {key}", ctx.rack))
            .send()
            .await
            .map_err(|e| AwsError::api("SSM.PutParameter", e))?;
        refs.push((key.to_string(), parameter_arn(ctx, account_id, &name)));
    }
    Ok(refs)
}

/// Deletes the SSM parameters under `path` (recursively); returns how
/// many there were.
pub async fn delete_parameters(ctx: &AwsContext, path: &str) -> Result<usize> {
    let request = ctx.ssm.get_parameters_by_path().path(path).recursive(true);
    let names: Vec<String> =
        paginated!("SSM.GetParametersByPath", request, |p| p.parameters(), None)?
            .iter()
            .filter_map(|p| p.name().map(str::to_string))
            .collect();
    // DeleteParameters takes at most ten names.
    for chunk in names.chunks(10) {
        ctx.ssm
            .delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::api("SSM.DeleteParameters", e))?;
    }
    Ok(names.len())
}
