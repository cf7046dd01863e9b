//! remote: the only place where shell text is built.
//!
//! Owns quoting ([`quote`]), scripts made of typed pieces ([`Script`]: literal shell, quoted
//! values, secrets that are masked whenever the script is shown) and the framing that lets one
//! remote script carry the output of many probes ([`frame_start`], [`split_frames`]).
//! Nothing else in rampart writes `format!("... '{}'", value)` into a command.

use std::fmt;

/// A value that cannot be passed to a POSIX shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("a value contains a NUL byte, which no shell argument can hold: {0:?}")]
    Nul(String),
}

/// Quotes `value` as one POSIX sh word: single quotes, with each `'` written as `'\''`.
/// Every byte other than NUL (newlines, `$()`, backticks, non-UTF-8) passes through as is.
pub fn quote(value: &str) -> Result<String, QuoteError> {
    quote_bytes(value.as_bytes()).map(|b| String::from_utf8(b).expect("UTF-8 in, UTF-8 out"))
}

/// [`quote`] for bytes that need not be UTF-8 (file names on a host).
pub fn quote_bytes(value: &[u8]) -> Result<Vec<u8>, QuoteError> {
    if value.contains(&0) {
        return Err(QuoteError::Nul(
            String::from_utf8_lossy(value).replace('\0', "\\0"),
        ));
    }
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    Ok(out)
}

/// One piece of a script.
#[derive(Clone, PartialEq, Eq)]
enum Piece {
    /// Shell text written by rampart itself.
    Raw(String),
    /// A value, quoted when the script is rendered.
    Quoted(String),
    /// A secret value, quoted when rendered for the host, masked as `<secret:NAME>` when shown.
    Secret { name: String, value: String },
    /// Bytes carried as a base64 here-document (`<<'DELIM' ... DELIM`), shown as their size.
    Payload(Vec<u8>),
    /// A whole script as one quoted word (`sh -c WORD`): rendered, then quoted; shown with
    /// its own secrets masked.
    Nested(Script),
}

/// A shell script built from typed pieces. `Display` masks secrets; [`Script::render`] gives
/// the text for the host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Script {
    pieces: Vec<Piece>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends shell text written by rampart (never a value from outside).
    pub fn raw(mut self, text: &str) -> Script {
        self.pieces.push(Piece::Raw(text.to_string()));
        self
    }

    /// Appends shell code written by the playbook's author (a `command` step's `run`): shell
    /// by intent, run as written, like Ansible's `shell`. Never use it for a value.
    pub fn author_code(mut self, code: &str) -> Script {
        self.pieces.push(Piece::Raw(code.to_string()));
        self
    }

    /// Appends a value as one quoted word.
    pub fn arg(mut self, value: &str) -> Script {
        self.pieces.push(Piece::Quoted(value.to_string()));
        self
    }

    /// Appends a secret as one quoted word, masked when shown.
    pub fn secret(mut self, name: &str, value: &str) -> Script {
        self.pieces.push(Piece::Secret {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Appends `data` as a here-document of its base64 text, to be decoded on the host:
    /// `Script::new().raw("base64 -d >\"$tmp\" ").payload(bytes)`. Any bytes (NUL too) can
    /// travel this way; a file's content never reaches argv. Shown as `<<payload: N bytes>>`.
    pub fn payload(mut self, data: &[u8]) -> Script {
        self.pieces.push(Piece::Payload(data.to_vec()));
        self
    }

    /// Appends `inner` as one quoted word, for `sh -c` (say, run as another user by
    /// `runuser`). Its secrets stay masked when this script is shown.
    pub fn script_arg(mut self, inner: Script) -> Script {
        self.pieces.push(Piece::Nested(inner));
        self
    }

    /// Appends another script.
    pub fn then(mut self, other: Script) -> Script {
        self.pieces.extend(other.pieces);
        self
    }

    /// The text sent to the host.
    pub fn render(&self) -> Result<String, QuoteError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Raw(text) => out.push_str(text),
                Piece::Quoted(value) | Piece::Secret { value, .. } => out.push_str(&quote(value)?),
                Piece::Nested(inner) => out.push_str(&quote(&inner.render()?)?),
                Piece::Payload(data) => {
                    use base64::Engine;
                    let text = base64::engine::general_purpose::STANDARD.encode(data);
                    out.push_str(&format!("<<'{PAYLOAD_END}'\n"));
                    for chunk in text.as_bytes().chunks(76) {
                        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
                        out.push('\n');
                    }
                    out.push_str(PAYLOAD_END);
                    out.push('\n');
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Raw(text) => f.write_str(text)?,
                Piece::Quoted(value) => match quote(value) {
                    Ok(q) => f.write_str(&q)?,
                    Err(_) => f.write_str("<value with NUL>")?,
                },
                Piece::Secret { name, .. } => write!(f, "<secret:{name}>")?,
                Piece::Nested(inner) => match quote(&inner.to_string()) {
                    Ok(q) => f.write_str(&q)?,
                    Err(_) => f.write_str("<script with NUL>")?,
                },
                Piece::Payload(data) => writeln!(f, "<<payload: {} bytes>>", data.len())?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Script({self})")
    }
}

/// Ends a payload here-document; base64 text never contains `@`.
const PAYLOAD_END: &str = "@@RAMPART_PAYLOAD@@";

/// The command of every exec: POSIX sh reads the whole script from stdin into memory, then
/// runs it with stdin at its end. So scripts, file contents and secrets travel only over the
/// channel's stdin, never in argv (visible in `ps`) nor in a temporary file; and a command in
/// the script that reads stdin cannot eat the rest of the script. `become` runs it under
/// `sudo -n` (never prompts: a missing sudo right fails at once).
pub fn exec_command(become_root: bool) -> String {
    let run = "/bin/sh -c 's=$(cat) && eval \"$s\"'";
    if become_root {
        format!("sudo -n {run}")
    } else {
        format!("exec {run}")
    }
}

/// The marker line that opens the output of frame `id`. The nonce keeps a probe's own output
/// from being taken for a marker.
pub fn frame_marker(nonce: &str, id: &str) -> String {
    format!("@@rampart:{nonce}:{id}@@")
}

/// Shell text that prints the marker of frame `id` on a line of its own.
pub fn frame_start(nonce: &str, id: &str) -> Script {
    // Markers are rampart's own ASCII: no quoting needed, but quote anyway for uniformity.
    Script::new()
        .raw("printf '\\n%s\\n' ")
        .arg(&frame_marker(nonce, id))
        .raw("\n")
}

/// Splits framed output into `(id, text)` pairs, in order. Text before the first marker is
/// returned under the id `""` (a login banner, say).
pub fn split_frames(nonce: &str, output: &str) -> Vec<(String, String)> {
    let prefix = format!("@@rampart:{nonce}:");
    let mut frames: Vec<(String, String)> = vec![(String::new(), String::new())];
    for line in output.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(id) = bare
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix("@@"))
        {
            // The newline printed before the marker belongs to no frame.
            if let Some(last) = frames.last_mut()
                && last.1.ends_with('\n')
            {
                last.1.pop();
            }
            frames.push((id.to_string(), String::new()));
        } else if let Some(last) = frames.last_mut() {
            last.1.push_str(line);
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sh_echo(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {word}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn hostile_values_come_back_unchanged() {
        for hostile in [
            "'; rm -rf / #",
            "$(touch /tmp/pwned)",
            "`id`",
            "a\nb",
            "it's",
            "''",
            "\\'",
            "-n",
            "*",
            "",
            "ünïcødé",
        ] {
            assert_eq!(
                sh_echo(&quote(hostile).unwrap()),
                hostile.as_bytes(),
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn nul_is_refused_clearly() {
        let err = quote("a\0b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a value contains a NUL byte, which no shell argument can hold: \"a\\\\0b\""
        );
    }

    #[test]
    fn non_utf8_bytes_are_quoted() {
        let q = quote_bytes(b"\xff'\xfe").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    &[b"printf '%s' ".as_slice(), &q].concat(),
                ),
            )
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"\xff'\xfe");
    }

    #[test]
    fn secrets_are_masked_when_shown_and_present_when_rendered() {
        let s = Script::new()
            .raw("echo ")
            .secret("TOKEN", "hunter2")
            .raw(" ")
            .arg("x y");
        assert_eq!(s.to_string(), "echo <secret:TOKEN> 'x y'");
        assert_eq!(format!("{s:?}"), "Script(echo <secret:TOKEN> 'x y')");
        assert_eq!(s.render().unwrap(), "echo 'hunter2' 'x y'");
    }

    #[test]
    fn nested_scripts_run_as_one_word_and_keep_secrets_masked() {
        let inner = Script::new()
            .raw("printf '%s|%s' \"$1\" ")
            .secret("TOKEN", "it's $(x)");
        let s = Script::new()
            .raw("sh -c ")
            .script_arg(inner)
            .raw(" rampart ")
            .arg("a b'");
        assert_eq!(
            s.to_string(),
            "sh -c 'printf '\\''%s|%s'\\'' \"$1\" <secret:TOKEN>' rampart 'a b'\\'''"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.render().unwrap())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a b'|it's $(x)");
    }

    #[test]
    fn frames_split_back_into_steps() {
        let script = Script::new()
            .raw("echo banner\n")
            .then(frame_start("n1", "0"))
            .raw("printf 'a\\nb'\n")
            .then(frame_start("n1", "1"))
            .raw("echo c\n");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script.render().unwrap())
            .output()
            .unwrap();
        let frames = split_frames("n1", &String::from_utf8(out.stdout).unwrap());
        assert_eq!(
            frames,
            vec![
                (String::new(), "banner\n".to_string()),
                ("0".to_string(), "a\nb".to_string()),
                ("1".to_string(), "c\n".to_string()),
            ]
        );
    }

    #[test]
    fn payloads_carry_any_bytes_through_stdin() {
        let data: Vec<u8> = (0..=255u8)
            .chain(b"\n@@RAMPART_PAYLOAD@@\n'$(x)".iter().copied())
            .collect();
        let script = Script::new()
            .raw("base64 -d ")
            .payload(&data)
            .raw("echo done >&2\n");
        assert_eq!(
            script.to_string(),
            "base64 -d <<payload: 282 bytes>>\necho done >&2\n"
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(exec_command(false))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.render().unwrap().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.stdout, data);
        assert_eq!(out.stderr, b"done\n");
    }

    proptest! {
        #[test]
        fn any_value_without_nul_round_trips_through_sh(value in "[^\u{0}]{0,40}") {
            prop_assert_eq!(sh_echo(&quote(&value).unwrap()), value.as_bytes());
        }

        #[test]
        fn any_value_with_nul_is_refused(a in ".{0,10}", b in ".{0,10}") {
            let value = format!("{a}\0{b}");
            prop_assert!(quote(&value).is_err());
        }
    }
}
