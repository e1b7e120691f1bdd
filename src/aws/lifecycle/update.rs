//! `rack update` on aws: the running binary's templates applied through
//! change sets, the rack's stack first, then each app's stack, one at a
//! time. `--dry-run` shows each change set and deletes it. A failed update
//! is rolled back by CloudFormation and fails with the stack's reason (the
//! app stacks are then left alone). The rack stack's `rack:version` tag
//! says which version it runs; an update that would skip a version that
//! declares itself required (or go back to an older one) is refused.

use std::path::Path;

use aws_sdk_cloudformation::types::Stack;

use super::super::cfn;
use super::super::section;
use super::{app_stacks_full, rack_section, APP_TEMPLATE, RACK_TEMPLATE};
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;

/// Versions that declare themselves required: a rack below one of them
/// must be updated to it before it goes past it (e.g. a state migration
/// only that version performs). None yet.
pub const REQUIRED_VERSIONS: &[&str] = &[];

/// The version this binary's templates are.
pub fn this_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.trim().split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Whether going from `from` (the stack's version; `None`: a stack older
/// than version tags) to `to` is allowed: never backwards, never past a
/// required version without stopping there.
pub fn check_path(from: Option<&str>, to: &str, required: &[&str]) -> Result<()> {
    let to_v = parse(to).ok_or_else(|| AwsError::Invalid(format!("bad version {to}")))?;
    let from_v = from.and_then(parse).unwrap_or((0, 0, 0));
    if from_v > to_v {
        return Err(AwsError::Invalid(format!(
            "the rack runs {}, newer than this binary ({to}): update with that version or a newer one",
            from.unwrap_or("?")
        )));
    }
    for r in required {
        let Some(r_v) = parse(r) else { continue };
        if from_v < r_v && r_v < to_v {
            return Err(AwsError::Invalid(format!(
                "version {r} is a required step: update the rack to {r} first, then to {to}"
            )));
        }
    }
    Ok(())
}

/// Applies (or with `dry_run` shows) the templates of this binary to the
/// rack's stack and then to each app's stack.
pub async fn update(
    ctx: &AwsContext,
    data_dir: &Path,
    dry_run: bool,
    progress: &Progress,
) -> Result<()> {
    let name = ctx.stack_name();
    let stack = cfn::describe(ctx, &name).await?.ok_or_else(|| {
        AwsError::NotFound(format!(
            "rack {} is not installed (no stack {name}): run `rack install aws --rack {}`",
            ctx.rack, ctx.rack
        ))
    })?;
    let from = cfn::tag(&stack, "rack:version").map(str::to_string);
    check_path(from.as_deref(), this_version(), REQUIRED_VERSIONS)?;
    let keep = |key: &str| cfn::parameter(&stack, key).unwrap_or("").to_string();
    let params = [
        ("RackName", ctx.rack.clone()),
        ("VpcId", keep("VpcId")),
        ("SubnetIds", keep("SubnetIds")),
    ];
    let tags = super::rack_tags(ctx);
    progress.stage(format!(
        "{} stack {name} ({} → {})",
        if dry_run { "Changes to" } else { "Updating" },
        from.as_deref().unwrap_or("unversioned"),
        this_version()
    ));
    if let Some(outputs) = apply(
        ctx,
        &stack,
        RACK_TEMPLATE,
        &params,
        &tags,
        dry_run,
        progress,
    )
    .await?
    {
        let s = rack_section(ctx, &outputs)?;
        section::write_rack_toml(data_dir, &ctx.rack, &s)?;
        progress.stage(format!("Updated stack {name}"));
    }
    for (app, stack) in app_stacks_full(ctx).await? {
        let stack_name = stack.stack_name().unwrap_or_default().to_string();
        progress.stage(format!(
            "{} app {app} (stack {stack_name})",
            if dry_run { "Changes to" } else { "Updating" }
        ));
        let params: Vec<(String, String)> = stack
            .parameters()
            .iter()
            .filter_map(|p| {
                Some((
                    p.parameter_key()?.to_string(),
                    p.parameter_value()?.to_string(),
                ))
            })
            .collect();
        let params: Vec<(&str, String)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let tags: Vec<(String, String)> = stack
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        let tags: Vec<(&str, String)> = tags.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        if apply(ctx, &stack, APP_TEMPLATE, &params, &tags, dry_run, progress)
            .await?
            .is_some()
        {
            progress.stage(format!("Updated app {app}"));
        }
    }
    Ok(())
}

/// One stack: its change set listed, then deleted (`dry_run`) or
/// executed. `Some(outputs)` when the stack was updated.
async fn apply(
    ctx: &AwsContext,
    stack: &Stack,
    template: &str,
    params: &[(&str, String)],
    tags: &[(&str, String)],
    dry_run: bool,
    progress: &Progress,
) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    let set = cfn::change_set(ctx, stack, template, params, tags).await?;
    if set.changes.is_empty() {
        progress.detail("no changes");
        let _ = cfn::delete_change_set(ctx, &set.stack_name, &set.id).await;
        return Ok(None);
    }
    for c in &set.changes {
        progress.detail(c.to_string());
    }
    if dry_run {
        cfn::delete_change_set(ctx, &set.stack_name, &set.id).await?;
        return Ok(None);
    }
    Ok(Some(cfn::execute_change_set(ctx, &set, progress).await?))
}
