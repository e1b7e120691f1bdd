use super::*;

#[test]
fn parses_and_matches() {
    let c = Cidrs::parse("10.0.0.0/8, 192.168.1.7 ,::1/128").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(c.contains("192.168.1.7".parse().unwrap()));
    assert!(!c.contains("192.168.1.8".parse().unwrap()));
    assert!(c.contains("::1".parse().unwrap()));
    assert!(
        c.contains("::ffff:10.9.9.9".parse().unwrap()),
        "IPv4-mapped peers match IPv4 blocks"
    );
    assert!(Cidrs::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    for bad in ["", "10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
        assert!(Cidrs::parse(bad).is_err(), "{bad}");
    }
}
