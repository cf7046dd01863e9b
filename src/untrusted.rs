//! untrusted: text that came from a host, made safe for the controller.
//!
//! A host's output is the attacker's (DESIGN.md, "Threat model"): a motd, a file's content, an
//! os name or a command's stderr may carry terminal escape sequences, and any of it may be
//! huge. This module owns the two defences every text output uses:
//! - [`escape_controls`]: the ONE function that makes text safe for a terminal. Control
//!   characters other than newline and tab are shown as visible escapes (`ESC` as `\x1b`).
//!   Text reports, progress lines and error messages go through it; JSON is escaped by serde.
//! - [`truncate`]: long text (a failed step's output in an error) cut to a bounded size,
//!   saying how much was left out.
//!
//! It also turns a panic's payload into a message ([`panic_message`]) and installs the panic
//! hook that prints one without raw control characters ([`install_panic_hook`]). It never
//! decides what to print: callers do.

use std::borrow::Cow;
use std::fmt::Write as _;

/// How much of a host's output an error message keeps (the rest is counted, not shown).
pub const ERROR_TEXT_LIMIT: usize = 4096;

/// Whether `c` must not reach a terminal raw: C0 controls other than `\n` and `\t`, DEL, C1
/// controls (U+0080..U+009F, which some terminals take as CSI and OSC), and the bidirectional
/// overrides that make text read differently from what it is.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`is_unsafe`] character shown as a visible escape: `\x1b` for ESC,
/// `\r` for a carriage return, `\u{9b}` for a C1 or bidi control. Everything else, newlines
/// and tabs included, is kept. Borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c == '\r' {
            out.push_str("\\r");
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// A name from a host (a path, a user) for one line of text: [`escape_controls`], and newlines
/// and tabs shown as `\n` and `\t` too (a planted name with a newline must not read as two).
pub fn escape_name(text: &str) -> Cow<'_, str> {
    if !text.contains(['\n', '\t']) {
        return escape_controls(text);
    }
    Cow::Owned(
        escape_controls(text)
            .replace('\n', "\\n")
            .replace('\t', "\\t"),
    )
}

/// `text` cut to at most `limit` bytes (on a character boundary), followed by
/// `… N bytes more` when something was cut.
pub fn truncate(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let head = prefix_bytes(text, limit);
    let more = text.len() - head.len();
    let sep = if head.ends_with('\n') { "" } else { "\n" };
    Cow::Owned(format!("{head}{sep}… {more} bytes more"))
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
pub fn prefix_bytes(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first `n` characters of `text`.
pub fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The last `n` characters of `text`.
pub fn last_chars(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match text.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &text[i..],
        None => text,
    }
}

/// A host's output for an error message: cut to [`ERROR_TEXT_LIMIT`], control characters
/// escaped.
pub fn for_error(text: &str) -> String {
    escape_controls(&truncate(text, ERROR_TEXT_LIMIT)).into_owned()
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "(no message)"
    };
    for_error(text)
}

/// The error of a host whose task panicked (`message`: from [`panic_message`]).
pub fn panic_error(message: &str) -> String {
    format!("rampart hit a bug on this host (a panic): {message}")
}

/// The hint of a host whose task panicked.
pub const PANIC_HINT: &str = "the other hosts are not affected; please report this bug with the error above and the `rampart -vv` output for this host";

/// Replaces the default panic hook with one that prints the same facts (where, what) with
/// the message escaped and cut: a panic's message may quote host output (a slice of a line
/// it could not handle). Set `RUST_BACKTRACE=1` for a backtrace, as usual.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        eprintln!("rampart: internal error: thread '{name}' panicked{place}: {message}");
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_are_visible_and_newlines_and_tabs_stay() {
        assert_eq!(
            escape_controls("a\x1b[31mred\x1b[0m\tb\nc\rd\x07\u{9b}2J\u{202e}x\x7f"),
            "a\\x1b[31mred\\x1b[0m\tb\nc\\rd\\x07\\u{9b}2J\\u{202e}x\\x7f"
        );
        assert!(matches!(
            escape_controls("plain é ü 日本"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn truncation_cuts_on_a_character_and_counts_the_rest() {
        assert_eq!(truncate("short", 10), "short");
        // 'é' is two bytes: a limit inside it cuts before it.
        assert_eq!(truncate("abcé", 4), "abc\n… 2 bytes more");
        assert_eq!(truncate("ab\ncd", 3), "ab\n… 2 bytes more");
        assert_eq!(first_chars("ééé", 2), "éé");
        assert_eq!(last_chars("abé", 1), "é");
        assert_eq!(last_chars("ab", 5), "ab");
        assert_eq!(last_chars("ab", 0), "");
    }

    proptest! {
        #[test]
        fn escaped_text_holds_no_control_character(s in any::<String>()) {
            let e = escape_controls(&s);
            prop_assert!(!e.chars().any(is_unsafe), "{e:?}");
            // Nothing but the unsafe characters changes.
            if !s.chars().any(is_unsafe) {
                prop_assert_eq!(e.as_ref(), s.as_str());
            }
        }

        #[test]
        fn truncated_text_is_bounded(s in any::<String>(), limit in 0usize..64) {
            let t = truncate(&s, limit);
            prop_assert!(t.len() <= limit + 40, "{t:?}");
            prop_assert!(s.starts_with(prefix_bytes(&s, limit)));
            prop_assert!(first_chars(&s, limit).chars().count() <= limit);
            prop_assert!(last_chars(&s, limit).chars().count() <= limit);
        }
    }
}
