use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

const NOW: i64 = 1_800_000_000;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
    valid: (i64, i64),
) -> (String, KeyPair) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(valid.0).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(valid.1).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key)
}

const VALID: (i64, i64) = (NOW - 3600, NOW + 90 * 86400);

#[test]
fn a_good_bundle_is_accepted_with_its_issuer_and_expiry() {
    let root = ca("Test Root");
    let (cert, key) = leaf(&["a.example.com"], &root, VALID);
    let pem = format!("{cert}{}{}", root.pem(), key.serialize_pem());
    let b = check(&pem, "a.example.com", NOW).unwrap();
    assert!(b.issuer.contains("Test Root"), "{}", b.issuer);
    assert_eq!(b.not_after, VALID.1);
    // The leaf alone is fine too: its issuer is a CA the bundle omits.
    let pem = format!("{cert}{}", key.serialize_pem());
    check(&pem, "A.Example.com", NOW).unwrap();
    // A wildcard covers one label.
    let (cert, key) = leaf(&["*.example.com"], &root, VALID);
    let pem = format!("{cert}{}", key.serialize_pem());
    check(&pem, "b.example.com", NOW).unwrap();
    let err = check(&pem, "x.b.example.com", NOW).err().unwrap();
    assert!(err.to_string().contains("does not cover"), "{err}");
}

#[test]
fn refusals_each_say_why() {
    let root = ca("Test Root");
    let other = ca("Other Root");
    let (cert, key) = leaf(&["a.example.com"], &root, VALID);
    let stranger = KeyPair::generate().unwrap();
    let cases = [
        (
            format!("{cert}{}", stranger.serialize_pem()),
            "a.example.com",
            "does not match",
        ),
        (
            format!("{cert}{}{}", other.pem(), key.serialize_pem()),
            "a.example.com",
            "broken chain",
        ),
        (
            format!("{cert}{}", key.serialize_pem()),
            "b.example.com",
            "does not cover b.example.com",
        ),
        (cert.clone(), "a.example.com", "no private key"),
        (key.serialize_pem(), "a.example.com", "no certificate"),
        ("garbage".into(), "a.example.com", "no certificate"),
    ];
    for (pem, host, want) in cases {
        let err = check(&pem, host, NOW).err().expect(want).to_string();
        assert!(err.contains(want), "{err:?} should say {want:?}");
    }
    let (old, key) = leaf(&["a.example.com"], &root, (NOW - 100 * 86400, NOW - 86400));
    let err = check(
        &format!("{old}{}", key.serialize_pem()),
        "a.example.com",
        NOW,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("expired"), "{err}");
    let (later, key) = leaf(&["a.example.com"], &root, (NOW + 86400, NOW + 9 * 86400));
    let err = check(
        &format!("{later}{}", key.serialize_pem()),
        "a.example.com",
        NOW,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("not valid before"), "{err}");
}

#[test]
fn a_loaded_bundle_round_trips_its_pem() {
    let root = ca("Test Root");
    let (cert, key) = leaf(&["a.example.com"], &root, VALID);
    let b = check(
        &format!("{cert}{}", key.serialize_pem()),
        "a.example.com",
        NOW,
    )
    .unwrap();
    let again = load(&b.chain_pem, &b.key_pem).unwrap();
    assert_eq!(again.not_after, b.not_after);
    assert_eq!(again.issuer, b.issuer);
}
