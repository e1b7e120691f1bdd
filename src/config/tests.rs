use super::*;

#[test]
fn flag_beats_file_beats_default() {
    let dir = crate::testing::data_dir_with(
        "listen = \"127.0.0.1:1\"\ndomain = \"example.org\"\n[limits]\nmax_connections = 3\n",
    );
    let s = Settings::resolve(Overrides {
        data_dir: Some(dir.path().into()),
        listen: Some("127.0.0.1:2".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.listen, "127.0.0.1:2");
    assert_eq!(s.domain, "example.org");
    assert_eq!(s.http, "0.0.0.0:8080");
    assert_eq!(s.limits.max_connections, 3);
    assert_eq!(s.provider, Provider::Local);
    assert_eq!(s.router_threads, 0);
}

#[test]
fn router_threads_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let resolve = |text: &str| {
        std::fs::write(dir.path().join("rack.toml"), text).unwrap();
        Settings::resolve(Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        })
    };
    assert_eq!(
        resolve("[router]\nthreads = 3\n").unwrap().router_threads,
        3
    );
    assert!(resolve("[router]\nthreads = 5000\n").is_err());
    assert!(resolve("[router]\nthreadz = 1\n").is_err());
}

#[test]
fn unknown_keys_in_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rack.toml"), "lisen = \"x\"\n").unwrap();
    assert!(Settings::resolve(Overrides {
        data_dir: Some(dir.path().into()),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn keep_releases_defaults_to_ten_and_must_be_positive() {
    let resolve = |toml: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rack.toml"), toml).unwrap();
        Settings::resolve(Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        })
    };
    assert_eq!(resolve("").unwrap().keep_releases, 10);
    assert_eq!(
        resolve("[local]\nkeep_releases = 2\n")
            .unwrap()
            .keep_releases,
        2
    );
    assert!(resolve("[local]\nkeep_releases = 0\n").is_err());
}

#[test]
fn volume_and_hold_limits_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let resolve = |text: &str| {
        std::fs::write(dir.path().join("rack.toml"), text).unwrap();
        Settings::resolve(Overrides {
            data_dir: Some(dir.path().into()),
            ..Default::default()
        })
    };
    let d = resolve("").unwrap();
    assert_eq!(d.volumes.max_per_app, 10);
    assert_eq!(d.volumes.max_import_bytes, 10 << 30);
    assert_eq!(d.hold.max_requests, 1024);
    assert_eq!(d.hold.timeout, Duration::from_secs(30));
    let s = resolve(
        "[router]\nhold_max_requests = 5\nhold_timeout_secs = 2\n[volumes]\nmax_per_app = 3\nmax_import_bytes = 1000\n",
    )
    .unwrap();
    assert_eq!(
        (s.hold.max_requests, s.hold.timeout, s.volumes.max_per_app),
        (5, Duration::from_secs(2), 3)
    );
    assert_eq!(s.volumes.max_import_bytes, 1000);
    for bad in [
        "[volumes]\nmax_per_app = 0\n",
        "[volumes]\nmax_import_bytes = 0\n",
        "[router]\nhold_timeout_secs = 99999\n",
        "[volumes]\nmax_volumes = 1\n",
    ] {
        assert!(resolve(bad).is_err(), "{bad}");
    }
}
