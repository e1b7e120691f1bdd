use super::*;

#[test]
fn bridge_names_fit_the_kernel_limit_and_share_the_namespace_prefix() {
    let a = bridge_name("rack", "rack-web");
    let b = bridge_name("rack", "rack-build-b-0123456789");
    assert_eq!(a.len(), 15);
    assert_eq!(b.len(), 15);
    assert!(a.starts_with(&iface_prefix("rack")));
    assert!(b.starts_with(&iface_prefix("rack")));
    assert_ne!(a, b);
    assert_ne!(iface_prefix("rack"), iface_prefix("rack2"));
    assert!(chain("abcdefghijklmnopqrst").len() <= 28);
}
