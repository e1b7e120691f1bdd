//! Test support for the aws module's own tests: a context against the moto
//! server that `scripts/test` starts (`RACK_TEST_MOTO_URL`, default
//! `http://127.0.0.1:5055`), with static test credentials and a rack name
//! unique to the test run (moto keeps state across runs).

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use rand::Rng;

use super::AwsContext;

pub fn moto_url() -> String {
    std::env::var("RACK_TEST_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5055".to_string())
}

/// The local registry standing in for ECR's registry host.
pub fn registry() -> String {
    std::env::var("RACK_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string())
}

async fn reachable(url: &str) -> bool {
    let addr = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// A unique rack name: `prefix` (cut to 12) + 6 random characters.
pub fn unique_rack(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..6)
        .map(|_| {
            let n = rng.gen_range(0..36u8);
            (if n < 10 { b'0' + n } else { b'a' + n - 10 }) as char
        })
        .collect();
    let p: String = prefix.chars().take(12).collect();
    format!("{p}{suffix}")
}

/// A context for a fresh rack against moto. moto being down is a failure
/// that says how to start it (the `Option` is always `Some`).
pub async fn context(prefix: &str) -> Option<AwsContext> {
    let url = moto_url();
    if !reachable(&url).await {
        // Never skipped: a missing service is a failure that says how to
        // start it.
        panic!(
            "moto not reachable at {url}: run scripts/test --setup-only (it starts moto_server)"
        );
    }
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "rack-tests",
        ))
        .load()
        .await;
    Some(AwsContext::from_shared(&unique_rack(prefix), &shared))
}

/// A new KMS key of the test account: its ARN.
pub async fn kms_key(ctx: &AwsContext) -> String {
    ctx.kms
        .create_key()
        .send()
        .await
        .expect("create a KMS key")
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("a KMS key has an ARN")
        .to_string()
}

/// moto's default VPC and two of its default subnets, read with a raw EC2
/// query (rack has no EC2 client; moto routes on the credential scope and
/// checks no signature). A stack that creates its own VPC cannot be deleted
/// in moto (it never deletes route tables), so tests install into this one.
pub async fn default_vpc() -> super::lifecycle::InstallOptions {
    let resp = moto_query(
        "ec2",
        "Action=DescribeSubnets&Version=2016-11-15&Filter.1.Name=default-for-az&Filter.1.Value.1=true",
    )
    .await;
    let grab = |tag: &str| -> Vec<String> {
        let open = format!("<{tag}>");
        resp.split(&open)
            .skip(1)
            .filter_map(|s| s.split('<').next().map(str::to_string))
            .collect()
    };
    let subnets = grab("subnetId");
    let vpcs = grab("vpcId");
    assert!(
        subnets.len() >= 2 && !vpcs.is_empty(),
        "no default subnets in moto: {resp}"
    );
    super::lifecycle::InstallOptions {
        vpc_id: Some(vpcs[0].clone()),
        subnet_ids: Some(subnets[..2].to_vec()),
    }
}

/// The raw answer (headers and XML) of a query-protocol call to moto's
/// `service` (rack has no EC2 or IAM client; moto routes on the credential
/// scope and checks no signature).
pub async fn moto_query(service: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = moto_url();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(&host).await.expect("moto");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp
}

/// An IAM role's trust policy and inline policy `policy`, as moto answers
/// GetRole and GetRolePolicy (URL-encoded JSON inside XML), by role ARN.
pub async fn iam_role_documents(role_arn: &str, policy: &str) -> (String, String) {
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let trust = moto_query(
        "iam",
        &format!("Action=GetRole&Version=2010-05-08&RoleName={name}"),
    )
    .await;
    let inline = moto_query(
        "iam",
        &format!("Action=GetRolePolicy&Version=2010-05-08&RoleName={name}&PolicyName={policy}"),
    )
    .await;
    (trust, inline)
}

/// A freshly installed rack (in moto's default VPC) and its data dir.
#[cfg(test)]
pub async fn installed(
    prefix: &str,
) -> Option<(AwsContext, super::section::AwsSection, tempfile::TempDir)> {
    let ctx = context(prefix).await?;
    let dir = tempfile::tempdir().unwrap();
    let opts = default_vpc().await;
    let section = super::lifecycle::install_with(
        &ctx,
        dir.path(),
        &opts,
        &crate::progress::Progress::discard(),
    )
    .await
    .expect("install the test rack");
    Some((ctx, section, dir))
}

/// The test base image `scripts/test` builds.
pub const BASE_IMAGE: &str = "rack-test/busybox:latest";

/// HTTP status of a GET on the local registry (manifest media types
/// accepted), read with a plain HTTP/1.1 request.
pub async fn registry_get_status(registry: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {registry}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json\r\n\
         Connection: close\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(registry)
        .await
        .expect("registry");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
