use super::*;

#[test]
fn challenges_are_bounded_and_removed() {
    let tls = Tls::default();
    assert!(tls.add_challenge("t0", "t0.key"));
    assert_eq!(tls.challenge("t0").as_deref(), Some("t0.key"));
    for i in 1..MAX_CHALLENGES {
        assert!(tls.add_challenge(&format!("t{i}"), "k"));
    }
    assert!(!tls.add_challenge("one-too-many", "k"));
    // Replacing a known token is not growth.
    assert!(tls.add_challenge("t0", "again"));
    tls.remove_challenge("t0");
    assert!(tls.challenge("t0").is_none());
    assert!(tls.add_challenge("one-more", "k"));
}

#[test]
fn policies_default_to_nothing_and_replace_whole() {
    let tls = Tls::default();
    assert_eq!(tls.policy("app"), HttpsPolicy::default());
    let p = HttpsPolicy {
        redirect: true,
        hsts: Some(60),
    };
    tls.set_policy("app", p);
    assert_eq!(tls.policy("app"), p);
    assert_eq!(tls.policy("other"), HttpsPolicy::default());
    tls.set_policy("app", HttpsPolicy::default());
    assert_eq!(tls.policy("app"), HttpsPolicy::default());
}
