//! `.dockerignore` with Docker's semantics (moby's `patternmatcher` as used by
//! the docker CLI when it sends a build context).
//!
//! The daemon never applies `.dockerignore`: the client does, so rack, which
//! plays the client, must. Rules reproduced here:
//! - one pattern per line; `#` lines are comments; surrounding blanks trimmed;
//! - paths are cleaned (`a//b/../c` → `a/c`), a leading `/` is dropped;
//! - `*` matches any run of non-`/` characters, `?` one non-`/` character,
//!   `[...]` a character class, `\` escapes the next character;
//! - `**` matches any number of path segments (including none);
//! - `!pattern` re-includes what an earlier pattern excluded; the last
//!   matching pattern wins;
//! - a pattern that matches a directory matches everything below it, and an
//!   excluded directory is not even walked unless some `!` pattern names a
//!   path under it.

use std::fmt;

/// A syntax error in `.dockerignore` (the docker CLI refuses these too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            ".dockerignore: {} in pattern {:?}",
            self.reason, self.pattern
        )
    }
}

impl std::error::Error for PatternError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: one character except `/`.
    One,
    /// `**` followed by more pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end after other tokens: `.*`.
    AnyAll,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    match_type: MatchType,
    toks: Vec<Tok>,
}

impl Pattern {
    fn compile(cleaned: String, exclusion: bool, original: &str) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError {
            pattern: original.to_string(),
            reason,
        };
        let chars: Vec<char> = cleaned.chars().collect();
        let mut toks = Vec::new();
        let mut mt = MatchType::Exact;
        let mut i = 0;
        let mut first = true;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    // `**/` is treated as `**`.
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if mt == MatchType::Exact {
                            mt = MatchType::Prefix;
                        } else {
                            mt = MatchType::Regexp;
                        }
                        toks.push(Tok::AnyAll);
                    } else {
                        toks.push(Tok::AnyDirs);
                        mt = MatchType::Regexp;
                    }
                    if first {
                        mt = MatchType::Suffix;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    mt = MatchType::Regexp;
                }
                '?' => {
                    toks.push(Tok::One);
                    mt = MatchType::Regexp;
                }
                '\\' => {
                    if i < chars.len() {
                        toks.push(Tok::Lit(chars[i]));
                        mt = MatchType::Regexp;
                        i += 1;
                    } else {
                        return Err(err("trailing backslash"));
                    }
                }
                '[' => {
                    let mut negated = false;
                    if matches!(chars.get(i), Some('^') | Some('!')) {
                        negated = true;
                        i += 1;
                    }
                    let mut items = Vec::new();
                    let mut closed = false;
                    let mut first_in_class = true;
                    while i < chars.len() {
                        let mut c = chars[i];
                        i += 1;
                        if c == ']' && !first_in_class {
                            closed = true;
                            break;
                        }
                        first_in_class = false;
                        if c == '\\' {
                            c = *chars
                                .get(i)
                                .ok_or_else(|| err("unterminated character class"))?;
                            i += 1;
                        }
                        let mut hi = c;
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']')
                        {
                            i += 1;
                            hi = chars[i];
                            i += 1;
                            if hi == '\\' {
                                hi = *chars
                                    .get(i)
                                    .ok_or_else(|| err("unterminated character class"))?;
                                i += 1;
                            }
                            if hi < c {
                                return Err(err("bad character range"));
                            }
                        }
                        items.push((c, hi));
                    }
                    if !closed {
                        return Err(err("unterminated character class"));
                    }
                    toks.push(Tok::Class { negated, items });
                    mt = MatchType::Regexp;
                }
                c => toks.push(Tok::Lit(c)),
            }
            first = false;
        }
        Ok(Pattern {
            cleaned,
            exclusion,
            match_type: mt,
            toks,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self.match_type {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                if path.ends_with(suffix) {
                    return true;
                }
                // `**/foo` matches `foo`.
                suffix.starts_with('/') && path == &suffix[1..]
            }
            MatchType::Regexp => {
                let p: Vec<char> = path.chars().collect();
                match_toks(&self.toks, &p)
            }
        }
    }
}

/// Matches the compiled tokens against the whole of `s` (anchored at both
/// ends, the equivalent of the regexp moby builds from the pattern) by
/// simulating the pattern's automaton: every position of the pattern that
/// the text so far can reach is tracked at once, so the time is linear in
/// the text times the pattern's length whatever the wildcards (a
/// backtracking matcher is exponential in the number of `*`: `*a*a*a*b`
/// against a long name of `a`s).
fn match_toks(toks: &[Tok], s: &[char]) -> bool {
    let n = toks.len();
    // `at[k]`: before token k; `inside[k]`: within the `.*/` of a `**/`
    // token k, which may end at any `/`.
    let mut at = vec![false; n + 1];
    let mut inside = vec![false; n + 1];
    at[0] = true;
    follow_empty(toks, &mut at);
    let mut next_at = vec![false; n + 1];
    let mut next_inside = vec![false; n + 1];
    for &c in s {
        next_at.iter_mut().for_each(|b| *b = false);
        next_inside.iter_mut().for_each(|b| *b = false);
        let mut alive = false;
        for k in 0..n {
            if inside[k] {
                next_inside[k] = true;
                next_at[k + 1] |= c == '/';
                alive = true;
            }
            if !at[k] {
                continue;
            }
            alive = true;
            match &toks[k] {
                Tok::Lit(x) => next_at[k + 1] |= c == *x,
                Tok::One => next_at[k + 1] |= c != '/',
                Tok::Class { negated, items } => {
                    next_at[k + 1] |= items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }
                Tok::Star => next_at[k] |= c != '/',
                Tok::AnyAll => next_at[k] = true,
                Tok::AnyDirs => {
                    next_inside[k] = true;
                    next_at[k + 1] |= c == '/';
                }
            }
        }
        if !alive {
            return false;
        }
        follow_empty(toks, &mut next_at);
        std::mem::swap(&mut at, &mut next_at);
        std::mem::swap(&mut inside, &mut next_inside);
    }
    at[n]
}

/// Adds the positions reachable without reading a character: past `*`,
/// `**` and `**/`, which may match nothing.
fn follow_empty(toks: &[Tok], at: &mut [bool]) {
    for k in 0..toks.len() {
        if at[k] && matches!(toks[k], Tok::Star | Tok::AnyAll | Tok::AnyDirs) {
            at[k + 1] = true;
        }
    }
}

/// `filepath.Clean` for slash-separated relative or absolute paths.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Which patterns match a directory or one of its parents (per pattern, in
/// order): what the directory's entries inherit.
#[derive(Debug, Clone, Default)]
pub struct Ancestors(Vec<bool>);

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

impl DockerIgnore {
    /// Parses the contents of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<DockerIgnore, PatternError> {
        let mut lines = Vec::new();
        for line in text.lines() {
            // Comments are whole lines starting with `#` (before trimming, as
            // the docker CLI does).
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            lines.push(line.to_string());
        }
        Self::from_patterns(&lines)
    }

    /// Compiles a list of patterns (each may start with `!`).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<DockerIgnore, PatternError> {
        let mut out = DockerIgnore::default();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let (exclusion, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw),
            };
            if exclusion && body.is_empty() {
                return Err(PatternError {
                    pattern: raw.to_string(),
                    reason: "illegal exclusion pattern",
                });
            }
            let mut cleaned = clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            if exclusion {
                out.has_exclusions = true;
            }
            out.patterns
                .push(Pattern::compile(cleaned, exclusion, raw)?);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Adds `!path` (used to keep the Dockerfile and `.dockerignore` in the
    /// context even when a pattern excludes them, as the docker CLI does).
    pub fn keep(&mut self, path: &str) {
        if self.is_excluded(path) {
            if let Ok(p) = Pattern::compile(clean(path), true, path) {
                self.patterns.push(p);
                self.has_exclusions = true;
            }
        }
    }

    /// Whether `path` (relative, `/`-separated, no leading `/`) is left out of
    /// the context: the last pattern matching the path or one of its parent
    /// directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let mut anc = self.root();
        if let Some(end) = path.rfind('/') {
            for (i, b) in path[..end].bytes().enumerate() {
                if b == b'/' {
                    anc = self.descend(&anc, &path[..i]);
                }
            }
            anc = self.descend(&anc, &path[..end]);
        }
        self.is_excluded_in(path, &anc)
    }

    /// What the root's entries inherit: nothing.
    pub fn root(&self) -> Ancestors {
        Ancestors(vec![false; self.patterns.len()])
    }

    /// What the entries of directory `dir` inherit, from what `dir`'s own
    /// entry inherited (`parent`): a walk computes it once per directory,
    /// so each entry is then matched against its own path only.
    pub fn descend(&self, parent: &Ancestors, dir: &str) -> Ancestors {
        Ancestors(
            self.patterns
                .iter()
                .zip(&parent.0)
                .map(|(p, &m)| m || p.matches(dir))
                .collect(),
        )
    }

    /// [`is_excluded`](Self::is_excluded) for an entry of a directory whose
    /// [`Ancestors`] are known.
    pub fn is_excluded_in(&self, path: &str, parent: &Ancestors) -> bool {
        let mut matched = false;
        for (p, &inherited) in self.patterns.iter().zip(&parent.0) {
            // An inclusion that already matched, or an exclusion when nothing
            // matched yet, cannot change the answer.
            if p.exclusion != matched {
                continue;
            }
            if inherited || p.matches(path) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether an excluded directory must still be walked because a `!`
    /// pattern could re-include something below it.
    pub fn must_descend(&self, dir: &str) -> bool {
        if !self.has_exclusions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            format!("{}/", p.cleaned).starts_with(&dir_slash) || p.cleaned.starts_with("**")
        })
    }
}

#[cfg(test)]
mod tests;
