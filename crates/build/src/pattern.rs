//! Path patterns: Go `filepath.Match` globs (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes)
//! with `**` for any number of directories, and `.dockerignore` rule lists with `!`
//! exceptions, where a path is excluded when it or one of its parents matches.

/// Whether `pattern` matches the whole of `path` (both `/`-separated, relative).
///
/// ```
/// use kcore_build::glob_match;
/// assert!(glob_match("*.txt", "a.txt"));
/// assert!(!glob_match("*.txt", "d/a.txt"));
/// assert!(glob_match("**/*.txt", "d/e/a.txt"));
/// assert!(glob_match("d/[a-c]?", "d/bz"));
/// ```
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let s: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    match_parts(&p, &s)
}

fn match_parts(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => (0..=s.len()).any(|k| match_parts(&p[1..], &s[k..])),
        Some(seg) => !s.is_empty() && match_segment(seg, s[0]) && match_parts(&p[1..], &s[1..]),
    }
}

/// One path segment against one pattern segment.
fn match_segment(p: &str, s: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    seg(&p, &s)
}

fn seg(p: &[char], s: &[char]) -> bool {
    let Some(&c) = p.first() else {
        return s.is_empty();
    };
    match c {
        '*' => (0..=s.len()).any(|k| seg(&p[1..], &s[k..])),
        '?' => !s.is_empty() && seg(&p[1..], &s[1..]),
        '[' => {
            let Some(&ch) = s.first() else { return false };
            let mut i = 1;
            let negate = matches!(p.get(1), Some('^') | Some('!'));
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < p.len() && (p[i] != ']' || first) {
                first = false;
                let mut lo = p[i];
                if lo == '\\' && i + 1 < p.len() {
                    i += 1;
                    lo = p[i];
                }
                let mut hi = lo;
                if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&c| c != ']') {
                    hi = p[i + 2];
                    i += 2;
                }
                if lo <= ch && ch <= hi {
                    matched = true;
                }
                i += 1;
            }
            if i >= p.len() {
                return false; // unterminated class: no match, as filepath.Match errors
            }
            matched != negate && seg(&p[i + 1..], &s[1..])
        }
        '\\' if p.len() > 1 => !s.is_empty() && s[0] == p[1] && seg(&p[2..], &s[1..]),
        _ => !s.is_empty() && s[0] == c && seg(&p[1..], &s[1..]),
    }
}

/// Whether a string has glob metacharacters.
pub(crate) fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a pattern or path the way Go's `filepath.Clean` does for relative paths.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A `.dockerignore` rule list.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<(String, bool)>,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text: one pattern a line, `#` comments, `!` exceptions.
    ///
    /// ```
    /// use kcore_build::IgnoreRules;
    /// let r = IgnoreRules::parse("# c\n*.log\n!keep.log\ntmp\n");
    /// assert!(r.is_excluded("a.log"));
    /// assert!(!r.is_excluded("keep.log"));
    /// assert!(r.is_excluded("tmp/x/y"));
    /// assert!(!r.is_excluded("src/a.log"));
    /// ```
    pub fn parse(text: &str) -> IgnoreRules {
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, pat) = match l.strip_prefix('!') {
                Some(r) => (true, r.trim()),
                None => (false, l),
            };
            let pat = clean(pat.trim_start_matches('/'));
            if pat.is_empty() {
                continue;
            }
            rules.push((pat, neg));
        }
        IgnoreRules { rules }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `path` (relative to the context root) is excluded: the last rule that
    /// matches the path or one of its parent directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (pat, neg) in &self.rules {
            let hit = (1..=parts.len()).any(|n| glob_match(pat, &parts[..n].join("/")));
            if hit {
                excluded = !neg;
            }
        }
        excluded
    }

    /// Whether some exception rule could re-include something below directory `dir`
    /// (then an excluded directory must still be walked).
    pub(crate) fn may_reinclude_below(&self, dir: &str) -> bool {
        self.rules.iter().any(|(p, neg)| {
            *neg && (p.starts_with(&format!("{dir}/"))
                || p.starts_with("**")
                || !p.contains('/') && has_meta(p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("a", "a"));
        assert!(glob_match("./a/", "a"));
        assert!(glob_match("a*", "abc"));
        assert!(!glob_match("a*", "a/b"));
        assert!(glob_match("a/*/c", "a/b/c"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("a/**", "a/b/c"));
        assert!(glob_match("**/c", "c"));
        assert!(glob_match("[!a]", "b"));
        assert!(glob_match("[^a]", "b"));
        assert!(!glob_match("[^a]", "a"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "x"));
        assert!(!glob_match("[a", "a"));
    }

    #[test]
    fn ignore_rules() {
        let r = IgnoreRules::parse("/build\n**/*.tmp\n!build/keep\n./docs/*.md\n");
        assert!(r.is_excluded("build"));
        assert!(r.is_excluded("build/x"));
        assert!(!r.is_excluded("build/keep"));
        assert!(r.is_excluded("a/b/c.tmp"));
        assert!(r.is_excluded("docs/x.md"));
        assert!(!r.is_excluded("docs/x/y.md"));
        assert!(r.may_reinclude_below("build"));
        assert!(!r.may_reinclude_below("docs"));
    }
}
