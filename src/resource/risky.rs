//! risky: what the types whose change can cut the controller off (nftables, sshd) share,
//! besides the dead-man switch itself ([`deadman_arm`](super::deadman_arm)).
//!
//! Owns the check of their file's path, the shell pieces of their probes (one record a line,
//! texts in base64 on one line: `B64`, `FILE_PROBE`) and the parsing of those records
//! (`decode`, `parse_file_record`, `condensed` for error messages), the `content` change
//! of their file (`content_changes`) and its write (`write_file`, with
//! [`fsfile`](super::fsfile)'s writer and backup), and the copy of the file that an apply
//! keeps in the run's dead-man folder for the restore to put back (`Aside`). What each
//! type validates, loads or reloads stays in its own file.

use base64::Engine as _;

use super::fsfile::{Perms, Write, apply_script, backup_path};
use super::kit::FileField;
use super::{ApplyContext, Change, ParamError, ProbeError};
use crate::remote::Script;

/// An absolute, plain path without control characters. `what` opens the messages
/// (`nftables: path`, `sshd: file`).
pub(super) fn check_plain_path(what: &str, path: &str) -> Result<(), ParamError> {
    let bad = |why: &str| Err(ParamError(format!("{what} {path:?} {why}")));
    if !path.starts_with('/') || path.ends_with('/') {
        return bad("must be an absolute path to a file");
    }
    if path.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("is not a plain path (no //, . or .. parts)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Probe and parse.

/// Shell text defining `b64`: stdin in base64, on one line.
pub(super) const B64: &str = "b64() { base64 | tr -d '\\n'; }\n";
/// Shell text adding the sbin folders to `PATH`, where `nft` and `sshd` live.
pub(super) const PATH: &str = "PATH=\"$PATH:/usr/sbin:/sbin:/usr/local/sbin\"\n";

/// Shell text printing the `file` record of the file at `$p` (after `B64`):
/// `file content <base64>`, `file other` (not a regular file) or `file none`.
pub(super) const FILE_PROBE: &str = "if [ -f \"$p\" ]; then printf 'file content %s\\n' \"$(b64 <\"$p\")\"\n\
     elif [ -e \"$p\" ] || [ -L \"$p\" ]; then echo 'file other'\n\
     else echo 'file none'; fi\n";

/// What the probe found at the file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Current {
    None,
    /// Not a regular file (a folder, a device).
    Other,
    Content(Vec<u8>),
}

/// The probe's output for an error message: each base64 text is replaced by its decoded
/// size (`<3223 bytes>`), everything else kept as is.
pub(super) fn condensed(out: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    out.lines()
        .map(|line| {
            line.split(' ')
                .map(|w| match b64.decode(w) {
                    Ok(d) if w.len() > 40 => format!("<{} bytes>", d.len()),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The base64 `text` of record `field` of the probe's output `out`.
pub(super) fn decode(field: &str, text: &str, out: &str) -> Result<Vec<u8>, ProbeError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ProbeError::new(format!("{field}: not base64: {e}"), &condensed(out)))
}

/// `decode`, as text.
pub(super) fn decode_text(field: &str, text: &str, out: &str) -> Result<String, ProbeError> {
    Ok(String::from_utf8_lossy(&decode(field, text, out)?).into_owned())
}

/// The `file` record `line` of the probe's output `out`; `rest` is what follows `file `.
pub(super) fn parse_file_record(rest: &str, line: &str, out: &str) -> Result<Current, ProbeError> {
    Ok(match rest.split_once(' ') {
        Some(("content", b)) => Current::Content(decode("file", b, out)?),
        None if rest == "content" => Current::Content(Vec::new()),
        None if rest == "none" => Current::None,
        None if rest == "other" => Current::Other,
        _ => {
            return Err(ProbeError::new(
                format!("unexpected line {line:?}"),
                &condensed(out),
            ));
        }
    })
}

// ---------------------------------------------------------------------------------------
// The file: diff and write.

/// The changes that make the file at `path` hold `want` (none, or one `content` change), and
/// whether there is no file yet. Anything but a regular file there is an error, whose message
/// names the step (`an nftables step`).
pub(super) fn content_changes<F: From<FileField>>(
    current: &Current,
    path: &str,
    want: &str,
    step: &str,
) -> Result<(Vec<Change<F>>, bool), String> {
    Ok(match current {
        Current::Other => {
            return Err(format!(
                "{path} is not a regular file; {step} does not replace it"
            ));
        }
        Current::None => (
            vec![Change::of(
                FileField::Content.into(),
                None,
                Some(want.to_string()),
            )],
            true,
        ),
        Current::Content(old) if old == want.as_bytes() => (Vec::new(), false),
        Current::Content(old) => (
            vec![Change::of(
                FileField::Content.into(),
                Some(String::from_utf8_lossy(old).into_owned()),
                Some(want.to_string()),
            )],
            false,
        ),
    })
}

/// Writes `content` to `path` atomically, as a `file` step does (owner, group and mode of the
/// file it replaces, else 0644; a symlink there replaced), after backing up what is there.
pub(super) fn write_file(path: &str, content: &str, ctx: &ApplyContext) -> Script {
    apply_script(
        Write {
            path,
            content: content.as_bytes(),
            perms: &Perms::default(),
            new_mode: 0o644,
            backup: Some(backup_path(ctx, path)),
            check: Script::new(),
            make_folder: false,
            replace_link: true,
        }
        .script(),
    )
}

// ---------------------------------------------------------------------------------------
// The previous file, kept aside for the restore.

/// A file that an apply copies into the run's dead-man folder `$dm` before its change, and
/// that the restore puts back: the copy, or no file when there was none.
pub(super) struct Aside {
    /// The shell variable that holds the file's path (`p`).
    pub var: &'static str,
    /// The copy's name in `$dm` (`sshd.prev`).
    pub saved: &'static str,
    /// The name of the mark, in `$dm`, that there was no file (`sshd.none`).
    pub none: &'static str,
}

impl Aside {
    /// Shell text (with `die`) that keeps the file aside, or marks that there is none.
    pub(super) fn keep(&self) -> Script {
        let Aside { var, saved, none } = self;
        // `var`, `saved` and `none` are constants of this crate: shell words as they are.
        Script::new()
            .raw("rm -f \"$dm/")
            .raw(saved)
            .raw("\" \"$dm/")
            .raw(none)
            .raw("\"\nif [ -f \"$")
            .raw(var)
            .raw("\" ]; then cp -p \"$")
            .raw(var)
            .raw("\" \"$dm/")
            .raw(saved)
            .raw("\" || die \"cannot save $")
            .raw(var)
            .raw("\"\nelse : >\"$dm/")
            .raw(none)
            .raw("\"; fi\n")
    }

    /// Shell text that puts back what `Aside::keep` kept: the copy over the file, or the
    /// file removed; nothing when nothing was kept.
    pub(super) fn put_back(&self) -> Script {
        let Aside { var, saved, none } = self;
        Script::new()
            .raw("if [ -f \"$dm/")
            .raw(saved)
            .raw("\" ]; then\n  cp -p \"$dm/")
            .raw(saved)
            .raw("\" \"$")
            .raw(var)
            .raw(".rampart-old\" && mv -f \"$")
            .raw(var)
            .raw(".rampart-old\" \"$")
            .raw(var)
            .raw("\"\nelif [ -e \"$dm/")
            .raw(none)
            .raw("\" ]; then rm -f \"$")
            .raw(var)
            .raw("\"; fi\n")
    }
}

/// Scripts run on this machine, in a temporary folder, with stand-ins for the host's tools.
#[cfg(test)]
pub(super) mod bed {
    use std::path::PathBuf;

    use crate::remote::Script;
    use crate::resource::{ApplyContext, Resource, Verdict, run_local};

    /// A temporary folder whose `bin` comes first in the scripts' `PATH`, and a context whose
    /// backups and dead-man switches are in the folder.
    pub struct Bed {
        pub dir: tempfile::TempDir,
        pub ctx: ApplyContext,
    }

    impl Bed {
        pub fn new(deadman_seconds: u32) -> Bed {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("bin")).unwrap();
            let mut ctx = ApplyContext::new("t1");
            ctx.backup_root = dir.path().join("state/backups").display().to_string();
            ctx.deadman_seconds = deadman_seconds;
            Bed { dir, ctx }
        }

        /// Installs `bin/NAME`, a stand-in for a tool.
        pub fn stub(&self, name: &str, script: &str) {
            use std::os::unix::fs::PermissionsExt;
            let p = self.path("bin").join(name);
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        pub fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// The file at `rel`, or `<none>`.
        pub fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.path(rel)).unwrap_or_else(|_| "<none>".into())
        }

        /// Runs `script` with `bin` first in its `PATH`.
        pub async fn run(&self, script: Script) -> crate::transport::ExecOutput {
            let path = format!("{}:/usr/bin:/bin", self.path("bin").display());
            run_local(Script::new().raw("PATH=").arg(&path).raw("\n").then(script)).await
        }

        /// Probes `r` and diffs the output.
        pub async fn diff(&self, r: &dyn Resource) -> Verdict {
            let out = self.run(r.probe()).await;
            assert!(out.success(), "{}", out.stderr_block());
            r.diff(&String::from_utf8(out.stdout).unwrap()).unwrap()
        }
    }
}
