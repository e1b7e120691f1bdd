//! The aws provider end to end against moto (AWS APIs) and the local
//! registry (standing in for ECR's registry host): install, push, config,
//! rollback, scale, destroy, uninstall, with the real AWS SDK.

use std::process::Command;

use aws_sdk_ecs::types::TaskDefinition;

use crate::builds::{add_fixture, docker, require_docker};
use crate::git::work;
use crate::harness::{Out, Rack, RACK};

fn moto() -> String {
    std::env::var("RACK_TEST_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5055".into())
}

fn aws_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), moto()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        (
            "RACK_ECR_REGISTRY".into(),
            std::env::var("RACK_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into()),
        ),
    ]
}

fn rack_aws(rack: &Rack, args: &[&str]) -> Out {
    let mut c = Command::new(RACK);
    c.args(args).arg("--data-dir").arg(rack.data_dir());
    for (k, v) in aws_env() {
        c.env(k, v);
    }
    c.output().unwrap().into()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The same endpoint, credentials and region as the server's environment
/// (`aws_env`), given to the SDK directly: the test process's own
/// environment is never changed.
async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "rack-it",
        ))
        .load()
        .await
}

async fn clients() -> (
    aws_sdk_ecs::Client,
    aws_sdk_ssm::Client,
    aws_sdk_s3::Client,
    aws_sdk_cloudformation::Client,
    aws_sdk_cloudwatchlogs::Client,
) {
    let conf = sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    (
        aws_sdk_ecs::Client::new(&conf),
        aws_sdk_ssm::Client::new(&conf),
        s3,
        aws_sdk_cloudformation::Client::new(&conf),
        aws_sdk_cloudwatchlogs::Client::new(&conf),
    )
}

/// Writes what the awslogs driver would (moto runs no containers).
async fn put_logs(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    lines: &[&str],
) {
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut req = logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (i, l) in lines.iter().enumerate() {
        req = req.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i as i64)
                .message(*l)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

async fn latest_td(ecs: &aws_sdk_ecs::Client, family: &str) -> TaskDefinition {
    let arns = ecs
        .list_task_definitions()
        .family_prefix(family)
        .send()
        .await
        .unwrap()
        .task_definition_arns()
        .to_vec();
    let last = arns
        .last()
        .unwrap_or_else(|| panic!("no task definition for {family}"));
    ecs.describe_task_definition()
        .task_definition(last)
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .clone()
}

/// Sets `[aws] KEY = VALUE` in the rack's `rack.toml` (the server must be
/// restarted to see it); returns the old value.
fn set_aws(rack: &Rack, key: &str, value: toml::Value) -> Option<toml::Value> {
    let path = rack.data_dir().join("rack.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = table["aws"]
        .as_table_mut()
        .unwrap()
        .insert(key.into(), value);
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    old
}

/// `rack install aws --rack NAME` into moto's default VPC; returns the
/// install arguments (for running it again).
fn install(rack: &Rack, name: &str) -> Vec<String> {
    let vpc = rt().block_on(rack::aws::testing::default_vpc());
    let mut install: Vec<String> = vec![
        "install".into(),
        "aws".into(),
        "--rack".into(),
        name.to_string(),
    ];
    if let Some(v) = &vpc.vpc_id {
        install.extend(["--vpc".into(), v.clone()]);
    }
    for s in vpc.subnet_ids.clone().unwrap_or_default() {
        install.extend(["--subnet".into(), s]);
    }
    let args: Vec<&str> = install.iter().map(String::as_str).collect();
    rack_aws(rack, &args).ok();
    install
}

/// moto never advances ECS deployments (architecture note), so the test
/// racks do not wait for them; the rollout waiter has its own tests.
fn no_rollout_wait(rack: &mut Rack) {
    set_aws(rack, "wait_for_rollout", toml::Value::Boolean(false));
    rack.start_again();
}

#[test]
fn aws_provider_push_config_rollback_scale_destroy() {
    require_docker();
    let name = format!("it{}", std::process::id() % 100_000);
    let mut rack = Rack::unstarted("", aws_env());
    let a = rack.admin.name.clone();
    assert_eq!(a, "admin");
    let install_args = install(&rack, &name);
    let args: Vec<&str> = install_args.iter().map(String::as_str).collect();
    let toml = std::fs::read_to_string(rack.data_dir().join("rack.toml")).unwrap();
    assert!(
        toml.contains("provider = \"aws\"") && toml.contains(&format!("rack = \"{name}\"")),
        "{toml}"
    );
    let (ecs, ssm, s3, cfn, logs) = rt().block_on(clients());
    let stack = format!("rack-{name}");
    let events = |cfn: &aws_sdk_cloudformation::Client| {
        rt().block_on(async {
            cfn.describe_stack_events()
                .stack_name(&stack)
                .send()
                .await
                .unwrap()
                .stack_events()
                .len()
        })
    };
    let before = events(&cfn);
    rack_aws(&rack, &args).ok();
    assert_eq!(events(&cfn), before, "a second install changes nothing");

    no_rollout_wait(&mut rack);
    let admin = &rack.admin;
    let app = "web";
    rack.ssh(admin, &format!("apps:create {app}")).ok();
    // The app's stack: repository, log group, target group, listener rule.
    let ecr = rt().block_on(async { aws_sdk_ecr::Client::new(&sdk_config().await) });
    let repo = format!("rack-{name}/{app}");
    rt().block_on(async {
        let res = cfn
            .describe_stack_resources()
            .stack_name(format!("rack-{name}-app-{app}"))
            .send()
            .await
            .unwrap();
        let types: Vec<&str> = res
            .stack_resources()
            .iter()
            .filter_map(|r| r.resource_type())
            .collect();
        for t in [
            "AWS::ECR::Repository",
            "AWS::Logs::LogGroup",
            "AWS::ElasticLoadBalancingV2::TargetGroup",
            "AWS::ElasticLoadBalancingV2::ListenerRule",
        ] {
            assert!(types.contains(&t), "{t} missing from {types:?}");
        }
        ecr.describe_repositories()
            .repository_names(&repo)
            .send()
            .await
            .unwrap();
    });
    let secret = format!("secret-{}", std::process::id());
    rack.ssh(admin, &format!("config:set {app} GREETING={secret}"))
        .ok();
    let w = work(&rack, admin, "w");
    add_fixture(&w, "dockerfile-httpd");
    let out = w.git(&["push", &rack.git_url(app), "main"]);
    out.ok();
    assert!(out.stderr.contains("Deployed web v1"), "{}", out.stderr);

    let family = format!("rack-{name}_{app}_web");
    rt().block_on(async {
        let td = latest_td(&ecs, &family).await;
        let c = &td.container_definitions()[0];
        let image = c.image().unwrap();
        assert!(image.contains("@sha256:"), "runs by digest: {image}");
        // The image is in the registry by that digest.
        let (repo, digest) = image.split_once('@').unwrap();
        let path = repo.split_once('/').unwrap().1;
        let status = rack::aws::testing::registry_get_status(
            repo.split('/').next().unwrap(),
            &format!("/v2/{path}/manifests/{digest}"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(c
            .environment()
            .iter()
            .all(|e| e.value() != Some(secret.as_str())));
        let param = c
            .secrets()
            .iter()
            .find(|s| s.name() == "GREETING")
            .expect("GREETING is a secret")
            .value_from()
            .to_string();
        assert!(
            param.contains(&format!("/rack/{name}/{app}/v1/GREETING")),
            "{param}"
        );
        let got = ssm
            .get_parameter()
            .name(&param)
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        assert_eq!(got.parameter().unwrap().value(), Some(secret.as_str()));
    });

    // Processes' output comes back from the app's CloudWatch Logs group:
    // the last N lines across streams, named by type and task, and
    // filtered by type.
    let group = format!("/rack/{name}/{app}");
    rt().block_on(async {
        put_logs(&logs, &group, "web/web/task1", &["web one", "web two"]).await;
        put_logs(&logs, &group, "worker/worker/task2", &["worker one"]).await;
    });
    let out = rack.ssh(admin, &format!("logs {app} -n 2"));
    out.ok();
    assert!(!out.stdout.contains("web one"), "{}", out.stdout);
    assert!(out.stdout.contains("web.task1 | web two"), "{}", out.stdout);
    assert!(
        out.stdout.contains("worker.task2 | worker one"),
        "{}",
        out.stdout
    );
    let out = rack.ssh(admin, &format!("logs {app} --type web"));
    out.ok();
    assert!(
        out.stdout.contains("web one") && !out.stdout.contains("worker"),
        "{}",
        out.stdout
    );
    // A one-off task: RunTask, its exit code from DescribeTasks.
    let out = rack.ssh(admin, &format!("run {app} -- echo hi"));
    out.ok();
    assert!(out.stderr.contains("one-off task"), "{}", out.stderr);

    // A config change: a new revision with the new parameter.
    rack.ssh(
        admin,
        &format!("config:set {app} GREETING=changed-{secret}"),
    )
    .ok();
    let v2_image = rt().block_on(async {
        let td = latest_td(&ecs, &family).await;
        let c = &td.container_definitions()[0];
        let param = c
            .secrets()
            .iter()
            .find(|s| s.name() == "GREETING")
            .unwrap()
            .value_from()
            .to_string();
        assert!(param.contains("/v2/GREETING"), "{param}");
        c.image().unwrap().to_string()
    });

    // A new build, then rollback: the service points at the old image again.
    w.commit("public/extra.html", "x");
    w.git(&["push", &rack.git_url(app), "main"]).ok();
    // Releases run from ECR: the rack's engine keeps only the newest
    // build's image (the next build's cache).
    let builds = rack.ssh(admin, &format!("builds {app} --json")).ok().json();
    let local = |i: usize| format!("rack/{app}:{}", builds[i]["id"].as_str().unwrap());
    let (newest, older) = (local(0), local(1));
    assert!(
        docker(&["image", "inspect", &newest]).code == 0
            && docker(&["image", "inspect", &older]).code != 0,
        "{newest} kept, {older} removed"
    );
    rack.ssh(admin, &format!("releases:rollback {app} v2")).ok();
    let cluster = rt().block_on(async {
        let section = rack::aws::rack::AwsSection::from_file(&rack.data_dir())
            .unwrap()
            .unwrap();
        section.cluster
    });
    let service_image = |ecs: &aws_sdk_ecs::Client| {
        rt().block_on(async {
            let svc = ecs
                .describe_services()
                .cluster(&cluster)
                .services(format!("{app}_web"))
                .send()
                .await
                .unwrap();
            let svc = svc.services()[0].clone();
            let td = ecs
                .describe_task_definition()
                .task_definition(svc.task_definition().unwrap())
                .send()
                .await
                .unwrap();
            (
                td.task_definition().unwrap().container_definitions()[0]
                    .image()
                    .unwrap()
                    .to_string(),
                svc.desired_count(),
            )
        })
    };
    assert_eq!(service_image(&ecs).0, v2_image);
    rack.ssh(admin, &format!("ps:scale {app} web=3")).ok();
    assert_eq!(service_image(&ecs).1, 3);

    // No config value is in plaintext in the bucket or a task definition.
    rt().block_on(async {
        let section = rack::aws::rack::AwsSection::from_file(&rack.data_dir())
            .unwrap()
            .unwrap();
        let list = s3
            .list_objects_v2()
            .bucket(&section.bucket)
            .send()
            .await
            .unwrap();
        assert!(!list.contents().is_empty());
        for o in list.contents() {
            let body = s3
                .get_object()
                .bucket(&section.bucket)
                .key(o.key().unwrap())
                .send()
                .await
                .unwrap();
            let bytes = body.body.collect().await.unwrap().into_bytes();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret),
                "{} holds a config value",
                o.key().unwrap()
            );
        }
        let tds = ecs
            .list_task_definitions()
            .family_prefix(&family)
            .send()
            .await
            .unwrap();
        for arn in tds.task_definition_arns() {
            let td = ecs
                .describe_task_definition()
                .task_definition(arn)
                .send()
                .await
                .unwrap();
            assert!(!format!("{:?}", td.task_definition()).contains(&secret));
        }
    });

    rack.ssh(admin, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    assert!(
        docker(&["image", "inspect", &newest]).code != 0,
        "the local build image goes with the app"
    );
    rt().block_on(async {
        let r = cfn
            .describe_stacks()
            .stack_name(format!("rack-{name}-app-{app}"))
            .send()
            .await;
        let gone = match r {
            Err(_) => true,
            Ok(o) => o
                .stacks()
                .iter()
                .all(|s| format!("{:?}", s.stack_status()).contains("Delete")),
        };
        assert!(gone, "the app stack is deleted");
        assert!(
            ecr.describe_repositories()
                .repository_names(&repo)
                .send()
                .await
                .is_err(),
            "the repository is deleted"
        );
        let svc = ecs
            .describe_services()
            .cluster(&cluster)
            .services(format!("{app}_web"))
            .send()
            .await
            .unwrap();
        assert!(
            svc.services().iter().all(|s| s.status() != Some("ACTIVE")),
            "the service is deleted: {:?}",
            svc.services()
        );
    });
    rack.stop();
    rack_aws(&rack, &["uninstall", "aws", "--rack", &name]).ok();
}

/// Errors that moto really raises (an unknown KMS key, an unknown cluster,
/// a missing bucket) fail the command or push with the AWS error's own
/// message and change nothing.
#[test]
fn aws_errors_fail_with_the_aws_message_and_change_nothing() {
    require_docker();
    let name = format!("ie{}", std::process::id() % 100_000);
    let mut rack = Rack::unstarted("", aws_env());
    install(&rack, &name);
    no_rollout_wait(&mut rack);
    let admin = rack.admin.clone();
    let app = "errs";
    rack.ssh(&admin, &format!("apps:create {app}")).ok();
    rack.ssh(&admin, &format!("config:set {app} A=1")).ok();
    let config = |rack: &Rack| {
        rack.ssh(&admin, &format!("config {app} --json"))
            .ok()
            .json()
    };
    let before = config(&rack);

    // `rack keys` works on the bucket, the server's own store.
    let key = crate::harness::keygen(rack.dir.path(), "offline");
    let mut c = Command::new(RACK);
    c.args(["keys", "add", "offline", "--app", app, "--data-dir"])
        .arg(rack.data_dir());
    for (k, v) in aws_env() {
        c.env(k, v);
    }
    crate::harness::run_with_stdin(c, key.public().as_bytes()).ok();
    let keys = rack.ssh(&admin, "keys --json").ok().json();
    assert!(keys.to_string().contains("offline"), "{keys}");

    // An unknown KMS key: config:set fails with KMS's message.
    rack.stop();
    let bad_key = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-0000000000aa";
    let key_arn = set_aws(&rack, "key_arn", bad_key.into()).unwrap();
    rack.start_again();
    rack.ssh(&admin, &format!("config:set {app} B=2"))
        .err("00000000-0000-0000-0000-0000000000aa");
    assert_eq!(config(&rack), before, "config unchanged");
    rack.stop();
    set_aws(&rack, "key_arn", key_arn);

    // An unknown cluster: the push is rejected with ECS's message, the ref
    // does not move, no release is current.
    let cluster = set_aws(&rack, "cluster", "rack-no-such-cluster".into()).unwrap();
    rack.start_again();
    let w = work(&rack, &admin, "w");
    add_fixture(&w, "dockerfile-httpd");
    let out = w.git(&["push", &rack.git_url(app), "main"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("Cluster not found") && out.stderr.contains("[remote rejected]"),
        "{}",
        out.stderr
    );
    let refs = w.git(&["ls-remote", &rack.git_url(app)]);
    assert!(!refs.stdout.contains("refs/heads/main"), "{}", refs.stdout);
    let releases = rack
        .ssh(&admin, &format!("releases {app} --json"))
        .ok()
        .json();
    assert!(
        releases
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "succeeded"),
        "{releases}"
    );
    assert_eq!(config(&rack), before);
    rack.stop();
    set_aws(&rack, "cluster", cluster);

    // A missing bucket: `rack keys` and `rack server` fail with S3's
    // message.
    let bucket = set_aws(&rack, "bucket", "rack-no-such-bucket-4711".into()).unwrap();
    rack_aws(&rack, &["keys", "list"]).err("bucket does not exist");
    let mut c = Command::new(RACK);
    c.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(rack.data_dir());
    for (k, v) in aws_env() {
        c.env(k, v);
    }
    let out: Out = c.output().unwrap().into();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("bucket does not exist"),
        "{}",
        out.stderr
    );
    set_aws(&rack, "bucket", bucket);

    // Nothing was lost along the way.
    rack.start_again();
    assert_eq!(config(&rack), before);
    rack.ssh(&admin, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    rack.stop();
    rack_aws(&rack, &["uninstall", "aws", "--rack", &name]).ok();
}

/// Timers on aws: each release writes an EventBridge schedule per timer
/// running that release's task definition; the next release moves it, a
/// rollback to a release without timers removes them, destroy removes all.
#[test]
fn aws_timers_are_eventbridge_schedules_of_the_current_release() {
    require_docker();
    let name = format!("tm{}", std::process::id() % 100_000);
    let mut rack = Rack::unstarted("", aws_env());
    install(&rack, &name);
    no_rollout_wait(&mut rack);
    let (ecs, _, _, cfn, _) = rt().block_on(clients());
    // Its own SDK config: nothing read from the environment.
    let scheduler = rt().block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto())
            .credentials_provider(aws_sdk_scheduler::config::Credentials::new(
                "testing", "testing", None, None, "rack-it",
            ))
            .load()
            .await;
        aws_sdk_scheduler::Client::new(&conf)
    });
    let admin = &rack.admin;
    let app = "cron";
    let group = format!("rack-{name}-{app}");
    rack.ssh(admin, &format!("apps:create {app}")).ok();
    let w = work(&rack, admin, "w");
    add_fixture(&w, "dockerfile-httpd");
    w.git(&["push", &rack.git_url(app), "main"]).ok(); // v1: no timers
    w.commit(
        "app.json",
        r#"{"cron": [{"name": "nightly", "command": "echo cleanup", "schedule": "0 3 * * *"}]}"#,
    );
    w.git(&["push", &rack.git_url(app), "main"]).ok(); // v2
                                                       // The schedule's target: the release's task definition, by image.
    let target_image = || {
        rt().block_on(async {
            let s = scheduler
                .get_schedule()
                .group_name(&group)
                .name("nightly")
                .send()
                .await
                .unwrap();
            assert_eq!(s.schedule_expression(), Some("cron(0 3 * * ? *)"));
            let td = s
                .target()
                .unwrap()
                .ecs_parameters()
                .unwrap()
                .task_definition_arn();
            let td = ecs
                .describe_task_definition()
                .task_definition(td)
                .send()
                .await
                .unwrap();
            td.task_definition().unwrap().container_definitions()[0]
                .image()
                .unwrap()
                .to_string()
        })
    };
    let web_image = || {
        let family = format!("rack-{name}_{app}_web");
        rt().block_on(async {
            latest_td(&ecs, &family).await.container_definitions()[0]
                .image()
                .unwrap()
                .to_string()
        })
    };
    let v2 = target_image();
    assert_eq!(v2, web_image());
    // It runs as the rack's scheduler role (the stack's SchedulerRoleArn),
    // not as the task execution role EventBridge cannot assume.
    let (role, scheduler_role, execution_role) = rt().block_on(async {
        let s = scheduler
            .get_schedule()
            .group_name(&group)
            .name("nightly")
            .send()
            .await
            .unwrap();
        let stack = cfn
            .describe_stacks()
            .stack_name(format!("rack-{name}"))
            .send()
            .await
            .unwrap();
        let output = |key: &str| {
            stack.stacks()[0]
                .outputs()
                .iter()
                .find(|o| o.output_key() == Some(key))
                .and_then(|o| o.output_value())
                .unwrap_or_else(|| panic!("stack output {key}"))
                .to_string()
        };
        (
            s.target().unwrap().role_arn().to_string(),
            output("SchedulerRoleArn"),
            output("ExecutionRoleArn"),
        )
    });
    assert_eq!(role, scheduler_role);
    assert_ne!(role, execution_role);
    // Suspended: the schedule is disabled (across a deploy); resumed:
    // enabled.
    let state = || {
        rt().block_on(async {
            let s = scheduler
                .get_schedule()
                .group_name(&group)
                .name("nightly")
                .send()
                .await
                .unwrap();
            s.state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default()
        })
    };
    assert_eq!(state(), "ENABLED");
    rack.ssh(admin, &format!("timers:suspend {app} nightly"))
        .ok();
    assert_eq!(state(), "DISABLED");
    let list = rack.ssh(admin, &format!("timers {app} --json")).ok().json();
    assert_eq!(list[0]["name"], "nightly", "{list}");

    // v3, a new build: the schedule now runs v3's image.
    w.commit("public/extra.html", "x");
    w.git(&["push", &rack.git_url(app), "main"]).ok();
    let v3 = target_image();
    assert_ne!(v3, v2);
    assert_eq!(v3, web_image());
    assert_eq!(state(), "DISABLED", "suspended across a deploy");
    rack.ssh(admin, &format!("timers:resume {app}")).ok();
    assert_eq!(state(), "ENABLED");

    // A rollback to v1 (no app.json) removes the schedule.
    rack.ssh(admin, &format!("releases:rollback {app} v1")).ok();
    let names = |scheduler: &aws_sdk_scheduler::Client| {
        rt().block_on(async {
            match scheduler.list_schedules().group_name(&group).send().await {
                Ok(o) => o.schedules().len(),
                Err(_) => 0,
            }
        })
    };
    assert_eq!(names(&scheduler), 0);
    rack.ssh(admin, &format!("releases:rollback {app} v3")).ok();
    assert_eq!(names(&scheduler), 1);
    rack.ssh(admin, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    assert_eq!(names(&scheduler), 0);
    rack.stop();
    rack_aws(&rack, &["uninstall", "aws", "--rack", &name]).ok();
}

/// README.md's aws block (see `readme.rs`), against moto: `rack install
/// aws` as written (a new VPC), then `rack server --provider aws` in the
/// background on ports 0 until it listens (state in moto's S3), then
/// SIGTERM. The rack name is this run's own: moto is shared. (Uninstall is
/// tested above, in moto's default VPC: moto cannot delete a VPC that
/// CloudFormation created.)
pub fn readme_block(tmp: &std::path::Path, path: &str, block: &str) {
    let home = tmp.join("aws-home");
    std::fs::create_dir_all(&home).unwrap();
    let name = format!("readme{}", std::process::id() % 100_000);
    let mut script = String::from("set -eo pipefail\nexec 2>&1\n");
    for line in block
        .replace("--rack prod", &format!("--rack {name}"))
        .lines()
    {
        let cmd = line.split("  #").next().unwrap_or(line).trim_end();
        if cmd.starts_with("rack server") {
            script.push_str(&format!(
                "{cmd} --listen 127.0.0.1:0 --http 127.0.0.1:0 2>server.log &\n\
                 server=$!\n\
                 for _ in $(seq 600); do grep -q 'ssh listening' server.log && break; sleep 0.1; done\n\
                 kill -TERM $server; wait $server\n\
                 grep 'ssh listening' server.log\n"
            ));
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    let mut c = Command::new("bash");
    c.args(["-c", &script])
        .current_dir(&home)
        .env("HOME", &home)
        .env("PATH", path)
        .env_remove("RACK_DATA_DIR")
        .envs(aws_env());
    let out: Out = c.output().unwrap().into();
    assert!(
        out.code == 0
            && out.stdout.contains(&format!("Installed rack {name}"))
            && out.stdout.contains("ssh listening"),
        "README's aws block against moto (exit {}):\n{}\n--- the block:\n{block}",
        out.code,
        out.stdout
    );
}

/// A volume on aws through the real binary: an EFS file system in a stack
/// of its own, mounted into the web task definition by `volumes:create`'s
/// release; the single-writer rule refuses web=2; `volumes:destroy` and
/// `apps:destroy` delete the stacks.
#[test]
fn aws_volumes_are_efs_file_systems_mounted_into_the_task_definition() {
    require_docker();
    let name = format!("iv{}", std::process::id() % 100_000);
    let mut rack = Rack::unstarted("", aws_env());
    install(&rack, &name);
    no_rollout_wait(&mut rack);
    let admin = rack.admin.clone();
    let app = "files";
    let (ecs, _ssm, _s3, cfn, _logs) = rt().block_on(clients());
    rack.ssh(&admin, &format!("apps:create {app}")).ok();
    let w = work(&rack, &admin, "w");
    add_fixture(&w, "dockerfile-httpd");
    w.git(&["push", &rack.git_url(app), "main"]).ok();
    rack.ssh(&admin, &format!("volumes:create {app} data --path /data"))
        .ok();
    rack.ssh(
        &admin,
        &format!("volumes:create {app} cache --path /cache --shared"),
    )
    .ok();
    let stack = |v: &str| format!("rack-{name}-app-{app}-V-{v}");
    let fs_id = |v: &str| {
        rt().block_on(async {
            let s = cfn
                .describe_stacks()
                .stack_name(stack(v))
                .send()
                .await
                .ok()?;
            let s = s.stacks().first()?.clone();
            if format!("{:?}", s.stack_status()).contains("Delete") {
                return None;
            }
            s.outputs()
                .iter()
                .find(|o| o.output_key() == Some("FileSystemId"))
                .and_then(|o| o.output_value().map(str::to_string))
        })
    };
    let (data_fs, cache_fs) = (fs_id("data").unwrap(), fs_id("cache").unwrap());
    let family = format!("rack-{name}_{app}_web");
    rt().block_on(async {
        let td = latest_td(&ecs, &family).await;
        let mut got: Vec<(String, String)> = td
            .volumes()
            .iter()
            .map(|v| {
                let efs = v.efs_volume_configuration().unwrap();
                (
                    v.name().unwrap().to_string(),
                    efs.file_system_id().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("cache".to_string(), cache_fs.clone()),
                ("data".to_string(), data_fs.clone())
            ]
        );
        let mut paths: Vec<&str> = td.container_definitions()[0]
            .mount_points()
            .iter()
            .filter_map(|m| m.container_path())
            .collect();
        paths.sort();
        assert_eq!(paths, ["/cache", "/data"]);
    });
    rack.ssh(&admin, &format!("ps:scale {app} web=2"))
        .err("runs at most 1 instance");
    rack.ssh(
        &admin,
        &format!("volumes:destroy {app} data --confirm data"),
    )
    .ok();
    assert_eq!(fs_id("data"), None, "the data volume's stack is deleted");
    rt().block_on(async {
        let td = latest_td(&ecs, &family).await;
        assert_eq!(td.volumes().len(), 1);
    });
    rack.ssh(&admin, &format!("ps:scale {app} web=2")).ok();
    rack.ssh(&admin, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    assert_eq!(fs_id("cache"), None, "apps:destroy deletes the volumes");
    rack.stop();
    rack_aws(&rack, &["uninstall", "aws", "--rack", &name]).ok();
}

/// Waits until the stack leaves its `*_IN_PROGRESS` state.
async fn settle(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> String {
    loop {
        let d = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .unwrap();
        let st = d.stacks()[0].stack_status().unwrap().as_str().to_string();
        if !st.ends_with("_IN_PROGRESS") {
            return st;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[test]
fn aws_update_applies_change_sets_and_backup_exports_the_bucket() {
    let rack = Rack::unstarted("", aws_env());
    let name = format!("up{}", std::process::id() % 100_000);
    install(&rack, &name);
    let stack = format!("rack-{name}");
    let (_, _, _, cfn, _) = rt().block_on(clients());
    // The rack as an older version left it: no bucket versioning.
    rt().block_on(async {
        let t = cfn
            .get_template()
            .stack_name(&stack)
            .template_stage(aws_sdk_cloudformation::types::TemplateStage::Original)
            .send()
            .await
            .unwrap();
        let current = t.template_body().unwrap().to_string();
        let older = current.replace(
            "      VersioningConfiguration:\n        Status: Enabled\n",
            "",
        );
        assert_ne!(older, current, "the template has bucket versioning");
        let keep = |k: &str| {
            aws_sdk_cloudformation::types::Parameter::builder()
                .parameter_key(k)
                .use_previous_value(true)
                .build()
        };
        cfn.update_stack()
            .stack_name(&stack)
            .template_body(older)
            .parameters(keep("RackName"))
            .parameters(keep("VpcId"))
            .parameters(keep("SubnetIds"))
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
            .send()
            .await
            .unwrap();
        assert_eq!(settle(&cfn, &stack).await, "UPDATE_COMPLETE");
    });
    let template_now = || {
        rt().block_on(async {
            let t = cfn.get_template().stack_name(&stack).send().await.unwrap();
            t.template_body().unwrap().to_string()
        })
    };
    // --dry-run lists the change and changes nothing.
    let out = rack_aws(&rack, &["update", "--dry-run"]);
    out.ok();
    assert!(
        out.stderr.contains("Modify AWS::S3::Bucket Bucket"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("nothing was changed"), "{}", out.stdout);
    assert!(!template_now().contains("VersioningConfiguration"));
    // The update applies it.
    let out = rack_aws(&rack, &["update"]);
    out.ok();
    assert!(
        out.stderr.contains(&format!("Updated stack {stack}")),
        "{}",
        out.stderr
    );
    assert!(template_now().contains("VersioningConfiguration"));
    // (moto neither applies a stack's VersioningConfiguration to the bucket
    // nor answers GetBucketVersioning in a form the SDK reads: the
    // template the stack holds is what can be checked here.)
    // Nothing left to change: a second update says so.
    let out = rack_aws(&rack, &["update", "--dry-run"]);
    out.ok();
    assert!(out.stderr.contains("no changes"), "{}", out.stderr);
    // `rack backup` exports the bucket's current objects (here the sealed
    // master and host keys, made by `rack host-key`).
    rack_aws(&rack, &["host-key"]).ok();
    let file = rack.dir.path().join("aws-backup.tar");
    rack_aws(&rack, &["backup", "--output", file.to_str().unwrap()]).ok();
    let names = Command::new("tar").arg("tf").arg(&file).output().unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(names.starts_with("rack-backup.json\n"), "{names}");
    assert!(
        names.lines().filter(|l| l.starts_with("bucket/")).count() >= 2,
        "{names}"
    );
    let refused = rack.dir.path().join("refused.tar");
    rack_aws(
        &rack,
        &[
            "backup",
            "--include-master-key",
            "--output",
            refused.to_str().unwrap(),
        ],
    )
    .err("sealed with its KMS key");
    assert!(!refused.exists(), "no half a backup is left");
    rack_aws(&rack, &["uninstall", "aws", "--rack", &name]).ok();
}
