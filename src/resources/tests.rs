use super::schedule::last_due;
use super::*;

#[test]
fn dumps_are_told_apart_by_their_first_bytes() {
    assert_eq!(Kind::of_dump(b"PGDMP\x01\x0e"), Some(Kind::Postgres));
    assert_eq!(Kind::of_dump(b"REDIS0011"), Some(Kind::Redis));
    assert_eq!(Kind::of_dump(b"PGDM"), None);
    assert_eq!(Kind::of_dump(b"hello"), None);
}

#[test]
fn images_take_the_version_as_their_tag() {
    let mut s = ResourceSettings::default();
    assert_eq!(
        s.image_for(Kind::Postgres, None),
        ("postgres:16".into(), "16".into())
    );
    assert_eq!(
        s.image_for(Kind::Redis, Some("7.2")),
        ("redis:7.2".into(), "7.2".into())
    );
    s.images
        .insert(Kind::Postgres, "registry:5000/my/pg:15".into());
    assert_eq!(
        s.image_for(Kind::Postgres, None),
        ("registry:5000/my/pg:15".into(), "15".into())
    );
    assert_eq!(
        s.image_for(Kind::Postgres, Some("16")),
        ("registry:5000/my/pg:16".into(), "16".into())
    );
    s.images.insert(Kind::Redis, "registry:5000/redis".into());
    assert_eq!(
        s.image_for(Kind::Redis, None),
        ("registry:5000/redis:7".into(), "7".into())
    );
}

#[test]
fn settings_are_checked() {
    let f = |t: &str| -> anyhow::Result<ResourceSettings> {
        let file: crate::config::ResourcesFile = toml::from_str(t)?;
        ResourceSettings::from_file(&file)
    };
    assert_eq!(
        f("backup_schedule = \"03:30\"").unwrap().backup_schedule,
        Some((3, 30))
    );
    for bad in [
        "backup_schedule = \"3:30\"",
        "backup_schedule = \"24:00\"",
        "backup_keep = 0",
        "images.mysql = \"mysql\"",
        "images.postgres = \"\"",
    ] {
        assert!(f(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn the_schedule_fires_the_newest_time_at_or_before_now() {
    let t = |s: &str| OffsetDateTimeExt::parse(s);
    assert_eq!(
        last_due(t("2026-12-06T17:00:00Z"), (3, 0)),
        t("2026-12-06T03:00:00Z")
    );
    assert_eq!(
        last_due(t("2026-12-06T02:59:59Z"), (3, 0)),
        t("2026-12-05T03:00:00Z")
    );
    assert_eq!(
        last_due(t("2026-12-06T03:00:00Z"), (3, 0)),
        t("2026-12-06T03:00:00Z")
    );
}

struct OffsetDateTimeExt;
impl OffsetDateTimeExt {
    fn parse(s: &str) -> time::OffsetDateTime {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }
}

#[test]
fn urls_carry_the_password_and_the_database() {
    let r = Resource {
        name: "my-db".into(),
        kind: Kind::Postgres,
        version: "16".into(),
        image: "postgres:16".into(),
        password: Password::from_opened("pw".into()),
        links: vec![],
    };
    let at = Endpoint {
        host: "my-db.resource".into(),
        port: 5432,
    };
    assert_eq!(r.url(&at), "postgres://rack:pw@my-db.resource:5432/my_db");
    let r = Resource {
        kind: Kind::Redis,
        ..r
    };
    let at = Endpoint {
        host: "c.resource".into(),
        port: 6379,
    };
    assert_eq!(r.url(&at), "redis://default:pw@c.resource:6379");
    assert_eq!(Password::generate().expose().len(), 32);
}
