use super::*;

#[test]
fn build_ids_sort_by_time_and_are_tags() {
    let ids: Vec<String> = (0..50).map(|_| new_build_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    for id in &ids {
        assert_eq!(id.len(), 13, "{id}");
        assert!(valid_tag_part(id), "{id}");
    }
    let set: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(set.len(), ids.len());
}

#[test]
fn limits_are_checked() {
    let docker = Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
        .expect("lazy");
    let mut o = BuildOptions::default();
    assert!(Builder::new(docker.clone(), o.clone()).is_ok());
    o.limits.memory_bytes = Some(MAX_BUILD_MEMORY + 1);
    assert!(Builder::new(docker.clone(), o.clone()).is_err());
    o.limits.memory_bytes = None;
    o.max_concurrent_builds = 0;
    assert!(Builder::new(docker, o).is_err());
    assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
    assert!("host".parse::<NetworkMode>().is_err());
}

#[test]
fn error_reason_is_one_line() {
    let e = BuildError::Failed(
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3\nmore".into(),
    );
    assert_eq!(
        e.reason(),
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    );
    assert_eq!(
        BuildError::Timeout(Duration::from_secs(5)).reason(),
        "build timed out after 5s"
    );
}

/// The pipeline spawns builds: the future must be Send.
#[allow(dead_code)]
fn build_future_is_send(b: &Builder, r: BuildRequest) {
    fn is_send<T: Send>(_: T) {}
    is_send(b.build(r, Progress::discard()));
}

#[test]
fn sizes() {
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
}
