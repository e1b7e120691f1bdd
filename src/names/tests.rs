use super::*;

#[test]
fn app_names() {
    for good in ["a", "myapp", "a-1", &"a".repeat(30)] {
        assert!(validate_app(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "A",
        "../x",
        "a/b",
        "a;id",
        "$(id)",
        "-x",
        "1a",
        &"a".repeat(31),
        "a b",
    ] {
        assert!(validate_app(bad).is_err(), "{bad}");
    }
}

#[test]
fn config_keys() {
    for good in ["A", "_x", "DATABASE_URL", "a1"] {
        assert!(validate_config_key(good).is_ok(), "{good}");
    }
    for bad in ["", "1A", "A-B", "A B", "A=B", "é"] {
        assert!(validate_config_key(bad).is_err(), "{bad}");
    }
}

#[test]
fn control_characters_are_escaped_for_terminals() {
    assert_eq!(escape_controls("plain\ttext é"), "plain\ttext é");
    assert_eq!(
        escape_controls("a\u{1b}]0;t\u{7}\rb\nc\u{9b}"),
        "a\\u{1b}]0;t\\u{7}\\rb\\nc\\u{9b}"
    );
    assert_eq!(
        &*escape_control_bytes(b"line\x1b[2K\r\n\tnext\x7f\n"),
        b"line\\x1b[2K\\x0d\n\tnext\\x7f\n"
    );
}
