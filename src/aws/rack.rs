//! `rack install aws` / `rack uninstall aws`: the rack's own stack
//! (`aws/rack.yml`, stack `rack-NAME`) and the `[aws]` table of
//! `DATA_DIR/rack.toml`.
//!
//! Install is idempotent: the stored template and parameters are compared
//! with what would be sent and an unchanged stack is left alone (see
//! [`super::cfn`]). Network parameters not given keep the stack's current
//! values, so a second `rack install aws --rack NAME` never moves a rack to
//! a new VPC by accident.
//!
//! `rack.toml` after install:
//!
//! ```toml
//! provider = "aws"
//! rack = "NAME"
//!
//! [aws]
//! region = "us-east-1"
//! stack = "rack-NAME"
//! cluster = "rack-NAME"
//! cluster_arn = "arn:aws:ecs:..."
//! bucket = "rack-name-bucket-..."
//! key_arn = "arn:aws:kms:..."
//! log_group = "/rack/NAME"
//! execution_role_arn = "arn:aws:iam::...:role/..."
//! vpc_id = "vpc-..."
//! subnets = ["subnet-...", "subnet-..."]
//! service_security_group = "sg-..."
//! load_balancer_arn = "arn:aws:elasticloadbalancing:..."
//! load_balancer_dns = "....elb.amazonaws.com"
//! listener_arn = "arn:aws:elasticloadbalancing:..."
//! ```
//!
//! Other keys of the file (and `[aws] wait_for_rollout`, an operator's
//! switch) are kept as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cfn::{self, Outcome};
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;

/// The rack's CloudFormation template.
pub const RACK_TEMPLATE: &str = include_str!("../../aws/rack.yml");

/// The `[aws]` table of `rack.toml`: the rack stack's outputs, plus the
/// operator's `wait_for_rollout` switch (default true).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: String,
    pub stack: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub bucket: String,
    pub key_arn: String,
    pub log_group: String,
    pub execution_role_arn: String,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub service_security_group: String,
    pub load_balancer_arn: String,
    pub load_balancer_dns: String,
    pub listener_arn: String,
    /// `false` skips waiting for ECS deployments to complete (moto never
    /// completes an updated service's deployment); the push says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_rollout: Option<bool>,
}

/// What the rack's stack provides to everything else: [`AwsSection`] is
/// the same data as stored in `rack.toml`.
pub type RackOutputs = AwsSection;

impl AwsSection {
    /// From the stack's outputs (`ClusterName`, `BucketName`, ...).
    pub fn from_outputs(ctx: &AwsContext, o: &BTreeMap<String, String>) -> Result<AwsSection> {
        let get = |k: &str| -> Result<String> {
            o.get(k).cloned().ok_or_else(|| {
                AwsError::Stack(format!(
                    "stack {} has no output {k}: was it made by this version of rack?",
                    ctx.stack_name()
                ))
            })
        };
        Ok(AwsSection {
            region: ctx.region.clone(),
            stack: ctx.stack_name(),
            cluster: get("ClusterName")?,
            cluster_arn: get("ClusterArn")?,
            bucket: get("BucketName")?,
            key_arn: get("KeyArn")?,
            log_group: get("LogGroup")?,
            execution_role_arn: get("ExecutionRoleArn")?,
            vpc_id: get("VpcId")?,
            subnets: get("Subnets")?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            service_security_group: get("ServiceSecurityGroup")?,
            load_balancer_arn: get("LoadBalancerArn")?,
            load_balancer_dns: get("LoadBalancerDns")?,
            listener_arn: get("ListenerArn")?,
            wait_for_rollout: None,
        })
    }

    /// The rack's outputs as its stack has them now.
    pub async fn load(ctx: &AwsContext) -> Result<AwsSection> {
        let stack = cfn::describe(ctx, &ctx.stack_name())
            .await?
            .ok_or_else(|| {
                AwsError::NotFound(format!(
                    "rack {} is not installed (no stack {}): run `rack install aws --rack {}`",
                    ctx.rack,
                    ctx.stack_name(),
                    ctx.rack
                ))
            })?;
        AwsSection::from_outputs(ctx, &cfn::outputs(&stack))
    }

    /// The account id, from the cluster ARN (`arn:aws:ecs:REGION:ACCOUNT:...`).
    pub fn account_id(&self) -> &str {
        self.cluster_arn.split(':').nth(4).unwrap_or("")
    }

    /// `[aws]` of `DATA_DIR/rack.toml`, if the file has one.
    pub fn from_file(data_dir: &Path) -> Result<Option<AwsSection>> {
        let table = read_toml(&rack_toml(data_dir))?;
        match table.get("aws") {
            None => Ok(None),
            Some(v) => v.clone().try_into().map(Some).map_err(|e| {
                AwsError::Invalid(format!("[aws] in {}: {e}", rack_toml(data_dir).display()))
            }),
        }
    }
}

/// Network placement of a new rack. `None` keeps what the stack has (a new
/// stack then creates its own VPC with two public subnets).
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub vpc_id: Option<String>,
    pub subnet_ids: Option<Vec<String>>,
}

fn rack_toml(data_dir: &Path) -> PathBuf {
    data_dir.join("rack.toml")
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| AwsError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(e.into()),
    }
}

fn write_toml(path: &Path, table: &toml::Table) -> Result<()> {
    let text = toml::to_string(table).map_err(|e| AwsError::Invalid(format!("rack.toml: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes `provider = "aws"`, `rack = NAME` and `[aws]` into
/// `DATA_DIR/rack.toml`, keeping every other key (and an operator's
/// `[aws] wait_for_rollout`).
pub fn write_rack_toml(data_dir: &Path, rack: &str, section: &AwsSection) -> Result<()> {
    let path = rack_toml(data_dir);
    let mut table = read_toml(&path)?;
    let mut section = section.clone();
    if section.wait_for_rollout.is_none() {
        section.wait_for_rollout = table
            .get("aws")
            .and_then(|a| a.get("wait_for_rollout"))
            .and_then(|v| v.as_bool());
    }
    table.insert("provider".into(), toml::Value::String("aws".into()));
    table.insert("rack".into(), toml::Value::String(rack.into()));
    let value = toml::Value::try_from(&section)
        .map_err(|e| AwsError::Invalid(format!("rack.toml: {e}")))?;
    table.insert("aws".into(), value);
    write_toml(&path, &table)
}

/// Creates or updates the rack's stack, printing stack events, then writes
/// `rack.toml`. A second run with nothing changed sends no update.
pub async fn install(ctx: &AwsContext, data_dir: &Path, progress: &Progress) -> Result<AwsSection> {
    install_with(ctx, data_dir, &InstallOptions::default(), progress).await
}

pub async fn install_with(
    ctx: &AwsContext,
    data_dir: &Path,
    opts: &InstallOptions,
    progress: &Progress,
) -> Result<AwsSection> {
    let name = ctx.stack_name();
    let existing = cfn::describe(ctx, &name).await?;
    let previous = |key: &str| -> String {
        existing
            .as_ref()
            .and_then(|s| {
                s.parameters()
                    .iter()
                    .find(|p| p.parameter_key() == Some(key))
                    .and_then(|p| p.parameter_value())
            })
            .unwrap_or("")
            .to_string()
    };
    let vpc = opts.vpc_id.clone().unwrap_or_else(|| previous("VpcId"));
    let subnets = opts
        .subnet_ids
        .as_ref()
        .map(|s| s.join(","))
        .unwrap_or_else(|| previous("SubnetIds"));
    if vpc.is_empty() != subnets.is_empty() {
        return Err(AwsError::Invalid(
            "give both a VPC and its subnets (two or more, in different zones), or neither".into(),
        ));
    }
    let params = [
        ("RackName", ctx.rack.clone()),
        ("VpcId", vpc),
        ("SubnetIds", subnets),
    ];
    let tags = [
        ("rack:rack", ctx.rack.clone()),
        ("rack:role", "rack".to_string()),
    ];
    progress.stage(format!(
        "{} rack {} (stack {name}, region {})",
        if existing.is_some() {
            "Checking"
        } else {
            "Creating"
        },
        ctx.rack,
        ctx.region
    ));
    let deployed = cfn::deploy(ctx, &name, RACK_TEMPLATE, &params, &tags, progress).await?;
    match deployed.outcome {
        Outcome::Created => progress.stage(format!("Created stack {name}")),
        Outcome::Updated => progress.stage(format!("Updated stack {name}")),
        Outcome::Unchanged => {
            progress.stage(format!("Stack {name} is up to date; nothing to change"))
        }
    }
    let section = AwsSection::from_outputs(ctx, &deployed.outputs)?;
    write_rack_toml(data_dir, &ctx.rack, &section)?;
    progress.detail(format!("wrote {}", rack_toml(data_dir).display()));
    Ok(section)
}

/// Stacks (name, app) of the rack's apps, found by their `rack:rack` tag.
pub async fn app_stacks(ctx: &AwsContext) -> Result<Vec<(String, String)>> {
    // ListStacks, then DescribeStacks by name: describing every stack of
    // the account at once is slow on AWS and, on moto, races with stacks
    // being created by others (it computes their outputs half-made).
    let prefix = format!("rack-{}-app-", ctx.rack);
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .cfn
            .list_stacks()
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| AwsError::api("CloudFormation.ListStacks", e))?;
        for s in page.stack_summaries() {
            let deleted = s.stack_status().map(|st| st.as_str()) == Some("DELETE_COMPLETE");
            if let Some(name) = s.stack_name().filter(|n| n.starts_with(&prefix)) {
                if !deleted && !names.iter().any(|n: &String| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    for name in names {
        let Some(s) = cfn::describe(ctx, &name).await? else {
            continue;
        };
        let tag = |k: &str| {
            s.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
        };
        // The tag, not the name, says whose app it is (rack `a` and rack
        // `a-app-b` share a name prefix).
        if tag("rack:rack") == Some(ctx.rack.as_str()) && tag("rack:role") == Some("app") {
            if let Some(app) = tag("rack:app") {
                out.push((name.clone(), app.to_string()));
            }
        }
    }
    Ok(out)
}

/// Deletes every object in the bucket (and every version, should
/// versioning have been turned on).
pub async fn empty_bucket(ctx: &AwsContext, bucket: &str) -> Result<usize> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0;
    loop {
        let page = ctx
            .s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| AwsError::api("S3.ListObjectVersions", e))?;
        let mut ids: Vec<ObjectIdentifier> = Vec::new();
        for v in page.versions() {
            if let Some(k) = v.key() {
                ids.push(
                    ObjectIdentifier::builder()
                        .key(k)
                        .set_version_id(v.version_id().map(str::to_string))
                        .build()
                        .map_err(|e| AwsError::Invalid(e.to_string()))?,
                );
            }
        }
        for m in page.delete_markers() {
            if let Some(k) = m.key() {
                ids.push(
                    ObjectIdentifier::builder()
                        .key(k)
                        .set_version_id(m.version_id().map(str::to_string))
                        .build()
                        .map_err(|e| AwsError::Invalid(e.to_string()))?,
                );
            }
        }
        if ids.is_empty() {
            // Unversioned listing as a fallback (some S3 doubles list no
            // versions for unversioned buckets).
            let page = ctx
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| AwsError::api("S3.ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    ids.push(
                        ObjectIdentifier::builder()
                            .key(k)
                            .build()
                            .map_err(|e| AwsError::Invalid(e.to_string()))?,
                    );
                }
            }
            if ids.is_empty() {
                return Ok(deleted);
            }
        }
        for chunk in ids.chunks(1000) {
            let n = chunk.len();
            ctx.s3
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(chunk.to_vec()))
                        .quiet(true)
                        .build()
                        .map_err(|e| AwsError::Invalid(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| AwsError::api("S3.DeleteObjects", e))?;
            deleted += n;
        }
    }
}

/// Deletes the SSM parameters under `path` (recursively).
pub async fn delete_parameters(ctx: &AwsContext, path: &str) -> Result<usize> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| AwsError::api("SSM.GetParametersByPath", e))?;
        names.extend(
            page.parameters()
                .iter()
                .filter_map(|p| p.name().map(str::to_string)),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
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

/// Deletes the rack: its apps' stacks, its config parameters, the bucket's
/// objects, then the stack; removes the rack from `rack.toml`.
pub async fn uninstall(ctx: &AwsContext, data_dir: &Path, progress: &Progress) -> Result<()> {
    let name = ctx.stack_name();
    let Some(stack) = cfn::describe(ctx, &name).await? else {
        return Err(AwsError::NotFound(format!(
            "rack {} is not installed (no stack {name})",
            ctx.rack
        )));
    };
    let outputs = cfn::outputs(&stack);
    for (_, app) in app_stacks(ctx).await? {
        progress.stage(format!("Deleting app {app}"));
        super::app::destroy_app(ctx, &app, progress).await?;
    }
    if let Some(bucket) = outputs.get("BucketName") {
        progress.stage(format!("Emptying bucket {bucket}"));
        match empty_bucket(ctx, bucket).await {
            Ok(n) => progress.detail(format!("{n} objects deleted")),
            Err(e) if e.code() == Some("NoSuchBucket") => progress.detail("bucket already gone"),
            Err(e) => return Err(e),
        }
    }
    let n = delete_parameters(ctx, &format!("/rack/{}", ctx.rack)).await?;
    if n > 0 {
        progress.detail(format!("{n} config parameters deleted"));
    }
    progress.stage(format!("Deleting stack {name}"));
    cfn::delete(ctx, &name, progress).await?;
    // CloudFormation doubles may leave the cluster behind: make sure.
    if let Some(cluster) = outputs.get("ClusterName") {
        let _ = ctx.ecs.delete_cluster().cluster(cluster).send().await;
    }
    progress.stage(format!("Rack {} uninstalled", ctx.rack));

    let path = rack_toml(data_dir);
    let mut table = read_toml(&path)?;
    if table.get("rack").and_then(|v| v.as_str()) == Some(ctx.rack.as_str()) {
        table.remove("rack");
        table.remove("aws");
        if table.get("provider").and_then(|v| v.as_str()) == Some("aws") {
            table.remove("provider");
        }
        if path.exists() {
            write_toml(&path, &table)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
