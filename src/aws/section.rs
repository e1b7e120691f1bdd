//! The `[aws]` table of `DATA_DIR/rack.toml`: what the rack's stack
//! provides to everything else, as `rack install aws` wrote it.
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
//! scheduler_role_arn = "arn:aws:iam::...:role/..."
//! vpc_id = "vpc-..."
//! subnets = ["subnet-...", "subnet-..."]
//! service_security_group = "sg-..."
//! load_balancer_arn = "arn:aws:elasticloadbalancing:..."
//! load_balancer_dns = "....elb.amazonaws.com"
//! listener_arn = "arn:aws:elasticloadbalancing:..."
//! ```
//!
//! Other keys of the file (and `[aws] wait_for_rollout`, an operator's
//! switch) are kept as they were. This module reads and writes the file
//! only: it calls no AWS API (the stack's outputs become a section in
//! [`super::lifecycle`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AwsError, Result};

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
    /// The role EventBridge Scheduler assumes to start the apps' timers.
    /// `None` in a `rack.toml` written before the rack stack had it (the
    /// timers then refuse to schedule until `rack install aws` runs again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_role_arn: Option<String>,
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

/// `DATA_DIR/rack.toml`.
pub fn rack_toml(data_dir: &Path) -> PathBuf {
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

/// Takes rack `rack` out of `DATA_DIR/rack.toml` (its `rack`, `[aws]` and
/// `provider = "aws"`), keeping every other key. Another rack's file, or
/// none at all, is left alone.
pub fn forget_rack(data_dir: &Path, rack: &str) -> Result<()> {
    let path = rack_toml(data_dir);
    let mut table = read_toml(&path)?;
    if table.get("rack").and_then(|v| v.as_str()) == Some(rack) {
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
