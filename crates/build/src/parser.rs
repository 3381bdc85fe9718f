//! Dockerfile parsing: parser directives, comments, line continuations, instructions
//! with their `--flags`, and the shell-like word lexer that expands `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}` and removes quotes.
//!
//! The grammar follows BuildKit's Dockerfile frontend: directives (`# syntax=`,
//! `# escape=`) only before anything else, `#` comments only at the start of a line,
//! the escape character (`\` or `` ` ``) at the end of a line joins it to the next, and
//! comment and blank lines inside a continued instruction are dropped.

use crate::error::{syntax, Result};

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The keyword, upper-cased (`RUN`, `COPY`, ...).
    pub keyword: String,
    /// `--name[=value]` flags before the arguments, in order.
    pub flags: Vec<(String, Option<String>)>,
    /// The arguments after the flags, continuation lines joined, as written.
    pub args: String,
    /// The whole instruction as written (continuations joined), for history entries.
    pub original: String,
}

impl Instruction {
    /// The value of flag `name` (the last one given), or `None`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// All values of flag `name`, in order.
    pub fn flag_all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
            .collect()
    }

    /// Fails on a flag not in `allowed`.
    pub(crate) fn check_flags(&self, allowed: &[&str]) -> Result<()> {
        for (n, _) in &self.flags {
            if !allowed.contains(&n.as_str()) {
                return Err(syntax(
                    self.line,
                    format!("unknown flag --{n} for {}", self.keyword),
                ));
            }
        }
        Ok(())
    }

    /// The arguments as an exec-form JSON array, if they are one.
    pub fn json_args(&self) -> Option<Vec<String>> {
        let t = self.args.trim();
        if !t.starts_with('[') {
            return None;
        }
        serde_json::from_str::<Vec<String>>(t).ok()
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The `# syntax=` directive, if given (recorded, not acted on).
    pub syntax: Option<String>,
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile.
///
/// ```
/// let df = kcore_build::parse("FROM scratch\nCOPY a \\\n/b\n")?;
/// assert_eq!(df.instructions[1].keyword, "COPY");
/// assert_eq!(df.instructions[1].line, 2);
/// assert_eq!(df.instructions[1].args, "a /b");
/// Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse(text: &str) -> Result<Dockerfile> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut syntax_directive = None;
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: `# key=value` lines at the very top.
    let mut seen = std::collections::HashSet::new();
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(rest) = l.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || k.contains(char::is_whitespace) {
            break;
        }
        let v = v.trim().to_owned();
        match k.as_str() {
            "syntax" | "escape" | "check" => {}
            _ => break,
        }
        if !seen.insert(k.clone()) {
            return Err(syntax(
                i + 1,
                format!("only one {k} parser directive can be used"),
            ));
        }
        match k.as_str() {
            "syntax" => syntax_directive = Some(v),
            "escape" => {
                escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(syntax(
                            i + 1,
                            format!("invalid escape token {v:?}: it must be ` or \\"),
                        ))
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }

    let mut instructions = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i];
        i += 1;
        let t = first.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut joined = String::new();
        let mut cur = first.to_owned();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                joined.push_str(body);
                // Skip comment and blank lines inside a continuation.
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let lt = l.trim_start();
                    if lt.is_empty() || lt.starts_with('#') {
                        continue;
                    }
                    next = Some(l.to_owned());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                joined.push_str(&cur);
                break;
            }
        }
        instructions.push(instruction(start + 1, joined.trim())?);
    }
    Ok(Dockerfile {
        syntax: syntax_directive,
        escape,
        instructions,
    })
}

fn instruction(line: usize, text: &str) -> Result<Instruction> {
    let (kw, rest) = match text.find(char::is_whitespace) {
        Some(p) => (&text[..p], text[p..].trim_start()),
        None => (text, ""),
    };
    let keyword = kw.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(syntax(line, format!("unknown instruction: {kw}")));
    }
    let mut flags = Vec::new();
    let mut rest = rest;
    // ONBUILD's flags belong to the instruction it wraps.
    if keyword != "ONBUILD" {
        while let Some(f) = rest.strip_prefix("--") {
            let end = f.find(char::is_whitespace).unwrap_or(f.len());
            let word = &f[..end];
            if word.is_empty() {
                break;
            }
            match word.split_once('=') {
                Some((n, v)) => flags.push((n.to_owned(), Some(v.to_owned()))),
                None => flags.push((word.to_owned(), None)),
            }
            rest = f[end..].trim_start();
        }
    }
    if rest.is_empty() && !matches!(keyword.as_str(), "CMD" | "ENTRYPOINT") {
        return Err(syntax(
            line,
            format!("{keyword} requires at least one argument"),
        ));
    }
    if rest.contains("<<") && matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
        let heredoc = rest
            .split_whitespace()
            .any(|w| w.starts_with("<<") && w.len() > 2 && !w.starts_with("<<<"));
        if heredoc {
            return Err(syntax(line, "heredocs are not supported"));
        }
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        args: rest.to_owned(),
        original: text.to_owned(),
    })
}

/// Expands variables and removes quotes, as BuildKit's shell lexer does for the
/// arguments of ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

impl Lexer {
    /// A lexer with the given escape character.
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    /// One word: variables expanded, quotes and escapes removed, whitespace kept.
    ///
    /// ```
    /// use kcore_build::Lexer;
    /// let env = |k: &str| (k == "A").then(|| "x y".to_string());
    /// let lx = Lexer::new('\\');
    /// assert_eq!(lx.word("${A}-${B:-def}-${A:+alt}", &env).unwrap(), "x y-def-alt");
    /// assert_eq!(lx.word("'$A' \"$A\"", &env).unwrap(), "$A x y");
    /// ```
    pub fn word(&self, s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        Ok(self.lex(s, env, false)?.join(" "))
    }

    /// Words split at unquoted whitespace (after expansion of each word's variables;
    /// a variable's value is not split again).
    pub fn words(
        &self,
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, String> {
        self.lex(s, env, true)
    }

    fn lex(
        &self,
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
        split: bool,
    ) -> Result<Vec<String>, String> {
        let chars: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if split && c.is_whitespace() {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
                continue;
            }
            in_word = true;
            if c == self.escape {
                i += 1;
                if let Some(&n) = chars.get(i) {
                    cur.push(n);
                    i += 1;
                } else {
                    cur.push(c);
                }
            } else if c == '\'' {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    cur.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                i += 1;
            } else if c == '"' {
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(
                            "unexpected end of statement while looking for matching double-quote"
                                .into(),
                        );
                    };
                    if d == '"' {
                        i += 1;
                        break;
                    }
                    if d == self.escape {
                        // Inside double quotes only $, ", the escape and newline are escapable.
                        match chars.get(i + 1) {
                            Some(&n) if n == '$' || n == '"' || n == self.escape => {
                                cur.push(n);
                                i += 2;
                            }
                            _ => {
                                cur.push(d);
                                i += 1;
                            }
                        }
                    } else if d == '$' {
                        i = self.dollar(&chars, i, env, &mut cur)?;
                    } else {
                        cur.push(d);
                        i += 1;
                    }
                }
            } else if c == '$' {
                i = self.dollar(&chars, i, env, &mut cur)?;
            } else {
                cur.push(c);
                i += 1;
            }
        }
        if in_word || !split {
            out.push(cur);
        }
        Ok(out)
    }

    /// Expands the variable at `chars[i] == '$'`; returns the index after it.
    fn dollar(
        &self,
        chars: &[char],
        i: usize,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut String,
    ) -> Result<usize, String> {
        let mut j = i + 1;
        match chars.get(j) {
            Some('{') => {
                j += 1;
                let start = j;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if name.is_empty() {
                    return Err("bad substitution: empty variable name".into());
                }
                match chars.get(j) {
                    Some('}') => {
                        out.push_str(&env(&name).unwrap_or_default());
                        Ok(j + 1)
                    }
                    Some(&c) if c == ':' || c == '-' || c == '+' => {
                        let colon = c == ':';
                        if colon {
                            j += 1;
                        }
                        let op = *chars
                            .get(j)
                            .ok_or_else(|| format!("bad substitution in ${{{name}"))?;
                        if op != '-' && op != '+' && op != '?' {
                            return Err(format!("unsupported modifier ({op}) in substitution"));
                        }
                        j += 1;
                        // The word runs to the matching close brace.
                        let wstart = j;
                        let mut depth = 1;
                        while j < chars.len() {
                            match chars[j] {
                                '{' => depth += 1,
                                '}' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                _ => {}
                            }
                            j += 1;
                        }
                        if j >= chars.len() {
                            return Err(format!("missing '}}' in substitution of {name}"));
                        }
                        let word: String = chars[wstart..j].iter().collect();
                        let value = env(&name);
                        let set = match &value {
                            Some(v) => !colon || !v.is_empty(),
                            None => false,
                        };
                        match op {
                            '-' => {
                                if set {
                                    out.push_str(&value.unwrap_or_default());
                                } else {
                                    out.push_str(&self.word(&word, env)?);
                                }
                            }
                            '+' => {
                                if set {
                                    out.push_str(&self.word(&word, env)?);
                                }
                            }
                            _ => {
                                if set {
                                    out.push_str(&value.unwrap_or_default());
                                } else {
                                    let msg = self.word(&word, env)?;
                                    return Err(format!("{name}: {msg}"));
                                }
                            }
                        }
                        Ok(j + 1)
                    }
                    _ => Err(format!("bad substitution in ${{{name}")),
                }
            }
            Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = j;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                out.push_str(&env(&name).unwrap_or_default());
                Ok(j)
            }
            _ => {
                out.push('$');
                Ok(j)
            }
        }
    }
}

/// Splits `key=value` pairs (ENV, LABEL, ARG) after lexing; the legacy `ENV key value`
/// form (one pair, the value the rest of the line) when the first word has no `=`.
pub(crate) fn key_values(
    inst: &Instruction,
    lexer: &Lexer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let args = inst.args.trim();
    let first_end = args.find(char::is_whitespace).unwrap_or(args.len());
    if !args[..first_end].contains('=') {
        if inst.keyword == "LABEL" {
            return Err(syntax(inst.line, "LABEL requires key=value pairs"));
        }
        let key = &args[..first_end];
        let value = args[first_end..].trim();
        if value.is_empty() {
            return Err(syntax(
                inst.line,
                format!("{} must have two arguments", inst.keyword),
            ));
        }
        let v = lexer.word(value, env).map_err(|e| syntax(inst.line, e))?;
        return Ok(vec![(key.to_owned(), v)]);
    }
    let words = lexer.words(args, env).map_err(|e| syntax(inst.line, e))?;
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(syntax(
                inst.line,
                format!(
                    "{}: syntax error - can't find = in {w:?}; must be of the form: name=value",
                    inst.keyword
                ),
            ));
        };
        if k.is_empty() {
            return Err(syntax(
                inst.line,
                format!("{}: empty name in {w:?}", inst.keyword),
            ));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("a".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn directives_comments_continuations() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM busybox AS b\n# comment\nRUN echo a `\n  # inside\n\n  && echo b\nCOPY --chown=1:2 --link x /y\n",
        )
        .unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.escape, '`');
        let i = &df.instructions;
        assert_eq!(i.len(), 3);
        assert_eq!((i[0].line, i[0].keyword.as_str()), (4, "FROM"));
        assert_eq!((i[1].line, i[1].args.as_str()), (6, "echo a   && echo b"));
        assert_eq!(i[2].flag("chown"), Some("1:2"));
        assert_eq!(i[2].flag("link"), Some(""));
        assert_eq!(i[2].args, "x /y");
    }

    #[test]
    fn directive_after_comment_is_a_comment() {
        let df = parse("# hello\n# escape=`\nFROM a\nRUN x \\\n y\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert_eq!(df.instructions[1].args, "x  y");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM a\n\nRUNN x\n").unwrap_err().to_string();
        assert_eq!(e, "Dockerfile:3: unknown instruction: RUNN");
        let e = parse("FROM a\nCOPY\n").unwrap_err().to_string();
        assert_eq!(e, "Dockerfile:2: COPY requires at least one argument");
        let e = parse("# escape=x\nFROM a\n").unwrap_err().to_string();
        assert!(e.starts_with("Dockerfile:1: invalid escape token"), "{e}");
        let e = parse("FROM a\nRUN <<EOF\nx\nEOF\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Dockerfile:2: heredocs are not supported");
    }

    #[test]
    fn exec_form() {
        let df = parse("CMD [\"a\", \"b c\"]\nCMD a [b]\n").unwrap();
        assert_eq!(df.instructions[0].json_args().unwrap(), vec!["a", "b c"]);
        assert_eq!(df.instructions[1].json_args(), None);
    }

    #[test]
    fn lexer_expansions() {
        let lx = Lexer::new('\\');
        let w = |s| lx.word(s, &env).unwrap();
        assert_eq!(w("$A/${A}/$B/x"), "a/a//x");
        assert_eq!(w("${B:-d}|${E:-d}|${E-d}|${B-d}"), "d|d||d");
        assert_eq!(w("${A:+p}|${E:+p}|${E+p}|${B+p}"), "p||p|");
        assert_eq!(w("${B:-${A}x}"), "ax");
        assert_eq!(w("\\$A '$A' \"$A \\\"q\\\"\""), "$A $A a \"q\"");
        assert_eq!(w("$1 $"), "$1 $");
        assert!(lx
            .word("${B:?must be set}", &env)
            .unwrap_err()
            .contains("must be set"));
        assert!(lx.word("'open", &env).is_err());
        assert_eq!(
            lx.words("a \"b c\" $A  ", &env).unwrap(),
            vec!["a", "b c", "a"]
        );
    }

    #[test]
    fn env_pairs() {
        let lx = Lexer::new('\\');
        let df = parse("ENV A=1 B=\"two words\" C=$A\nENV D legacy value\nLABEL x\n").unwrap();
        let kv = key_values(&df.instructions[0], &lx, &env).unwrap();
        assert_eq!(
            kv,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "a".into())
            ]
        );
        let kv = key_values(&df.instructions[1], &lx, &env).unwrap();
        assert_eq!(kv, vec![("D".into(), "legacy value".into())]);
        assert!(key_values(&df.instructions[2], &lx, &env).is_err());
    }
}
