use super::*;

#[test]
fn ansi_and_control() {
    let cases = [
        ("\x1b[31mred\x1b[0m plain", "red plain"),
        ("\x1b[1;32;40mbold\x1b[m", "bold"),
        ("\x1b]0;title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("a\tb\x08c", "a\tbc"),
        ("\x1b[2K\x1b[1Gclear", "clear"),
    ];
    for (raw, want) in cases {
        assert_eq!(strip_ansi(raw), want, "{raw:?}");
    }
}

#[test]
fn partial_chunks_and_carriage_returns() {
    let mut s = LineSplitter::default();
    assert!(s.push("Step 1/2 : FR").is_empty());
    assert_eq!(
        s.push("OM busybox\n ---> abc\nhal"),
        vec!["Step 1/2 : FROM busybox", " ---> abc"]
    );
    assert_eq!(s.push("f\r\n"), vec!["half"]);
    assert_eq!(s.push("10%\r50%\r100%\n"), vec!["100%"]);
    assert_eq!(s.push("\x1b[3"), Vec::<String>::new());
    assert_eq!(s.push("3myellow\x1b[0m\n"), vec!["yellow"]);
    assert_eq!(s.push("tail"), Vec::<String>::new());
    assert_eq!(s.finish().as_deref(), Some("tail"));
    assert_eq!(s.finish(), None);
}
