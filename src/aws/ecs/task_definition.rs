//! Task definitions: one revision per process type and release, in family
//! `rack-RACK_APP_TYPE`, reused when nothing in it changed (a scale rolls
//! no new tasks): the revision carries a `rack:spec` tag, a fingerprint of
//! everything that makes its tasks what they are.

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, EfsTransitEncryption, EfsVolumeConfiguration, KeyValuePair,
    LogConfiguration, LogDriver, MountPoint, NetworkMode, PortMapping, Secret, Tag,
    TaskDefinitionField, TransportProtocol, Volume,
};
use serde_json::json;

use crate::aws::{value_of, AwsContext, AwsError, Result};

/// The tag holding a revision's fingerprint.
const SPEC_TAG: &str = "rack:spec";

/// `rack-RACK_APP_TYPE`.
pub fn family(ctx: &AwsContext, app: &str, kind: &str) -> String {
    format!("rack-{}_{app}_{kind}", ctx.rack)
}

/// Fargate's CPU (units) and memory (MiB) for the requested limits:
/// the smallest valid combination that covers both (defaults 0.25 vCPU,
/// 512 MiB).
pub fn fargate_size(
    nano_cpus: Option<i64>,
    memory_bytes: Option<i64>,
) -> std::result::Result<(u32, u32), String> {
    let want_cpu = nano_cpus
        .map(|n| ((n as f64 / 1e9) * 1024.0).ceil() as u32)
        .unwrap_or(256)
        .max(256);
    let want_mem = memory_bytes
        .map(|b| (b as u64).div_ceil(1024 * 1024) as u32)
        .unwrap_or(512)
        .max(512);
    // (cpu, min MiB, max MiB, step)
    const TIERS: &[(u32, u32, u32, u32)] = &[
        (256, 512, 2048, 512),
        (512, 1024, 4096, 1024),
        (1024, 2048, 8192, 1024),
        (2048, 4096, 16384, 1024),
        (4096, 8192, 30720, 1024),
        (8192, 16384, 61440, 4096),
        (16384, 32768, 122880, 8192),
    ];
    for &(cpu, min, max, step) in TIERS {
        if cpu < want_cpu || max < want_mem {
            continue;
        }
        let mut mem = min;
        while mem < want_mem {
            mem += step;
        }
        // 256 CPU allows 512, 1024, 2048 only.
        if cpu == 256 && mem == 1536 {
            mem = 2048;
        }
        return Ok((cpu, mem));
    }
    Err(format!(
        "no Fargate size has {:.2} vCPU and {want_mem} MiB (at most 16 vCPU and 120 GiB)",
        want_cpu as f64 / 1024.0
    ))
}

/// Stable FNV-1a 64 hash (task definition fingerprints).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A task definition of one container, named after its process type.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub family: String,
    /// The process type: container name and awslogs stream prefix.
    pub kind: String,
    pub image: String,
    /// Run through `/bin/sh -c`; `None`: the image's own command.
    pub command: Option<String>,
    pub cpu: u32,
    pub memory: u32,
    pub environment: Vec<(String, String)>,
    /// (NAME, parameter ARN): values the task gets from SSM.
    pub secrets: Vec<(String, String)>,
    /// The container port the load balancer sends to (web only).
    pub web_port: Option<u16>,
    pub log_group: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    /// Tags that describe the revision but are no reason for a new one
    /// (`rack:release`, `rack:build`: a scale keeps the revision).
    pub tags: Vec<(String, String)>,
    /// EFS file systems mounted into the container.
    pub volumes: Vec<EfsMount>,
}

/// One volume of the app in a task: its EFS file system at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfsMount {
    /// The volume's name (the task definition's volume name).
    pub name: String,
    pub file_system_id: String,
    pub path: String,
}

impl TaskSpec {
    /// Everything that makes the tasks what they are, hashed. The document
    /// is kept as it was first written: a different one would register a
    /// new revision of every service on the next scale.
    pub fn fingerprint(&self) -> String {
        let doc = json!({
            "image": self.image, "command": self.command, "cpu": self.cpu, "mem": self.memory,
            "env": self.environment.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "secrets": self.secrets, "web": self.web_port.is_some(),
            "roles": [&self.execution_role_arn, &self.task_role_arn],
            "logs": self.log_group,
        });
        // Only a task with volumes says so: the fingerprints of the ones
        // without stay what they were.
        let mut doc = doc;
        if !self.volumes.is_empty() {
            doc["efs"] = json!(self
                .volumes
                .iter()
                .map(|v| format!("{}={}:{}", v.name, v.file_system_id, v.path))
                .collect::<Vec<_>>());
        }
        format!("{:016x}", fnv64(doc.to_string().as_bytes()))
    }

    fn container(&self, region: &str) -> Result<ContainerDefinition> {
        let mut c = ContainerDefinition::builder()
            .name(&self.kind)
            .image(&self.image)
            .essential(true)
            // The container may use the whole task (moto also needs these).
            .cpu(self.cpu as i32)
            .memory(self.memory as i32)
            .set_environment(Some(
                self.environment
                    .iter()
                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                    .collect(),
            ))
            .set_secrets(Some(
                self.secrets
                    .iter()
                    .map(|(k, arn)| Secret::builder().name(k).value_from(arn).build())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?,
            ))
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &self.log_group)
                    .options("awslogs-region", region)
                    .options("awslogs-stream-prefix", &self.kind)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?,
            );
        if let Some(cmd) = &self.command {
            c = c.command("/bin/sh").command("-c").command(cmd);
        }
        for v in &self.volumes {
            c = c.mount_points(
                MountPoint::builder()
                    .source_volume(&v.name)
                    .container_path(&v.path)
                    .read_only(false)
                    .build(),
            );
        }
        if let Some(port) = self.web_port {
            c = c.port_mappings(
                PortMapping::builder()
                    .container_port(port as i32)
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            );
        }
        Ok(c.build())
    }
}

/// The revision's tags.
pub async fn tags(ctx: &AwsContext, task_definition: &str) -> Result<Vec<Tag>> {
    let out = ctx
        .ecs
        .describe_task_definition()
        .task_definition(task_definition)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.DescribeTaskDefinition", e))?;
    Ok(out.tags().to_vec())
}

/// The value of the revision's tag `key`, if it has one.
pub fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    value_of(tags, key, |t| (t.key(), t.value()))
}

/// Registers `spec` as a new revision, or returns `current` when that
/// revision was registered from the same spec.
impl TaskSpec {
    /// The task's volumes: one EFS file system each, encrypted in transit.
    fn efs_volumes(&self) -> Result<Vec<Volume>> {
        self.volumes
            .iter()
            .map(|v| {
                let efs = EfsVolumeConfiguration::builder()
                    .file_system_id(&v.file_system_id)
                    .root_directory("/")
                    .transit_encryption(EfsTransitEncryption::Enabled)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?;
                Ok(Volume::builder()
                    .name(&v.name)
                    .efs_volume_configuration(efs)
                    .build())
            })
            .collect()
    }
}

pub async fn register_or_reuse(
    ctx: &AwsContext,
    spec: &TaskSpec,
    current: Option<&str>,
) -> Result<String> {
    let fingerprint = spec.fingerprint();
    if let Some(cur) = current {
        if let Ok(t) = tags(ctx, cur).await {
            if tag(&t, SPEC_TAG) == Some(fingerprint.as_str()) {
                return Ok(cur.to_string());
            }
        }
    }
    let tags = spec
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([(SPEC_TAG, fingerprint.as_str())])
        .map(|(k, v)| Tag::builder().key(k).value(v).build());
    let out = ctx
        .ecs
        .register_task_definition()
        .family(&spec.family)
        .container_definitions(spec.container(&ctx.region)?)
        .cpu(spec.cpu.to_string())
        .memory(spec.memory.to_string())
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .execution_role_arn(&spec.execution_role_arn)
        .task_role_arn(&spec.task_role_arn)
        .set_tags(Some(tags.collect()))
        .set_volumes(Some(spec.efs_volumes()?))
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.RegisterTaskDefinition", e))?;
    out.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Invalid("ECS registered a task definition without an ARN".into()))
}

/// Deregisters every revision of the app's families (`rack-RACK_APP_*`).
pub async fn deregister_app(ctx: &AwsContext, app: &str) -> Result<()> {
    let prefix = family(ctx, app, "");
    let request = ctx.ecs.list_task_definitions();
    let all = paginated!(
        "ECS.ListTaskDefinitions",
        request,
        |p| p.task_definition_arns(),
        None
    )?;
    let arns = all.iter().filter(|arn| {
        // arn:...:task-definition/FAMILY:REV
        let fam = arn
            .rsplit('/')
            .next()
            .and_then(|s| s.rsplit_once(':'))
            .map(|(f, _)| f);
        fam.is_some_and(|f| f.starts_with(&prefix))
    });
    for arn in arns {
        let _ = ctx
            .ecs
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await;
    }
    Ok(())
}
