//! Just enough Dockerfile parsing to decide things before calling Docker:
//! which build args the Dockerfile declares (only those are passed: the
//! classic builder writes build args into the image history), and whether it
//! uses BuildKit-only syntax the classic builder would reject.

/// One instruction with its continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-cased keyword (`RUN`, `ARG`, ...).
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
    /// 1-based line where the instruction starts.
    pub line: usize,
}

/// Parser directives (`# syntax=...`, `# escape=...`) at the top of the file.
fn directives(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            break;
        }
        out.push((k.to_ascii_lowercase(), v.trim().to_string(), i + 1));
    }
    out
}

/// Splits a Dockerfile into instructions: comments and blank lines dropped,
/// lines ending in the escape character (`\`, or a backtick after
/// `# escape=``) joined with the next.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let escape = directives(text)
        .into_iter()
        .find(|(k, _, _)| k == "escape")
        .and_then(|(_, v, _)| v.chars().next())
        .unwrap_or('\\');
    let mut out = Vec::new();
    let mut cur: Option<(String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_some()) {
            // Comments may sit between continuation lines.
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let (mut acc, start) = cur.take().unwrap_or((String::new(), i + 1));
        if !acc.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body.trim());
        if continues {
            cur = Some((acc, start));
        } else {
            out.push(split_instruction(&acc, start));
        }
    }
    if let Some((acc, start)) = cur {
        out.push(split_instruction(&acc, start));
    }
    out
}

fn split_instruction(s: &str, line: usize) -> Instruction {
    let s = s.trim();
    let (kw, args) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
    Instruction {
        keyword: kw.to_ascii_uppercase(),
        args: args.trim().to_string(),
        line,
    }
}

fn arg_names(args: &str) -> impl Iterator<Item = String> + '_ {
    args.split_whitespace().filter_map(|w| {
        let name = w.split('=').next().unwrap_or("");
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| name.to_string())
    })
}

/// The names the Dockerfile declares with `ARG` (anywhere, including before
/// the first `FROM`), in order, without duplicates.
pub fn declared_args(dockerfile: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ins in instructions(dockerfile) {
        if ins.keyword == "ARG" {
            for name in arg_names(&ins.args) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// `ARG NAME=default` lines before the first `FROM`, with their defaults.
pub fn global_args(dockerfile: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for ins in instructions(dockerfile) {
        match ins.keyword.as_str() {
            "FROM" => break,
            "ARG" => {
                for w in ins.args.split_whitespace() {
                    let (name, default) = match w.split_once('=') {
                        Some((n, d)) => (n, Some(d.trim_matches('"').to_string())),
                        None => (w, None),
                    };
                    out.push((name.to_string(), default));
                }
            }
            _ => {}
        }
    }
    out
}

/// Rejects what only BuildKit understands, naming the line, so the user
/// hears it before Docker gets the context. Ok(()) when the classic builder
/// can take the file.
pub fn check_classic(dockerfile: &str) -> Result<(), String> {
    const HINT: &str = "rack builds with Docker's classic builder (no BuildKit)";
    for (k, v, line) in directives(dockerfile) {
        if k == "syntax" {
            return Err(format!(
                "Dockerfile line {line}: `# syntax={v}` needs BuildKit; {HINT}: remove the syntax line"
            ));
        }
    }
    const RUN_FLAGS: &[&str] = &["--mount", "--network", "--security"];
    const COPY_FLAGS: &[&str] = &[
        "--link",
        "--chmod",
        "--parents",
        "--exclude",
        "--checksum",
        "--keep-git-dir",
    ];
    for ins in instructions(dockerfile) {
        let flags: &[&str] = match ins.keyword.as_str() {
            "RUN" => RUN_FLAGS,
            "COPY" | "ADD" => COPY_FLAGS,
            _ => &[],
        };
        for word in ins
            .args
            .split_whitespace()
            .take_while(|w| w.starts_with("--"))
        {
            let flag = word.split('=').next().unwrap_or(word);
            if flags.contains(&flag) {
                return Err(format!(
                    "Dockerfile line {}: `{} {flag}` needs BuildKit; {HINT}",
                    ins.line, ins.keyword
                ));
            }
        }
        if matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD") {
            let first_plain = ins.args.split_whitespace().find(|w| !w.starts_with("--"));
            if first_plain.is_some_and(|w| w.starts_with("<<")) {
                return Err(format!(
                    "Dockerfile line {}: heredocs (`{} <<`) need BuildKit; {HINT}",
                    ins.line, ins.keyword
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
