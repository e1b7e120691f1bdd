use super::*;

#[test]
fn declared_args_table() {
    let df = "\
# comment
ARG BASE_IMAGE=busybox
FROM ${BASE_IMAGE}
ARG VERSION
arg lower=1
ARG A=1 B=\"two words\"
RUN echo $VERSION \\
  # a comment inside a continuation
  && echo ARG NOT_AN_ARG
ARG VERSION=2
";
    assert_eq!(
        declared_args(df),
        vec!["BASE_IMAGE", "VERSION", "lower", "A", "B"]
    );
    assert_eq!(declared_args(""), Vec::<String>::new());
    assert_eq!(
        global_args("ARG BASE_IMAGE=node:20\nARG RUN_IMAGE\nFROM x\nARG LATE=1\n"),
        vec![
            ("BASE_IMAGE".to_string(), Some("node:20".to_string())),
            ("RUN_IMAGE".to_string(), None)
        ]
    );
}

#[test]
fn continuation_and_escape_directive() {
    let ins = instructions("FROM a\nRUN one \\\n  two\n\nCMD x\n");
    assert_eq!(ins.len(), 3);
    assert_eq!(
        ins[1],
        Instruction {
            keyword: "RUN".into(),
            args: "one two".into(),
            line: 2
        }
    );
    assert_eq!(ins[2].line, 5);
    let ins = instructions("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n");
    assert_eq!(ins[1].args, "dir c:\\ /w");
}

#[test]
fn classic_builder_check() {
    let ok = [
        "FROM busybox\nRUN echo --mount is fine as an argument\n",
        "FROM busybox\nCOPY --from=build /a /b\nCOPY --chown=1:1 a b\n",
        "# escape=\\\nFROM busybox\n",
        "FROM busybox\n# syntax=docker/dockerfile:1 is a plain comment here\n",
    ];
    for df in ok {
        assert_eq!(check_classic(df), Ok(()), "{df}");
    }
    let bad = [
        ("# syntax=docker/dockerfile:1\nFROM busybox\n", "syntax"),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/root/.cache pip install x\n",
            "--mount",
        ),
        ("FROM busybox\nRUN --network=none true\n", "--network"),
        ("FROM busybox\nCOPY --link . .\n", "--link"),
        ("FROM busybox\nCOPY --chmod=755 a b\n", "--chmod"),
        ("FROM busybox\nRUN <<EOF\necho hi\nEOF\n", "heredoc"),
    ];
    for (df, what) in bad {
        let e = check_classic(df).expect_err(df);
        assert!(e.contains(what), "{e}");
        assert!(e.contains("classic builder"), "{e}");
    }
}
