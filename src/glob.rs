//! glob: the one glob matcher of rampart, linear in the length of the text.
//!
//! Owns the answer to "does this pattern match this name?" for `--limit` (host and group
//! names), known_hosts host patterns and sshd's `Include` paths. It never reads files and
//! never decides what a match means: the callers do.
//!
//! Matching is `globset`'s: the pattern is compiled to a regular expression, so a pattern
//! like `*a*a*a*a*a*a*a*a*c` costs the same as `*c` (the backtracking matchers it replaces
//! took more than 20 seconds on it). Whatever a pattern holds beyond the syntax of its
//! [`Syntax`] is literal text: no `{a,b}` alternates, no `**` that crosses folders, no
//! backslash escapes. `?` matches one byte, as OpenSSH's `match_pattern` does.

use globset::GlobBuilder;

/// What a pattern may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Names (hosts, groups, known_hosts patterns): `*` matches any run of characters (also
    /// none), `?` exactly one; everything else, `[` included, is itself.
    Names,
    /// Paths, as `fnmatch(3)` with `FNM_PATHNAME` (sshd's `Include`): `*`, `?` and `[…]`
    /// (`!` or `^` negates, `a-z` ranges) never match `/`; an unclosed `[` is itself.
    Paths,
}

/// True if `pattern` matches the whole of `text`. A pattern without wildcards is compared as
/// it is (no compilation: known_hosts files are mostly such lines). A pattern the matcher
/// cannot compile (a range written backwards, `[z-a]`) matches nothing.
pub fn glob_match(pattern: &str, text: &str, syntax: Syntax) -> bool {
    let special: &[char] = match syntax {
        Syntax::Names => &['*', '?'],
        Syntax::Paths => &['*', '?', '['],
    };
    if !pattern.contains(special) {
        return pattern == text;
    }
    GlobBuilder::new(&translate(pattern, syntax))
        .literal_separator(syntax == Syntax::Paths)
        .backslash_escape(false)
        .allow_unclosed_class(true)
        .build()
        .map(|g| g.compile_matcher().is_match(text))
        .unwrap_or(false)
}

/// The pattern in globset's syntax: runs of `*` become one `*` (so no `**` means "any
/// folders"), classes stay classes in [`Syntax::Paths`], every other character is escaped.
fn translate(pattern: &str, syntax: Syntax) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                out.push('*');
                while chars.get(i + 1) == Some(&'*') {
                    i += 1;
                }
            }
            '?' => out.push('?'),
            '[' if syntax == Syntax::Paths => match class_end(&chars[i + 1..]) {
                Some(len) => {
                    out.extend(&chars[i..=i + len]);
                    i += len;
                }
                None => out.push_str("[[]"),
            },
            c => out.push_str(&globset::escape(c.encode_utf8(&mut [0; 4]))),
        }
        i += 1;
    }
    out
}

/// For a class body (what follows `[`), the offset of its closing `]` counted from the `[`,
/// or `None` when it is not closed. A `]` right after `[`, `[!` or `[^` is a member.
fn class_end(body: &[char]) -> Option<usize> {
    let mut i = usize::from(matches!(body.first(), Some('!' | '^')));
    if body.get(i) == Some(&']') {
        i += 1;
    }
    body[i.min(body.len())..]
        .iter()
        .position(|&c| c == ']')
        .map(|p| i + p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(p: &str, t: &str) -> bool {
        glob_match(p, t, Syntax::Names)
    }

    fn paths(p: &str, t: &str) -> bool {
        glob_match(p, t, Syntax::Paths)
    }

    #[test]
    fn names_know_only_star_and_question_mark() {
        assert!(names("web-*", "web-1"));
        assert!(names("*", ""));
        assert!(names("w?b", "web"));
        assert!(!names("w?b", "wb"));
        assert!(
            names("*.example.net", "a/b.example.net"),
            "`*` crosses `/` in names"
        );
        assert!(names("a**b", "ab"));
        assert!(!names("web", "web1"));
        // Everything else is itself: known_hosts' `[host]:port`, braces, backslashes.
        assert!(names("[web1]:2222", "[web1]:2222"));
        assert!(names("[web?]:22*", "[web1]:2222"));
        assert!(!names("[web?]:22*", "w:2222"));
        assert!(names("{a,b}*", "{a,b}c"));
        assert!(!names("{a,b}*", "a"));
        assert!(names("a\\*", "a\\bc"));
        assert!(
            names("x*\ny", "x1\n2\ny"),
            "a newline is a character like any other"
        );
    }

    #[test]
    fn paths_match_like_fnmatch_with_pathname() {
        assert!(paths("/etc/ssh/d/*.conf", "/etc/ssh/d/10-rampart.conf"));
        assert!(!paths("/etc/ssh/d/*.conf", "/etc/ssh/d/a/b.conf"));
        assert!(!paths("/etc/ssh/d/**.conf", "/etc/ssh/d/a/b.conf"));
        assert!(!paths("/etc/ssh/d/?", "/etc/ssh/d//"));
        assert!(paths("/x/[0-9]?-*.conf", "/x/10-a.conf"));
        assert!(!paths("/x/[!0-9]*", "/x/10-a.conf"));
        assert!(paths("/x/[^0-9]*", "/x/a"));
        assert!(paths("/x/[]a]", "/x/]"));
        assert!(!paths("/x/[a/]b", "/x//b"), "a class never matches `/`");
        assert!(paths("/a/[b", "/a/[b"), "an unclosed `[` is itself");
        assert!(paths("/a/{b,c}", "/a/{b,c}"));
        assert!(
            !paths("/a/[z-a]", "/a/b"),
            "a backwards range matches nothing"
        );
    }

    #[test]
    fn a_pathological_pattern_finishes_at_once() {
        // The backtracking matchers this replaces took more than 20 s with 8 stars on a
        // 40-character name; this has 40 stars on 200 characters, which they would never
        // finish. The channel is a watchdog, not a stopwatch: a linear matcher answers in
        // microseconds, so only a matcher that blows up can miss it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pattern = format!("{}c", "*a".repeat(40));
            let text = "a".repeat(200);
            let answers = (
                names(&pattern, &text),
                paths(&pattern, &text),
                names(&pattern, &format!("{text}c")),
            );
            let _ = tx.send(answers);
        });
        let answers = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the matcher blew up on `*a*a…*a*c`");
        assert_eq!(answers, (false, false, true));
    }
}
