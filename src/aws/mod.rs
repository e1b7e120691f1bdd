//! The `aws` provider: ECR, ECS on Fargate, CloudFormation, KMS, S3 and SSM
//! behind the same pipeline as the local provider.
//!
//! Shared plumbing lives here: [`AwsContext`] (one rack's name, region and
//! SDK clients, built from the standard AWS chain, `AWS_ENDPOINT_URL` and
//! the per-service variants honoured, so tests point it at moto),
//! [`AwsError`] and the rack's naming rules.
//!
//! Leaf modules, one per AWS API; a leaf imports nothing of its siblings,
//! only this plumbing:
//!
//! - [`cfn`]: CloudFormation stacks (create-or-update, events, waiting).
//! - [`ecs`]: ECS services, tasks and task definitions, the rollout reader.
//! - [`ssm`]: the SecureString parameters that hold config values.
//! - [`ecr`]: pushing a built image to the app's repository.
//! - [`logs`]: processes' output from CloudWatch Logs (`logs`, `run`).
//! - [`state`]: state in S3 with compare-and-swap (layout documented there).
//! - [`envelope`]: secrets sealed with a KMS data key.
//! - [`section`]: the `[aws]` table of `rack.toml` (no AWS call at all).
//!
//! Built on the leaves:
//!
//! - [`lifecycle`]: `rack install aws` / `rack uninstall aws` (the rack's
//!   stack, `aws/rack.yml`), an app's stack (`aws/app.yml`) created and
//!   destroyed with everything else the app has on the rack.
//! - [`runtime`]: [`runtime::AwsRuntime`], the `Runtime` on ECS.
//! - [`secrets`]: rack-wide secrets sealed with KMS in the bucket.
//! - [`store::S3Store`]: the crate's `Store` trait on [`state`].
//!
//! [`rack`] and [`app`] are the paths `install_with`, `uninstall` and
//! `create_app` had before [`lifecycle`]; they only re-export.
//!
//! This module knows nothing of SSH, git or the deploy pipeline. Plaintext
//! config reaches it only as a `SecretEnv` (for SSM parameters) or in
//! [`envelope`] (sealing and opening); it never logs or stores a value.
//!
//! Errors keep the AWS error's own message as their `Display`, so "Invalid
//! keyId", "The specified bucket does not exist" or "Cluster not found"
//! reach the user verbatim.

/// The items of every page of a paginated request, through the SDK's own
/// paginator: `|page| items` picks a page's items (a slice); at most
/// `limit` of them (`None`: all). Evaluates to `Result<Vec<_>>`, the error
/// named after `op`. A macro: every operation has its own paginator type,
/// and they share no trait a function could be generic over.
macro_rules! paginated {
    ($op:expr, $request:expr, |$page:ident| $items:expr, $limit:expr) => {
        async {
            let limit: Option<usize> = $limit;
            let mut pages = $request.into_paginator().send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let $page = page.map_err(|e| $crate::aws::AwsError::api($op, e))?;
                out.extend($items.iter().cloned());
                if let Some(l) = limit.filter(|l| out.len() >= *l) {
                    out.truncate(l);
                    break;
                }
            }
            Ok::<_, $crate::aws::AwsError>(out)
        }
        .await
    };
}

pub mod app;
pub mod cfn;
pub mod ecr;
pub mod ecs;
pub mod envelope;
pub mod lifecycle;
pub mod logs;
pub mod rack;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod section;
pub mod ssm;
pub mod state;
pub mod store;

#[doc(hidden)]
pub mod testing;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Region used when the chain names none but an endpoint override is set
/// (a test double such as moto).
const FALLBACK_REGION: &str = "us-east-1";

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An AWS API answered with an error (or could not be reached). The
    /// Display is the service's own message, verbatim.
    #[error("{message}")]
    Api {
        /// `Service.Operation`, for logs.
        op: &'static str,
        code: Option<String>,
        status: Option<u16>,
        message: String,
    },
    /// A CloudFormation stack operation ended in a failed state.
    #[error("{0}")]
    Stack(String),
    #[error("Docker engine: {0}")]
    Docker(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A compare-and-swap kept losing (see [`state::update_head`]).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl AwsError {
    /// Turns an SDK error into `AwsError::Api`, keeping the service's
    /// message (or, for transport failures, the whole error chain).
    pub fn api<E>(op: &'static str, err: SdkError<E>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = match err.message() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => match (&code, status) {
                (Some(c), _) => format!("{op}: {c}"),
                (None, Some(s)) => format!("{op}: HTTP {s}"),
                (None, None) => format!("{op}: {}", DisplayErrorContext(&err)),
            },
        };
        AwsError::Api {
            op,
            code,
            status,
            message,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AwsError::Api { status, .. } => *status,
            _ => None,
        }
    }

    /// S3 answered 412 to an `If-Match` / `If-None-Match` write (or 409, a
    /// concurrent conditional write in progress): someone else won.
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self.status(), Some(412) | Some(409))
            || matches!(
                self.code(),
                Some("PreconditionFailed") | Some("ConditionalRequestConflict")
            )
    }

    /// The object, key or resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AwsError::NotFound(_))
            || matches!(
                self.code(),
                Some("NoSuchKey")
                    | Some("NotFound")
                    | Some("NoSuchBucket")
                    | Some("ParameterNotFound")
                    | Some("RepositoryNotFoundException")
                    | Some("ClusterNotFoundException")
                    | Some("ServiceNotFoundException")
            )
            || (self.status() == Some(404))
    }
}

pub type Result<T, E = AwsError> = std::result::Result<T, E>;

/// The value of `key` in a list of key/value pairs as the SDKs model
/// them (tags, stack parameters); `kv` reads an item's key and value.
pub fn value_of<'a, T>(
    items: &'a [T],
    key: &str,
    kv: impl Fn(&'a T) -> (Option<&'a str>, Option<&'a str>),
) -> Option<&'a str> {
    items
        .iter()
        .map(kv)
        .find(|(k, _)| *k == Some(key))
        .and_then(|(_, v)| v)
}

/// An SDK answer, or `None` when `absent` says its error means "not
/// there" (each API says so its own way: a code, a status, a message).
pub fn or_absent<T, E>(
    op: &'static str,
    answer: std::result::Result<T, SdkError<E>>,
    absent: impl FnOnce(&AwsError) -> bool,
) -> Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let e = AwsError::api(op, e);
            if absent(&e) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Rack names: they become stack, cluster, bucket-prefix and repository
/// names, so lower case, digits and dashes, starting with a letter.
pub fn validate_rack_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AwsError::Invalid(format!(
            "invalid rack name '{}': use 1-20 lower-case letters, digits and dashes, starting with a letter",
            crate::names::printable(name)
        )))
    }
}

/// One rack's name, region and clients. Cheap to clone (the SDK clients
/// are handles).
#[derive(Clone, Debug)]
pub struct AwsContext {
    pub rack: String,
    pub region: String,
    pub s3: aws_sdk_s3::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    pub kms: aws_sdk_kms::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub scheduler: aws_sdk_scheduler::Client,
}

impl AwsContext {
    /// Credentials and region from the standard AWS chain (env, profile,
    /// IMDS, ...); `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`
    /// honoured. Without a region the call fails unless an endpoint
    /// override is set (then `us-east-1`, what moto uses by default).
    pub async fn from_env(rack: &str) -> Result<AwsContext> {
        validate_rack_name(rack)?;
        // The SDK reads AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>
        // itself (the per-service ones win); nothing to pass here.
        let loader = aws_config::defaults(BehaviorVersion::latest());
        let mut shared = loader.load().await;
        if shared.region().is_none() {
            if shared.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some() {
                shared = shared
                    .into_builder()
                    .region(Region::new(FALLBACK_REGION))
                    .build();
            } else {
                return Err(AwsError::Invalid(
                    "no AWS region configured: set AWS_REGION (or a profile's region)".into(),
                ));
            }
        }
        Ok(AwsContext::from_shared(rack, &shared))
    }

    /// Clients from an already loaded shared config (tests build one with
    /// static credentials and moto's endpoint).
    pub fn from_shared(rack: &str, shared: &SdkConfig) -> AwsContext {
        // Test doubles serve buckets by path, not by host name.
        let path_style = shared.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(shared)
                .force_path_style(path_style)
                .build(),
        );
        AwsContext {
            rack: rack.to_string(),
            region: shared
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| FALLBACK_REGION.to_string()),
            s3,
            ecr: aws_sdk_ecr::Client::new(shared),
            ecs: aws_sdk_ecs::Client::new(shared),
            cfn: aws_sdk_cloudformation::Client::new(shared),
            kms: aws_sdk_kms::Client::new(shared),
            ssm: aws_sdk_ssm::Client::new(shared),
            logs: aws_sdk_cloudwatchlogs::Client::new(shared),
            scheduler: aws_sdk_scheduler::Client::new(shared),
        }
    }

    /// `rack-NAME`: the rack's stack, cluster and log-group prefix.
    pub fn stack_name(&self) -> String {
        format!("rack-{}", self.rack)
    }

    /// The app's stack: `rack-NAME-app-APP`.
    pub fn app_stack_name(&self, app: &str) -> String {
        format!("rack-{}-app-{}", self.rack, app)
    }

    /// The stack of the app's volume `volume`: `rack-NAME-app-APP-V-VOLUME`
    /// (app and volume names are lower case, so the `V` keeps two apps'
    /// volume stacks and the app stacks apart).
    pub fn volume_stack_name(&self, app: &str, volume: &str) -> String {
        format!("rack-{}-app-{app}-V-{volume}", self.rack)
    }

    /// The app's ECR repository name: `rack-NAME/APP`.
    pub fn repository_name(&self, app: &str) -> String {
        format!("rack-{}/{}", self.rack, app)
    }
}

#[cfg(test)]
mod tests;
