use std::collections::BTreeMap;

use aws_sdk_ecs::types::TaskDefinition;

use super::rollout::Change;
use super::*;
use crate::aws::ecs::task_definition::fnv64;
use crate::aws::ecs::{app_services, service_state};
use crate::aws::testing;
use crate::release::SecretEnv;
use crate::runtime::HealthCheck;
use crate::runtime::ProcessSpec;

#[tokio::test]
async fn waiter_times_out_and_restores_the_previous_task_definition() {
    // Against moto: an updated service's deployment never completes, so a
    // waiting runtime must time out, report NotReady and point the service
    // back at the old task definition.
    let Some(fx) = Fixture::new("tmo").await else {
        return;
    };
    let mut rt = AwsRuntime::new(fx.ctx.clone(), fx.rack.clone())
        .with_rollout_timeout(Duration::from_millis(1));
    rt.wait_for_rollout = false;
    let v1 = fx.spec(1, "one", &[("A", "1")], 1);
    rt.start(&v1, &Progress::discard()).await.unwrap();
    let (td1, _) = fx.service("web").await;
    rt.wait_for_rollout = true;
    let v2 = fx.spec(2, "two", &[("A", "2")], 1);
    let err = rt.start(&v2, &Progress::discard()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotReady(_)), "{err}");
    assert!(err.to_string().contains("not complete"), "{err}");
    let (td, _) = fx.service("web").await;
    assert_eq!(
        td, td1,
        "the service must be back on the previous task definition"
    );
}

// ------------------------------------------------------------ against moto

struct Fixture {
    ctx: AwsContext,
    rack: AwsSection,
    _dir: tempfile::TempDir,
    app: String,
}

impl Fixture {
    async fn new(prefix: &str) -> Option<Fixture> {
        let (ctx, mut rack, dir) = testing::installed(prefix).await?;
        rack.wait_for_rollout = Some(false);
        let app = "shop".to_string();
        lifecycle::create_app(
            &ctx,
            &rack,
            &app,
            &["shop.example.com".into()],
            &Progress::discard(),
        )
        .await
        .unwrap();
        Some(Fixture {
            ctx,
            rack,
            _dir: dir,
            app,
        })
    }

    fn runtime(&self) -> AwsRuntime {
        AwsRuntime::new(self.ctx.clone(), self.rack.clone())
    }

    fn image(&self, tag: &str) -> String {
        let digest = format!("{:016x}", fnv64(tag.as_bytes())).repeat(4);
        format!(
            "127.0.0.1:5000/rack-{}/{}@sha256:{digest}",
            self.ctx.rack, self.app
        )
    }

    fn spec(&self, version: i64, image_tag: &str, vars: &[(&str, &str)], web: u32) -> ReleaseSpec {
        ReleaseSpec {
            app: self.app.clone(),
            version,
            deploy_id: format!("d{version}-{web}"),
            build_id: format!("b-{image_tag}"),
            image: self.image(image_tag),
            env: SecretEnv::new(
                vars.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            port: Some(8080),
            processes: vec![
                ProcessSpec {
                    kind: "web".into(),
                    command: None,
                    count: web,
                    memory_bytes: None,
                    nano_cpus: None,
                },
                ProcessSpec {
                    kind: "worker".into(),
                    command: Some("./worker --queue default".into()),
                    count: 0,
                    memory_bytes: Some(1 << 30),
                    nano_cpus: Some(500_000_000),
                },
            ],
            health: HealthCheck::default(),
            hosts: vec![format!("{}.example.com", self.app)],
            volumes: Vec::new(),
        }
    }

    async fn service(&self, kind: &str) -> (String, i32) {
        service_state(&self.ctx, &self.rack.cluster, &self.app, kind)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {kind} service"))
    }

    async fn task_definition(&self, arn: &str) -> TaskDefinition {
        self.ctx
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .unwrap()
            .task_definition()
            .unwrap()
            .clone()
    }

    /// The decrypted `DATABASE_URL` of the task definition's container.
    async fn database_url(&self, td: &TaskDefinition) -> Option<String> {
        self.secrets(td).await.remove("DATABASE_URL")
    }

    /// The decrypted value of each secret of the task definition's
    /// container.
    async fn secrets(&self, td: &TaskDefinition) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for s in td.container_definitions()[0].secrets() {
            let arn = s.value_from();
            let name = arn.split_once(":parameter").map(|(_, n)| n).unwrap_or(arn);
            let p = self
                .ctx
                .ssm
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .unwrap();
            let p = p.parameter().unwrap();
            assert_eq!(
                p.r#type(),
                Some(&aws_sdk_ssm::types::ParameterType::SecureString)
            );
            out.insert(s.name().to_string(), p.value().unwrap().to_string());
        }
        out
    }
}

#[tokio::test]
async fn releases_become_task_definitions_with_secrets_and_services() {
    let Some(fx) = Fixture::new("rt").await else {
        return;
    };
    let rt = fx.runtime();
    let (progress, mut rx) = Progress::channel();
    let secret = "p@ss word=\"x\"\nline2";
    let v1 = fx.spec(1, "one", &[("DATABASE_URL", secret), ("EMPTY", "")], 1);
    let started = rt.start(&v1, &progress).await.unwrap();
    rt.switch(&v1, started, &progress).await.unwrap();
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(
        lines.iter().any(|l| l.contains("wait_for_rollout = false")),
        "{lines:?}"
    );

    // web: image by digest, config only as secrets, PORT & co in environment.
    let (td1_arn, count) = fx.service("web").await;
    assert_eq!(count, 1);
    let td1 = fx.task_definition(&td1_arn).await;
    let c = &td1.container_definitions()[0];
    assert_eq!(c.image(), Some(v1.image.as_str()));
    let env: BTreeMap<&str, &str> = c
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    assert_eq!(env.get("PORT"), Some(&"8080"));
    assert_eq!(env.get("RACK_RELEASE"), Some(&"v1"));
    assert!(!env.contains_key("DATABASE_URL"));
    assert!(env.values().all(|v| !v.contains("p@ss")));
    let secrets = fx.secrets(&td1).await;
    assert_eq!(
        secrets.get("DATABASE_URL").map(String::as_str),
        Some(secret)
    );
    // SSM holds no empty value: an empty one is plain environment.
    assert_eq!(env.get("EMPTY"), Some(&""));
    assert!(!secrets.contains_key("EMPTY"));
    assert!(c.secrets().iter().all(|s| s
        .value_from()
        .contains(&format!(":parameter/rack/{}/shop/v1/", fx.ctx.rack))));
    assert_eq!(
        td1.network_mode(),
        Some(&aws_sdk_ecs::types::NetworkMode::Awsvpc)
    );
    assert_eq!(
        td1.execution_role_arn(),
        Some(fx.rack.execution_role_arn.as_str())
    );

    // worker: its command through /bin/sh -c, its own size, count 0.
    let (wtd, wcount) = fx.service("worker").await;
    assert_eq!(wcount, 0);
    let wtd = fx.task_definition(&wtd).await;
    assert_eq!(
        wtd.container_definitions()[0].command(),
        ["/bin/sh", "-c", "./worker --queue default"]
    );
    assert_eq!((wtd.cpu(), wtd.memory()), (Some("512"), Some("1024")));

    // No plaintext value anywhere in any of the app's task definitions.
    for arn in [&td1_arn] {
        let raw = format!("{:?}", fx.task_definition(arn).await);
        assert!(!raw.contains("p@ss"), "plaintext in task definition");
    }

    // config:set → a new release, a new revision with the new parameter.
    let v2 = fx.spec(2, "one", &[("DATABASE_URL", "changed"), ("EMPTY", "")], 1);
    rt.start(&v2, &progress).await.unwrap();
    let (td2_arn, _) = fx.service("web").await;
    assert_ne!(td2_arn, td1_arn);
    let td2 = fx.task_definition(&td2_arn).await;
    assert!(td2.revision() > td1.revision());
    assert_eq!(fx.database_url(&td2).await.as_deref(), Some("changed"));
    // The old release's parameters stay (for rollback).
    assert_eq!(fx.database_url(&td1).await.as_deref(), Some(secret));

    // ps:scale web=3 → desired count 3 on the same task definition.
    let v2_scaled = fx.spec(2, "one", &[("DATABASE_URL", "changed"), ("EMPTY", "")], 3);
    rt.start(&v2_scaled, &progress).await.unwrap();
    let (td, count) = fx.service("web").await;
    assert_eq!(count, 3);
    assert_eq!(td, td2_arn, "a scale must not register a new revision");
    let ps = rt.processes(&fx.app).await.unwrap();
    let web: Vec<_> = ps.iter().filter(|p| p.kind == "web").collect();
    assert_eq!(web.len(), 3, "{ps:?}");
    assert_eq!(web[2].name, "web.3");
    assert_eq!(web[0].release, 2);

    // A new build, then rollback to v1's build and config: the service
    // points at the old image again.
    let v3 = fx.spec(3, "two", &[("DATABASE_URL", "changed"), ("EMPTY", "")], 3);
    rt.start(&v3, &progress).await.unwrap();
    let (td3, _) = fx.service("web").await;
    assert_eq!(
        fx.task_definition(&td3).await.container_definitions()[0].image(),
        Some(fx.image("two").as_str())
    );
    let v4 = fx.spec(4, "one", &[("DATABASE_URL", secret), ("EMPTY", "")], 3);
    rt.start(&v4, &progress).await.unwrap();
    let (td4, _) = fx.service("web").await;
    let td4 = fx.task_definition(&td4).await;
    assert_eq!(
        td4.container_definitions()[0].image(),
        Some(fx.image("one").as_str())
    );
    assert_eq!(fx.database_url(&td4).await.as_deref(), Some(secret));

    // abort after start puts the service back.
    let v5 = fx.spec(5, "two", &[], 3);
    let started = rt.start(&v5, &progress).await.unwrap();
    rt.abort(started).await;
    let (td, _) = fx.service("web").await;
    assert_eq!(td, td4.task_definition_arn().unwrap());

    // A process type dropped from the Procfile is retired at switch.
    let mut v6 = fx.spec(6, "one", &[], 1);
    v6.processes.retain(|p| p.kind == "web");
    let started = rt.start(&v6, &progress).await.unwrap();
    rt.switch(&v6, started, &progress).await.unwrap();
    assert!(service_state(&fx.ctx, &fx.rack.cluster, &fx.app, "worker")
        .await
        .unwrap()
        .is_none());

    // run: RunTask with the release's config; moto reports exit code 0.
    let (stderr_tx, _) = tokio::io::duplex(4096);
    let code = rt
        .run(
            &v6,
            OneOff {
                argv: vec!["echo".into(), "hi".into()],
                tty: None,
                resize: None,
                timeout: Some(Duration::from_secs(30)),
                labels: Default::default(),
                memory_bytes: None,
                nano_cpus: None,
            },
            OneOffIo {
                stdin: None,
                stdout: Box::new(tokio::io::sink()),
                stderr: Box::new(stderr_tx),
            },
        )
        .await
        .unwrap();
    assert_eq!(code, 0);

    // logs: from the app's CloudWatch Logs group (moto runs no
    // containers: write what the awslogs driver would).
    let group = lifecycle::app_outputs(&fx.ctx, &fx.app)
        .await
        .unwrap()
        .log_group;
    fx.ctx
        .logs
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name("web/web/t1")
        .send()
        .await
        .unwrap();
    fx.ctx
        .logs
        .put_log_events()
        .log_group_name(&group)
        .log_stream_name("web/web/t1")
        .log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(crate::aws::state::now_ms())
                .message("hello from web")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    rt.logs(&fx.app, LogOptions::default(), tx).await.unwrap();
    let line = rx.recv().await.expect("a log line");
    assert_eq!(line.text, "hello from web");
    assert_eq!(line.source, "web.t1");
    assert!(rx.recv().await.is_none());

    // destroy: services, task definitions, parameters, stack, repository.
    rt.destroy(&fx.app).await.unwrap();
    assert!(app_services(&fx.ctx, &fx.rack.cluster, &fx.app)
        .await
        .unwrap()
        .is_empty());
    let params = fx
        .ctx
        .ssm
        .get_parameters_by_path()
        .path(format!("/rack/{}/shop", fx.ctx.rack))
        .recursive(true)
        .send()
        .await
        .unwrap();
    assert!(params.parameters().is_empty());
    assert!(lifecycle::app_outputs(&fx.ctx, &fx.app).await.is_err());
}

#[tokio::test]
async fn an_unknown_cluster_fails_with_the_ecs_message_and_changes_nothing() {
    let Some(fx) = Fixture::new("bad").await else {
        return;
    };
    let mut rack = fx.rack.clone();
    rack.cluster = "rack-no-such-cluster".into();
    let rt = AwsRuntime::new(fx.ctx.clone(), rack);
    let err = rt
        .start(&fx.spec(1, "one", &[("A", "b")], 1), &Progress::discard())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Cluster not found"), "{err}");
    assert!(app_services(&fx.ctx, &fx.rack.cluster, &fx.app)
        .await
        .unwrap()
        .is_empty());
}

const OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/rack-r_app_web:1";
const NEW: &str = "arn:aws:ecs:us-east-1:1:task-definition/rack-r_app_web:2";

#[test]
fn started_changes_round_trip() {
    let c = Change {
        service: "a_web".into(),
        previous: None,
        new: NEW.into(),
    };
    let round_trip = |c: &Change| {
        crate::runtime::RolloutHandle::new(vec![c.clone()])
            .take::<Vec<Change>>()
            .and_then(|v| v.into_iter().next())
    };
    assert_eq!(round_trip(&c), Some(c.clone()));
    let c = Change {
        previous: Some(OLD.into()),
        ..c
    };
    assert_eq!(round_trip(&c), Some(c));
}

#[test]
fn cron_expressions_become_eventbridge_expressions() {
    use crate::aws::scheduler::aws_expression;
    let ok = [
        ("0 3 * * *", "cron(0 3 * * ? *)"),
        ("0 0 12 * * 1", "cron(0 12 ? * 2 *)"),
        ("*/5 * * * 0,6", "cron(*/5 * ? * 1,7 *)"),
        ("0 9 * * 1-5", "cron(0 9 ? * 2-6 *)"),
        ("@hourly", "cron(0 * * * ? *)"),
        ("@weekly", "cron(0 0 ? * 1 *)"),
    ];
    for (cron, want) in ok {
        assert_eq!(aws_expression(cron).unwrap(), want, "{cron}");
    }
    for bad in ["*/2 * * * * *", "0 3 1 * 1", "0 3 * * */2"] {
        assert!(aws_expression(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_release_schedules_its_timers_on_its_task_definition_and_destroy_removes_them() {
    use crate::aws::scheduler;
    use crate::timers::{Policy, Timer};
    let Some(fx) = Fixture::new("tmr").await else {
        return;
    };
    let rt = fx.runtime();
    let timer = |name: &str, command: &str, schedule: &str| Timer {
        name: name.into(),
        command: command.into(),
        schedule: schedule.into(),
        policy: Policy::Forbid,
        max_runtime_secs: None,
    };
    let timers = vec![
        timer("nightly", "bin/cleanup", "0 3 * * *"),
        timer("weekly", "bin/digest", "0 0 12 * * 1"),
    ];
    let group = scheduler::group_name(&fx.ctx, &fx.app);
    let get = |name: &'static str| {
        let (ctx, group) = (fx.ctx.clone(), group.clone());
        async move {
            ctx.scheduler
                .get_schedule()
                .group_name(group)
                .name(name)
                .send()
                .await
                .unwrap()
        }
    };

    let v1 = fx.spec(1, "one", &[("A", "1")], 1);
    rt.set_timers(&v1, &timers, &[]).await.unwrap();
    let s = get("nightly").await;
    assert_eq!(s.schedule_expression(), Some("cron(0 3 * * ? *)"));
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    let target = s.target().unwrap();
    assert_eq!(target.arn(), fx.rack.cluster_arn);
    // Run as the rack's scheduler role (the stack's SchedulerRoleArn), not
    // the task execution role, which EventBridge Scheduler cannot assume.
    let outputs = lifecycle::installed_section(&fx.ctx).await.unwrap();
    let scheduler_role = outputs.scheduler_role_arn.expect("SchedulerRoleArn");
    assert_eq!(target.role_arn(), scheduler_role);
    assert_ne!(target.role_arn(), fx.rack.execution_role_arn);
    let input = target.input().unwrap();
    assert!(
        input.contains("bin/cleanup") && input.contains("RACK_TIMER"),
        "{input}"
    );
    let td = fx
        .task_definition(target.ecs_parameters().unwrap().task_definition_arn())
        .await;
    assert_eq!(
        td.container_definitions()[0].image(),
        Some(v1.image.as_str())
    );
    assert_eq!(td.container_definitions()[0].name(), Some("timer"));
    assert_eq!(
        get("weekly").await.schedule_expression(),
        Some("cron(0 12 ? * 2 *)")
    );

    // The next release moves the schedules to its task definition; a
    // timer it no longer has goes.
    let v2 = fx.spec(2, "two", &[("A", "2")], 1);
    rt.set_timers(&v2, &timers[..1], &[]).await.unwrap();
    let target = get("nightly").await.target().unwrap().clone();
    let td = fx
        .task_definition(target.ecs_parameters().unwrap().task_definition_arn())
        .await;
    assert_eq!(
        td.container_definitions()[0].image(),
        Some(v2.image.as_str())
    );
    assert_eq!(
        scheduler::schedule_names(&fx.ctx, &group).await.unwrap(),
        vec!["nightly".to_string()]
    );

    // A suspended timer's schedule is disabled, and enabled again.
    let nightly = ["nightly".to_string()];
    rt.set_timers(&v2, &timers[..1], &nightly).await.unwrap();
    let state = |s: aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput| {
        s.state().map(|s| s.as_str().to_string())
    };
    assert_eq!(state(get("nightly").await).as_deref(), Some("DISABLED"));
    rt.set_timers(&v2, &timers[..1], &[]).await.unwrap();
    assert_eq!(state(get("nightly").await).as_deref(), Some("ENABLED"));

    // A schedule EventBridge cannot express fails before anything changes.
    let bad = [timer("fast", "x", "*/2 * * * * *")];
    let err = rt.set_timers(&v2, &bad, &[]).await.unwrap_err();
    assert!(err.to_string().contains("seconds must be 0"), "{err}");
    assert_eq!(
        scheduler::schedule_names(&fx.ctx, &group)
            .await
            .unwrap()
            .len(),
        1
    );

    // A rack.toml written before the rack stack had a scheduler role:
    // timers refuse to schedule and say how to add it.
    let mut old = fx.rack.clone();
    old.scheduler_role_arn = None;
    let err = AwsRuntime::new(fx.ctx.clone(), old)
        .set_timers(&v2, &timers[..1], &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run `rack install aws --rack")
            && err.to_string().contains("scheduler role"),
        "{err}"
    );

    // Destroying the app removes its schedules.
    rt.destroy(&fx.app).await.unwrap();
    assert!(scheduler::schedule_names(&fx.ctx, &group)
        .await
        .unwrap()
        .is_empty());
}

/// moto's EFS file systems, as its REST API lists them (the rack itself
/// reaches EFS only through CloudFormation).
async fn efs_file_system_ids() -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = testing::moto_url();
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /2015-02-01/file-systems HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/elasticfilesystem/aws4_request, SignedHeaders=host, Signature=x\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["FileSystems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["FileSystemId"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn volumes_are_efs_file_systems_mounted_into_their_types_and_removed_with_them() {
    use crate::volumes::Volume;
    let Some(fx) = Fixture::new("vol").await else {
        return;
    };
    let rt = fx.runtime();
    let vol = |name: &str, path: &str, kind: &str| Volume {
        name: name.into(),
        path: path.into(),
        types: vec![kind.into()],
        shared: false,
        created_at: String::new(),
    };
    let mut v1 = fx.spec(1, "one", &[], 1);
    v1.volumes = vec![
        vol("data", "/data", "web"),
        vol("cache", "/cache", "worker"),
    ];
    let started = rt.start(&v1, &Progress::discard()).await.unwrap();
    rt.switch(&v1, started, &Progress::discard()).await.unwrap();

    let stack = |v: &str| fx.ctx.volume_stack_name(&fx.app, v);
    let fs_of = |v: &'static str| {
        let name = stack(v);
        let ctx = fx.ctx.clone();
        async move {
            let s = crate::aws::cfn::describe(&ctx, &name)
                .await
                .unwrap()
                .unwrap();
            crate::aws::cfn::outputs(&s)["FileSystemId"].clone()
        }
    };
    let (data_fs, cache_fs) = (fs_of("data").await, fs_of("cache").await);
    assert_ne!(data_fs, cache_fs);
    let listed = efs_file_system_ids().await;
    assert!(
        listed.contains(&data_fs) && listed.contains(&cache_fs),
        "{listed:?}"
    );

    // web mounts data (and only data) from its EFS file system.
    let (td, _) = fx.service("web").await;
    let td = fx.task_definition(&td).await;
    let vols = td.volumes();
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].name(), Some("data"));
    let efs = vols[0].efs_volume_configuration().unwrap();
    assert_eq!(efs.file_system_id(), data_fs);
    let mp = td.container_definitions()[0].mount_points();
    assert_eq!(mp.len(), 1);
    assert_eq!(mp[0].source_volume(), Some("data"));
    assert_eq!(mp[0].container_path(), Some("/data"));
    let (wtd, _) = fx.service("worker").await;
    let wtd = fx.task_definition(&wtd).await;
    assert_eq!(wtd.volumes().len(), 1);
    assert_eq!(
        wtd.volumes()[0]
            .efs_volume_configuration()
            .unwrap()
            .file_system_id(),
        cache_fs
    );

    // A second release reuses the file systems.
    let mut v2 = fx.spec(2, "two", &[], 1);
    v2.volumes = v1.volumes.clone();
    let started = rt.start(&v2, &Progress::discard()).await.unwrap();
    rt.switch(&v2, started, &Progress::discard()).await.unwrap();
    assert_eq!(fs_of("data").await, data_fs);

    // volumes:destroy removes the stack and the file system.
    rt.destroy_volume(&fx.app, "data").await.unwrap();
    assert!(crate::aws::cfn::describe(&fx.ctx, &stack("data"))
        .await
        .unwrap()
        .is_none_or(|s| crate::aws::cfn::status(&s) == "DELETE_COMPLETE"));
    let listed = efs_file_system_ids().await;
    assert!(!listed.contains(&data_fs), "{listed:?}");
    assert!(listed.contains(&cache_fs));
    // apps:destroy removes the rest.
    rt.destroy(&fx.app).await.unwrap();
    assert!(!efs_file_system_ids().await.contains(&cache_fs));
}
