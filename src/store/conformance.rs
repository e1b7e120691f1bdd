#![cfg(test)]
//! The store conformance suite: what every `Store` backend must do, written
//! once against `&dyn Store`. Each check gets a fresh, empty store; the
//! backends' own tests call [`run`] with a way to make one (SQLite in
//! `store/tests.rs`, S3 on moto in `aws/store/tests.rs`). Only behaviour
//! both backends share is asserted here (error kinds, not their wording).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use super::{
    now_rfc3339, BuildRecord, BuildStatus, ConfigVersion, KeyRecord, RefUpdateJournal,
    ReleaseRecord, ReleaseStatus, SealedValue, Store, StoreError,
};

type Check = for<'a> fn(&'a dyn Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("keys", |s| Box::pin(keys(s))),
    ("apps_and_settings", |s| Box::pin(apps_and_settings(s))),
    ("domains", |s| Box::pin(domains(s))),
    ("config_versions", |s| Box::pin(config_versions(s))),
    ("builds", |s| Box::pin(builds(s))),
    ("releases_and_commit_point", |s| {
        Box::pin(releases_and_commit_point(s))
    }),
    ("events", |s| Box::pin(events(s))),
    ("delete_app", |s| Box::pin(delete_app(s))),
    ("timers", |s| Box::pin(timers(s))),
    ("volumes", |s| Box::pin(volumes(s))),
    ("resources", |s| Box::pin(resources(s))),
];

/// Runs every check, each on a store from `fresh` (given the check's name).
pub async fn run<F, Fut>(mut fresh: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = Box<dyn Store>>,
{
    for (name, check) in CHECKS {
        eprintln!("store conformance: {name}");
        let store = fresh(name).await;
        check(store.as_ref()).await;
    }
}

pub fn key(name: &str, fingerprint: &str, admin: bool, app: &str) -> KeyRecord {
    KeyRecord {
        name: name.into(),
        fingerprint: fingerprint.into(),
        public_key: format!("ssh-ed25519 AAAA{fingerprint}"),
        admin,
        apps: if admin { vec![] } else { vec![app.into()] },
        created_at: now_rfc3339(),
    }
}

pub fn sealed_config(version: i64, key: &str) -> ConfigVersion {
    ConfigVersion {
        version,
        created_at: now_rfc3339(),
        created_by: "alice".into(),
        values: vec![SealedValue {
            key: key.into(),
            nonce: vec![1; 24],
            ciphertext: vec![2; 20],
        }],
    }
}

/// The journal `refs/heads/main a b`.
fn journal() -> RefUpdateJournal {
    RefUpdateJournal {
        refname: "refs/heads/main".into(),
        old: "a".into(),
        new: "b".into(),
    }
}

/// A pending release of `build_id` owing the journal `refs/heads/main a b`.
pub(crate) fn release(app: &str, build_id: &str) -> ReleaseRecord {
    ReleaseRecord {
        app: app.into(),
        version: 0,
        build_id: build_id.into(),
        config_version: 1,
        formation: BTreeMap::from([("web".into(), 1)]),
        description: "deploy".into(),
        created_by: "alice".into(),
        created_at: now_rfc3339(),
        status: ReleaseStatus::Pending,
        ref_update: Some(journal()),
    }
}

async fn keys(s: &dyn Store) {
    s.add_key(&key("alice", "fp1", true, "app")).await.unwrap();
    assert!(matches!(
        s.add_key(&key("alice", "fp2", true, "app")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_key(&key("bob", "fp1", true, "app")).await,
        Err(StoreError::Conflict(_))
    ));
    s.add_key(&key("ci", "fp3", false, "app")).await.unwrap();
    assert_eq!(
        s.key_by_fingerprint("fp3").await.unwrap().unwrap().apps,
        vec!["app"]
    );
    assert!(s.key_by_fingerprint("fp9").await.unwrap().is_none());
    // The last admin key stays; with a second admin it may go.
    assert!(matches!(
        s.remove_key("alice").await,
        Err(StoreError::Refused(_))
    ));
    assert!(matches!(
        s.remove_key("nobody").await,
        Err(StoreError::NotFound(_))
    ));
    s.add_key(&key("root2", "fp4", true, "app")).await.unwrap();
    s.remove_key("alice").await.unwrap();
    let keys = s.list_keys().await.unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ci", "root2"], "sorted by name");
    s.remove_key("ci").await.unwrap();
    assert_eq!(s.list_keys().await.unwrap().len(), 1);
}

async fn apps_and_settings(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    assert!(matches!(
        s.create_app("app").await,
        Err(StoreError::Conflict(_))
    ));
    s.set_app_settings("app", &BTreeMap::from([("port".into(), "8080".into())]))
        .await
        .unwrap();
    assert_eq!(s.app("app").await.unwrap().settings["port"], "8080");
    assert_eq!(s.list_apps().await.unwrap().len(), 1);
    assert!(matches!(s.app("nope").await, Err(StoreError::NotFound(_))));
    assert!(s.get_app("nope").await.unwrap().is_none());
    assert!(matches!(
        s.set_app_settings("nope", &BTreeMap::new()).await,
        Err(StoreError::NotFound(_))
    ));
    s.create_app("second").await.unwrap();
    let apps = s.list_apps().await.unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["app", "second"], "sorted by name");
}

/// Host names are unique across apps.
async fn domains(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    s.create_app("other").await.unwrap();
    s.add_domain("app", "www.example.com").await.unwrap();
    assert!(matches!(
        s.add_domain("other", "www.example.com").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.remove_domain("other", "www.example.com").await,
        Err(StoreError::NotFound(_))
    ));
    s.remove_domain("app", "www.example.com").await.unwrap();
    s.add_domain("other", "www.example.com").await.unwrap();
    assert_eq!(s.domains("other").await.unwrap(), vec!["www.example.com"]);
    assert!(s.domains("app").await.unwrap().is_empty());
}

/// A taken version is a Conflict.
async fn config_versions(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    assert!(s.latest_config("app").await.unwrap().is_none());
    assert_eq!(s.next_config_version("app").await.unwrap(), 1);
    let cv = sealed_config(1, "A");
    s.put_config_version("app", &cv).await.unwrap();
    assert!(matches!(
        s.put_config_version("app", &cv).await,
        Err(StoreError::Conflict(_))
    ));
    let back = s.latest_config("app").await.unwrap().unwrap();
    assert_eq!(back.values[0].ciphertext, vec![2; 20]);
    assert_eq!(back.values[0].nonce, vec![1; 24]);
    assert_eq!(s.next_config_version("app").await.unwrap(), 2);
    s.put_config_version("app", &sealed_config(2, "B"))
        .await
        .unwrap();
    assert_eq!(s.latest_config("app").await.unwrap().unwrap().version, 2);
    assert_eq!(s.config_version("app", 1).await.unwrap().values[0].key, "A");
    assert!(matches!(
        s.config_version("app", 9).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn builds(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    let mut b = BuildRecord::running("b-1", "app", "abc", vec![], "alice");
    s.insert_build(&b).await.unwrap();
    b.id = "b-2".into();
    s.insert_build(&b).await.unwrap();
    b.status = BuildStatus::Succeeded;
    b.image_id = Some("sha256:1".into());
    s.finish_build(&b).await.unwrap();
    let all = s.builds("app", 10).await.unwrap();
    assert_eq!(all[0].id, "b-2", "newest first");
    assert_eq!(all[0].image_id.as_deref(), Some("sha256:1"));
    assert_eq!(s.builds("app", 1).await.unwrap().len(), 1);
    assert_eq!(s.fail_running_builds("restarted").await.unwrap(), 1);
    let failed = s.build("app", "b-1").await.unwrap();
    assert_eq!(failed.status, BuildStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("restarted"));
    assert!(matches!(
        s.build("app", "b-9").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.build_procfile("b-2").await.unwrap().is_none());
    let procfile = BTreeMap::from([("web".into(), "x".into())]);
    s.set_build_procfile("b-2", &procfile).await.unwrap();
    assert_eq!(s.build_procfile("b-2").await.unwrap(), Some(procfile));
}

/// Versions are allocated per app; `commit_release` is the commit point;
/// the journal (`ref_update`) stays until cleared; after a crash, pending
/// releases that never became current are failed.
async fn releases_and_commit_point(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    let r = release("app", "b-2");
    let r1 = s.create_release(r.clone()).await.unwrap();
    let r2 = s.create_release(r.clone()).await.unwrap();
    assert_eq!((r1.version, r2.version), (1, 2));
    assert_eq!(s.app_state("app").await.unwrap().current_release, None);
    s.commit_release("app", 1, "d1", &r.formation)
        .await
        .unwrap();
    let state = s.app_state("app").await.unwrap();
    assert_eq!(state.current_release, Some(1));
    assert_eq!(state.deploy_id.as_deref(), Some("d1"));
    assert_eq!(state.formation, r.formation);
    let journal = s.release("app", 1).await.unwrap().ref_update;
    assert_eq!(journal, Some(self::journal()));
    s.clear_ref_update("app", 1).await.unwrap();
    assert_eq!(s.release("app", 1).await.unwrap().ref_update, None);
    assert_eq!(s.fail_pending_releases().await.unwrap(), 1);
    let rs = s.releases("app", 10).await.unwrap();
    assert_eq!((rs[0].version, rs[0].status), (2, ReleaseStatus::Failed));
    assert_eq!(rs[0].ref_update, None, "a failed release owes nothing");
    assert_eq!(rs[1].status, ReleaseStatus::Succeeded);
    assert_eq!(s.releases("app", 1).await.unwrap().len(), 1);
    assert!(matches!(
        s.release("app", 9).await,
        Err(StoreError::NotFound(_))
    ));

    // Scale and restart: counts and rollout id change, the release does not.
    let scaled = BTreeMap::from([("web".into(), 3)]);
    s.commit_rollout("app", "d2", &scaled).await.unwrap();
    let state = s.app_state("app").await.unwrap();
    assert_eq!(state.current_release, Some(1));
    assert_eq!(state.deploy_id.as_deref(), Some("d2"));
    assert_eq!(state.formation, scaled);
    s.set_formation("app", &BTreeMap::new()).await.unwrap();
    assert!(s.app_state("app").await.unwrap().formation.is_empty());
    s.set_release_status("app", 2, ReleaseStatus::Succeeded)
        .await
        .unwrap();
    assert_eq!(
        s.release("app", 2).await.unwrap().status,
        ReleaseStatus::Succeeded
    );

    s.create_app("other").await.unwrap();
    let o1 = s.create_release(release("other", "b-1")).await.unwrap();
    assert_eq!(o1.version, 1, "versions are per app");
    assert!(matches!(
        s.app_state("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

/// Oldest first, newest `limit`; a deploy key's filter drops other apps'
/// events and rack-wide ones.
async fn events(s: &dyn Store) {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(3));
    s.add_event("alice", Some("app"), "apps:create app", "ok")
        .await
        .unwrap();
    pause().await;
    s.add_event("alice", None, "keys:add ci", "ok")
        .await
        .unwrap();
    pause().await;
    s.add_event("ci", Some("other"), "push other", "ok")
        .await
        .unwrap();
    let ev = s.events(None, None, 10).await.unwrap();
    let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["apps:create app", "keys:add ci", "push other"]
    );
    assert!(ev[0].id < ev[1].id && ev[1].id < ev[2].id);
    assert_eq!(ev[0].actor, "alice");
    assert_eq!(ev[0].app.as_deref(), Some("app"));
    let newest = s.events(None, None, 2).await.unwrap();
    assert_eq!(newest[0].action, "keys:add ci");
    assert_eq!(newest.len(), 2);

    let deploy_key = ["app".to_string()];
    let mine = s.events(None, Some(&deploy_key), 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].action, "apps:create app");
    let of_other = s.events(Some("other"), None, 10).await.unwrap();
    assert_eq!(of_other.len(), 1);
    assert_eq!(of_other[0].action, "push other");
    assert!(s
        .events(Some("other"), Some(&deploy_key), 10)
        .await
        .unwrap()
        .is_empty());
}

/// `delete_app` removes the app and frees its domains; events stay.
async fn delete_app(s: &dyn Store) {
    s.create_app("app").await.unwrap();
    s.create_app("other").await.unwrap();
    s.add_domain("other", "www.example.com").await.unwrap();
    s.put_config_version("other", &sealed_config(1, "A"))
        .await
        .unwrap();
    s.add_event("alice", Some("other"), "apps:create other", "ok")
        .await
        .unwrap();
    s.delete_app("other").await.unwrap();
    assert!(s.get_app("other").await.unwrap().is_none());
    s.add_domain("app", "www.example.com").await.unwrap();
    assert_eq!(s.events(None, None, 10).await.unwrap().len(), 1);
    assert!(matches!(
        s.delete_app("other").await,
        Err(StoreError::NotFound(_))
    ));
}

/// A build's timers round-trip; timer states are per app and name, replaced
/// whole, and forgotten with `delete_timer_states`.
async fn timers(s: &dyn Store) {
    use crate::timers::{Policy, Timer, TimerState};
    s.create_app("app").await.unwrap();
    s.insert_build(&BuildRecord::running(
        "b1",
        "app",
        "c0ffee",
        vec![],
        "alice",
    ))
    .await
    .unwrap();
    assert!(s.build_timers("b1").await.unwrap().is_empty());
    let timers = vec![Timer {
        name: "nightly".into(),
        command: "bin/cleanup".into(),
        schedule: "0 3 * * *".into(),
        policy: Policy::Replace,
        max_runtime_secs: Some(60),
    }];
    s.set_build_timers("b1", &timers).await.unwrap();
    assert_eq!(s.build_timers("b1").await.unwrap(), timers);

    assert!(s.timer_states("app").await.unwrap().is_empty());
    let mut st = TimerState {
        last_tick: Some(100),
        ..Default::default()
    };
    s.put_timer_state("app", "nightly", &st).await.unwrap();
    s.put_timer_state("app", "other", &TimerState::default())
        .await
        .unwrap();
    st.suspended = true;
    st.last_status = Some("exit 0".into());
    s.put_timer_state("app", "nightly", &st).await.unwrap();
    let all = s.timer_states("app").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["nightly"], st);
    assert!(s.timer_states("else").await.unwrap().is_empty());
    s.delete_timer_states("app").await.unwrap();
    assert!(s.timer_states("app").await.unwrap().is_empty());
}

/// Volumes are per app and name: a second of one name is a Conflict,
/// removing a missing one NotFound, and they go with the app.
async fn volumes(s: &dyn Store) {
    use crate::volumes::Volume;
    s.create_app("app").await.unwrap();
    s.create_app("other").await.unwrap();
    assert!(s.volumes("app").await.unwrap().is_empty());
    let v = |name: &str, path: &str| Volume {
        name: name.into(),
        path: path.into(),
        types: vec!["web".into()],
        shared: false,
        created_at: now_rfc3339(),
    };
    let (data, uploads) = (v("data", "/data"), v("uploads", "/srv/uploads"));
    s.add_volume("app", &uploads).await.unwrap();
    s.add_volume("app", &data).await.unwrap();
    assert!(matches!(
        s.add_volume("app", &v("data", "/elsewhere")).await,
        Err(StoreError::Conflict(_))
    ));
    // Another app may use the same name: names are per app.
    s.add_volume("other", &data).await.unwrap();
    assert_eq!(s.volumes("app").await.unwrap(), vec![data.clone(), uploads]);
    s.remove_volume("app", "uploads").await.unwrap();
    assert!(matches!(
        s.remove_volume("app", "uploads").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.volumes("app").await.unwrap(), vec![data.clone()]);
    s.delete_app("app").await.unwrap();
    assert!(s.volumes("app").await.unwrap().is_empty());
    assert_eq!(s.volumes("other").await.unwrap(), vec![data]);
}

fn resource_record(name: &str) -> super::ResourceRecord {
    super::ResourceRecord {
        name: name.into(),
        kind: "postgres".into(),
        version: "16".into(),
        image: "postgres:16".into(),
        created_at: now_rfc3339(),
        created_by: "admin".into(),
        password_nonce: "00".into(),
        password_ciphertext: "ff".into(),
        links: BTreeMap::new(),
    }
}

async fn resources(s: &dyn Store) {
    assert!(s.resources().await.unwrap().is_empty());
    assert!(matches!(
        s.resource("db").await,
        Err(StoreError::NotFound(_))
    ));
    s.create_resource(&resource_record("db")).await.unwrap();
    s.create_resource(&resource_record("cache")).await.unwrap();
    assert!(matches!(
        s.create_resource(&resource_record("db")).await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = s
        .resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["cache", "db"]);
    let got = s.resource("db").await.unwrap();
    assert_eq!(
        (got.kind.as_str(), got.password_ciphertext.as_str()),
        ("postgres", "ff")
    );
    let r = s
        .set_resource_link("db", "web", Some("DATABASE"))
        .await
        .unwrap();
    assert_eq!(r.links.get("web").map(String::as_str), Some("DATABASE"));
    assert!(matches!(
        s.delete_resource("db").await,
        Err(StoreError::Refused(_))
    ));
    assert!(
        s.resource("db").await.is_ok(),
        "a refused delete keeps the record"
    );
    let r = s.set_resource_link("db", "web", None).await.unwrap();
    assert!(r.links.is_empty());
    assert!(matches!(
        s.set_resource_link("nope", "web", Some("X")).await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_resource("db").await.unwrap();
    assert!(matches!(
        s.resource("db").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_resource("db").await,
        Err(StoreError::NotFound(_))
    ));
}
