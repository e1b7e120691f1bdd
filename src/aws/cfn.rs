//! CloudFormation plumbing shared by the rack's and the apps' stacks:
//! create-or-update with a no-change check, progress lines from stack
//! events, waiting for a terminal state, deletion.
//!
//! Idempotence does not rely on CloudFormation's "No updates are to be
//! performed" (moto raises it only when Parameters are passed): before
//! updating, the stack's stored template (`GetTemplate`, original stage) and
//! parameter values are compared with what would be sent, and an unchanged
//! stack is not touched at all (no event is added).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackEvent, Tag};

use super::{or_absent, value_of, AwsContext, AwsError, Result};
use crate::progress::Progress;

/// How long a stack operation may take (an ALB alone takes minutes on AWS).
const STACK_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    /// Template and parameters equal to the stack's: nothing was sent.
    Unchanged,
}

/// A stack as deployed: its id and outputs.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub outcome: Outcome,
    pub stack_id: String,
    pub outputs: BTreeMap<String, String>,
}

fn is_missing_stack(e: &AwsError) -> bool {
    matches!(e, AwsError::Api { message, .. } if message.contains("does not exist"))
}

/// The stack, or `None` when there is none by that name (or id).
pub async fn describe(ctx: &AwsContext, name: &str) -> Result<Option<Stack>> {
    let answer = ctx.cfn.describe_stacks().stack_name(name).send().await;
    Ok(
        or_absent("CloudFormation.DescribeStacks", answer, is_missing_stack)?
            .and_then(|out| out.stacks().first().cloned()),
    )
}

/// Names of the stacks whose name starts with `prefix`, deleted ones left
/// out (ListStacks keeps them listed for 90 days).
pub async fn stack_names(ctx: &AwsContext, prefix: &str) -> Result<Vec<String>> {
    let request = ctx.cfn.list_stacks();
    let stacks = paginated!(
        "CloudFormation.ListStacks",
        request,
        |p| p.stack_summaries(),
        None
    )?;
    let mut names: Vec<String> = Vec::new();
    for s in stacks {
        let deleted = s.stack_status().map(|st| st.as_str()) == Some("DELETE_COMPLETE");
        if let Some(name) = s.stack_name().filter(|n| n.starts_with(prefix)) {
            if !deleted && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    Ok(names)
}

/// The value of the stack's tag `key`.
pub fn tag<'a>(stack: &'a Stack, key: &str) -> Option<&'a str> {
    value_of(stack.tags(), key, |t| (t.key(), t.value()))
}

/// The value the stack's parameter `key` has now.
pub fn parameter<'a>(stack: &'a Stack, key: &str) -> Option<&'a str> {
    value_of(stack.parameters(), key, |p| {
        (p.parameter_key(), p.parameter_value())
    })
}

pub fn outputs(stack: &Stack) -> BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect()
}

/// The stack's status (`CREATE_COMPLETE`, ...; `UNKNOWN` when it has none).
pub fn status(stack: &Stack) -> &str {
    stack
        .stack_status()
        .map(|s| s.as_str())
        .unwrap_or("UNKNOWN")
}

/// Every event of the stack (newest first, as CloudFormation answers).
pub async fn events(ctx: &AwsContext, stack_id: &str) -> Result<Vec<StackEvent>> {
    let request = ctx.cfn.describe_stack_events().stack_name(stack_id);
    // A stack's history is unbounded; its newest events are what matter.
    paginated!(
        "CloudFormation.DescribeStackEvents",
        request,
        |p| p.stack_events(),
        Some(10_000)
    )
}

fn event_line(e: &StackEvent) -> String {
    let status = e.resource_status().map(|s| s.as_str()).unwrap_or("");
    let mut line = format!(
        "{status} {} {}",
        e.resource_type().unwrap_or(""),
        e.logical_resource_id().unwrap_or("")
    );
    if let Some(reason) = e.resource_status_reason().filter(|r| !r.is_empty()) {
        line.push_str(": ");
        line.push_str(reason);
    }
    line
}

/// Prints the events newer than `seen` (oldest first) and returns the new
/// newest event id.
async fn print_new_events(
    ctx: &AwsContext,
    stack_id: &str,
    seen: &mut std::collections::HashSet<String>,
    progress: &Progress,
) -> Result<Vec<StackEvent>> {
    let all = events(ctx, stack_id).await?;
    let mut fresh: Vec<StackEvent> = all
        .into_iter()
        .filter(|e| e.event_id().is_some_and(|id| !seen.contains(id)))
        .collect();
    fresh.reverse();
    for e in &fresh {
        if let Some(id) = e.event_id() {
            seen.insert(id.to_string());
        }
        progress.detail(event_line(e));
    }
    Ok(fresh)
}

async fn seen_events(
    ctx: &AwsContext,
    stack_id: &str,
) -> Result<std::collections::HashSet<String>> {
    Ok(events(ctx, stack_id)
        .await?
        .iter()
        .filter_map(|e| e.event_id().map(str::to_string))
        .collect())
}

/// Waits until the stack leaves its `*_IN_PROGRESS` state, printing events.
/// Returns the final stack; `Err(Stack)` when it ended in a failed state.
async fn wait(
    ctx: &AwsContext,
    stack_id: &str,
    mut seen: std::collections::HashSet<String>,
    want: &[&str],
    progress: &Progress,
) -> Result<Stack> {
    let started = Instant::now();
    let mut first_failure: Option<String> = None;
    loop {
        let fresh = print_new_events(ctx, stack_id, &mut seen, progress).await?;
        for e in &fresh {
            let failed = e
                .resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"));
            if failed && first_failure.is_none() {
                first_failure = Some(event_line(e));
            }
        }
        let stack = describe(ctx, stack_id).await?.ok_or_else(|| {
            AwsError::NotFound(format!("stack {stack_id} disappeared while waiting for it"))
        })?;
        let st = status(&stack).to_string();
        if !st.ends_with("_IN_PROGRESS") {
            if want.contains(&st.as_str()) {
                return Ok(stack);
            }
            let reason = first_failure
                .or_else(|| stack.stack_status_reason().map(str::to_string))
                .unwrap_or_default();
            return Err(AwsError::Stack(format!(
                "stack {} ended in {st}{}{reason}",
                stack.stack_name().unwrap_or(stack_id),
                if reason.is_empty() { "" } else { ": " }
            )));
        }
        if started.elapsed() > STACK_TIMEOUT {
            return Err(AwsError::Stack(format!(
                "stack {stack_id} still {st} after {} minutes",
                STACK_TIMEOUT.as_secs() / 60
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn params_of(params: &[(&str, String)]) -> Vec<Parameter> {
    params
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(v.clone())
                .build()
        })
        .collect()
}

fn tags_of(tags: &[(&str, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(*k).value(v.clone()).build())
        .collect()
}

/// True when the stack already holds exactly this template and these
/// parameter values.
async fn unchanged(
    ctx: &AwsContext,
    stack: &Stack,
    template: &str,
    params: &[(&str, String)],
) -> Result<bool> {
    let id = stack.stack_id().unwrap_or_default();
    let stored = ctx
        .cfn
        .get_template()
        .stack_name(id)
        .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.GetTemplate", e))?;
    if stored.template_body().map(str::trim) != Some(template.trim()) {
        return Ok(false);
    }
    let current: BTreeMap<&str, &str> = stack
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, p.parameter_value().unwrap_or(""))))
        .collect();
    let same = params
        .iter()
        .all(|(k, v)| current.get(k).copied() == Some(v.as_str()));
    Ok(same)
}

/// What a stack is made of.
struct Body<'a> {
    template: &'a str,
    params: &'a [(&'a str, String)],
    tags: &'a [(&'a str, String)],
}

/// CreateStack and UpdateStack take the body alike, but their builders
/// share no trait.
macro_rules! with_body {
    ($req:expr, $body:expr) => {
        $req.template_body($body.template)
            .set_parameters(Some(params_of($body.params)))
            .set_tags(Some(tags_of($body.tags)))
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
    };
}

impl Deployed {
    fn of(outcome: Outcome, stack_id: String, stack: &Stack) -> Deployed {
        Deployed {
            outcome,
            stack_id,
            outputs: outputs(stack),
        }
    }
}

/// Creates the stack, or updates it when its template or parameters
/// differ, printing stack events as progress and waiting for the end.
pub async fn deploy(
    ctx: &AwsContext,
    name: &str,
    template: &str,
    params: &[(&str, String)],
    tags: &[(&str, String)],
    progress: &Progress,
) -> Result<Deployed> {
    let body = Body {
        template,
        params,
        tags,
    };
    match settled(ctx, name, progress).await? {
        None => create(ctx, name, &body, progress).await,
        Some(stack) => update(ctx, name, &stack, &body, progress).await,
    }
}

/// The stack once nothing is in progress on it; `None` when there is none,
/// or only one whose creation failed (deleted now: it could only be
/// deleted).
async fn settled(ctx: &AwsContext, name: &str, progress: &Progress) -> Result<Option<Stack>> {
    let mut existing = describe(ctx, name).await?;
    if let Some(stack) = &existing {
        let st = status(stack).to_string();
        let id = stack.stack_id().unwrap_or(name).to_string();
        if st.ends_with("_IN_PROGRESS") {
            progress.detail(format!("stack {name} is {st}; waiting for it"));
            let seen = seen_events(ctx, &id).await?;
            let _ = wait(ctx, &id, seen, &[], progress).await;
            existing = describe(ctx, name).await?;
        }
    }
    if let Some(stack) = &existing {
        let st = status(stack);
        if st == "ROLLBACK_COMPLETE" || st == "CREATE_FAILED" || st == "ROLLBACK_FAILED" {
            progress.detail(format!(
                "stack {name} is {st} from an earlier failed create; deleting it"
            ));
            delete(ctx, name, progress).await?;
            existing = None;
        }
    }
    Ok(existing)
}

async fn create(
    ctx: &AwsContext,
    name: &str,
    body: &Body<'_>,
    progress: &Progress,
) -> Result<Deployed> {
    let out = with_body!(ctx.cfn.create_stack().stack_name(name), body)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.CreateStack", e))?;
    let id = out.stack_id().unwrap_or(name).to_string();
    let stack = wait(ctx, &id, Default::default(), &["CREATE_COMPLETE"], progress).await?;
    Ok(Deployed::of(Outcome::Created, id, &stack))
}

async fn update(
    ctx: &AwsContext,
    name: &str,
    stack: &Stack,
    body: &Body<'_>,
    progress: &Progress,
) -> Result<Deployed> {
    let id = stack.stack_id().unwrap_or(name).to_string();
    if unchanged(ctx, stack, body.template, body.params).await? {
        return Ok(Deployed::of(Outcome::Unchanged, id, stack));
    }
    let seen = seen_events(ctx, &id).await?;
    let sent = with_body!(ctx.cfn.update_stack().stack_name(&id), body)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.UpdateStack", e));
    match sent {
        Ok(_) => {}
        Err(e) if e.to_string().contains("No updates are to be performed") => {
            return Ok(Deployed::of(Outcome::Unchanged, id, stack));
        }
        Err(e) => return Err(e),
    }
    let stack = wait(ctx, &id, seen, &["UPDATE_COMPLETE"], progress).await?;
    Ok(Deployed::of(Outcome::Updated, id, &stack))
}

/// Deletes the stack and waits until it is gone. `Ok(false)` when there
/// was none.
pub async fn delete(ctx: &AwsContext, name: &str, progress: &Progress) -> Result<bool> {
    let Some(stack) = describe(ctx, name).await? else {
        return Ok(false);
    };
    let id = stack.stack_id().unwrap_or(name).to_string();
    if status(&stack) == "DELETE_COMPLETE" {
        return Ok(false);
    }
    let mut seen = seen_events(ctx, &id).await?;
    ctx.cfn
        .delete_stack()
        .stack_name(&id)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.DeleteStack", e))?;
    let started = Instant::now();
    loop {
        // Events of a deleted stack may no longer be readable: best effort.
        let _ = print_new_events(ctx, &id, &mut seen, progress).await;
        match describe(ctx, &id).await? {
            None => return Ok(true),
            Some(s) => {
                let st = status(&s);
                if st == "DELETE_COMPLETE" {
                    return Ok(true);
                }
                if !st.ends_with("_IN_PROGRESS") {
                    return Err(AwsError::Stack(format!(
                        "deleting stack {name} ended in {st}: {}",
                        s.stack_status_reason().unwrap_or("")
                    )));
                }
            }
        }
        if started.elapsed() > STACK_TIMEOUT {
            return Err(AwsError::Stack(format!(
                "stack {name} is still being deleted"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One change a change set would make.
#[derive(Debug, Clone)]
pub struct Change {
    /// Add, Modify, Remove, ...
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// True, False or Conditional (for a Modify).
    pub replacement: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.action, self.resource_type, self.logical_id
        )?;
        match self.replacement.as_deref() {
            Some("True") => write!(f, " (replaced)"),
            Some("Conditional") => write!(f, " (may be replaced)"),
            _ => Ok(()),
        }
    }
}

/// A change set made and described, not executed.
pub struct ChangeSet {
    pub id: String,
    pub stack_id: String,
    /// Change set calls take the stack's name (moto finds no stack by id).
    pub stack_name: String,
    pub changes: Vec<Change>,
}

/// Makes an UPDATE change set of `stack` to `template` and `params` and
/// waits until CloudFormation has described it. A change set with nothing
/// in it is deleted and comes back with no changes.
pub async fn change_set(
    ctx: &AwsContext,
    stack: &Stack,
    template: &str,
    params: &[(&str, String)],
    tags: &[(&str, String)],
) -> Result<ChangeSet> {
    let stack_id = stack.stack_id().unwrap_or_default().to_string();
    let stack_name = stack.stack_name().unwrap_or_default().to_string();
    let name = format!(
        "rack-update-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let body = Body {
        template,
        params,
        tags,
    };
    let out = with_body!(
        ctx.cfn
            .create_change_set()
            .stack_name(&stack_name)
            .change_set_name(&name)
            .change_set_type(aws_sdk_cloudformation::types::ChangeSetType::Update),
        body
    )
    .send()
    .await
    .map_err(|e| AwsError::api("CloudFormation.CreateChangeSet", e))?;
    let id = out.id().unwrap_or(&name).to_string();
    let started = Instant::now();
    loop {
        let d = ctx
            .cfn
            .describe_change_set()
            .change_set_name(&id)
            .stack_name(&stack_name)
            .send()
            .await
            .map_err(|e| AwsError::api("CloudFormation.DescribeChangeSet", e))?;
        let status = d
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status.ends_with("_COMPLETE") || status == "FAILED" {
            let reason = d.status_reason().unwrap_or_default().to_string();
            let changes: Vec<Change> = d
                .changes()
                .iter()
                .filter_map(|c| c.resource_change())
                .map(|r| Change {
                    action: r
                        .action()
                        .map(|a| a.as_str().to_string())
                        .unwrap_or_default(),
                    logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: r.resource_type().unwrap_or_default().to_string(),
                    replacement: r.replacement().map(|x| x.as_str().to_string()),
                })
                .collect();
            if status == "FAILED" {
                let _ = delete_change_set(ctx, &stack_name, &id).await;
                // CloudFormation fails a change set that changes nothing.
                if reason.contains("didn't contain changes") || reason.contains("No updates") {
                    return Ok(ChangeSet {
                        id,
                        stack_id,
                        stack_name,
                        changes: Vec::new(),
                    });
                }
                return Err(AwsError::Stack(format!("the change set failed: {reason}")));
            }
            return Ok(ChangeSet {
                id,
                stack_id,
                stack_name,
                changes,
            });
        }
        if started.elapsed() > STACK_TIMEOUT {
            return Err(AwsError::Stack(format!("change set {name} still {status}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn delete_change_set(ctx: &AwsContext, stack_name: &str, id: &str) -> Result<()> {
    ctx.cfn
        .delete_change_set()
        .change_set_name(id)
        .stack_name(stack_name)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.DeleteChangeSet", e))?;
    Ok(())
}

/// Executes the change set and waits for the stack, printing its events.
/// A failed update is rolled back by CloudFormation; the error carries the
/// stack's reason.
pub async fn execute_change_set(
    ctx: &AwsContext,
    set: &ChangeSet,
    progress: &Progress,
) -> Result<BTreeMap<String, String>> {
    let seen = seen_events(ctx, &set.stack_id).await?;
    ctx.cfn
        .execute_change_set()
        .change_set_name(&set.id)
        .stack_name(&set.stack_name)
        .send()
        .await
        .map_err(|e| AwsError::api("CloudFormation.ExecuteChangeSet", e))?;
    let stack = wait(ctx, &set.stack_id, seen, &["UPDATE_COMPLETE"], progress).await?;
    Ok(outputs(&stack))
}
