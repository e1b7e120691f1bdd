use super::*;

fn rec(source: CertSource, status: CertStatus) -> CertRecord {
    CertRecord {
        app: "a".into(),
        host: "a.example.com".into(),
        source,
        status,
        chain_pem: String::new(),
        key_sealed: String::new(),
        issuer: String::new(),
        not_before: rfc3339(1000),
        not_after: rfc3339(4000),
        last_error: None,
        failures: 0,
        retry_at: None,
        updated_at: String::new(),
    }
}

#[test]
fn renewal_is_due_at_the_fraction_of_the_lifetime() {
    let issued = rec(CertSource::Acme, CertStatus::Issued);
    assert_eq!(due_in(Some(&issued), 2.0 / 3.0, 2000), Some(1000));
    assert_eq!(due_in(Some(&issued), 2.0 / 3.0, 3500), Some(-500));
    assert_eq!(due_in(None, 2.0 / 3.0, 0), Some(0));
    let added = rec(CertSource::Added, CertStatus::Issued);
    assert_eq!(due_in(Some(&added), 2.0 / 3.0, 3999), None);
    let mut failed = rec(CertSource::Acme, CertStatus::Failed);
    failed.retry_at = Some(rfc3339(1500));
    assert_eq!(due_in(Some(&failed), 2.0 / 3.0, 1200), Some(300));
}

#[test]
fn backoff_doubles_up_to_a_day() {
    let first = Duration::from_secs(60);
    assert_eq!(backoff(first, 0), first);
    assert_eq!(backoff(first, 3), Duration::from_secs(480));
    assert_eq!(backoff(first, 40), MAX_BACKOFF);
}

#[test]
fn only_real_domains_get_app_certificates() {
    for d in ["example.com", "apps.example.com."] {
        assert!(is_real_domain(d), "{d}");
    }
    for d in [
        "localhost",
        "rack.localhost",
        "127.0.0.1",
        "::1",
        "intranet",
    ] {
        assert!(!is_real_domain(d), "{d}");
    }
}

#[test]
fn policy_reads_the_app_settings() {
    let mut s = AppSettings::new();
    assert_eq!(policy(&s), HttpsPolicy::default());
    s.insert("https.redirect".into(), "true".into());
    s.insert("https.hsts".into(), "31536000".into());
    assert_eq!(
        policy(&s),
        HttpsPolicy {
            redirect: true,
            hsts: Some(31536000)
        }
    );
}
