#[test]
fn point_and_optional_version() {
    assert!(super::matches("after_switch", "after_switch", 3));
    assert!(super::matches("after_switch:v3", "after_switch", 3));
    assert!(super::matches("after_switch:3", "after_switch", 3));
    assert!(!super::matches("after_switch:v2", "after_switch", 3));
    assert!(!super::matches("before_ready", "after_switch", 3));
}
