use super::*;

#[test]
fn bound_to_app_key_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let k = MasterKey::load_or_create(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (n, ct) = k.seal("a", "K", 1, "v a=l\"ue\n");
    assert_eq!(k.open("a", "K", 1, &n, &ct).unwrap(), "v a=l\"ue\n");
    assert!(k.open("b", "K", 1, &n, &ct).is_err());
    assert!(k.open("a", "J", 1, &n, &ct).is_err());
    assert!(k.open("a", "K", 2, &n, &ct).is_err());
    let mut flipped = ct.clone();
    flipped[0] ^= 1;
    assert!(k.open("a", "K", 1, &n, &flipped).is_err());
    // Reloading gives the same key.
    let k2 = MasterKey::load_or_create(&path).unwrap();
    assert_eq!(k2.open("a", "K", 1, &n, &ct).unwrap(), "v a=l\"ue\n");
}
