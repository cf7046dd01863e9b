//! fsfile: one file on a host, as the types that write files share it.
//!
//! Owns the checks of a path and of an owner or group name, the `stat` line of a probe and
//! its parsing (`Meta`), owner, group and mode as wanted (`Perms`: compared with what is
//! there, and changed in place), backups in the run's folder (`backup_script`), the atomic
//! write of a regular file (`Write`; unit.rs's own writer uses its `write_temp` and
//! `RENAME_TEMP`) and the apply subshell (`apply_script`). Also the probe of one regular
//! file that `json_config` and `audit_rules` print (`probe_file`, `parse_file`). What a
//! file should hold, each type's own probe format and the names of its other changes stay in
//! the type's file.
//!
//! Files are written atomically: a temporary file in the same folder gets the content, the
//! owner, group and mode, and is then renamed over the path. Before that, what was there is
//! copied to `ApplyContext::backup_dir` under its full path; the first copy in a run wins,
//! so a rerun never overwrites the original with rampart's own output.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;
use sha1::{Digest as _, Sha1};

use super::service::DIE;
use super::{ApplyContext, Change, ParamError};
use crate::remote::Script;

/// Files up to this size come back whole in a probe; larger ones by hash, or not at all.
pub(super) const MAX_CONTENT: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Checks and small helpers.

/// An absolute path in plain form: no `.` or `..` parts, no `//`, no trailing `/`. `/` itself
/// passes.
pub(super) fn check_path(ty: &str, path: &str) -> Result<(), ParamError> {
    let bad = |why: &str| Err(ParamError(format!("{ty}: path {path:?} {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute (it must start with /)");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("ends with /; write it without");
    }
    for part in path[1..].split('/') {
        match part {
            "" => return bad("contains //"),
            "." | ".." => return bad("contains a . or .. part; write the plain path"),
            _ => {}
        }
    }
    Ok(())
}

/// `check_path` for a path to a file: `/` is refused.
pub(super) fn check_file_path(ty: &str, path: &str) -> Result<(), ParamError> {
    if path == "/" {
        return Err(ParamError(format!(
            "{ty}: path {path:?} is the root folder, not a file"
        )));
    }
    check_path(ty, path)
}

/// A user or group name (or number) that `chown`/`chgrp` cannot take for an option.
pub(super) fn check_name(ty: &str, field: &str, name: &Option<String>) -> Result<(), ParamError> {
    let Some(name) = name else { return Ok(()) };
    if name.is_empty()
        || name.starts_with('-')
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(ParamError(format!(
            "{ty}: {field} {name:?} is not a user or group name (no spaces, `:` or leading `-`)"
        )));
    }
    Ok(())
}

/// `"0644"` or `"644"` -> 0o644. A number is refused: YAML reads `0644` as decimal 644 or as
/// octal depending on the version, and a wrong mode is a security bug.
pub(super) fn parse_mode(ty: &str, mode: &Option<Value>) -> Result<Option<u32>, ParamError> {
    let text = match mode {
        None => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => {
            return Err(ParamError(format!(
                "{ty}: mode {n} is a number; write it as a quoted string of octal digits, \
                 e.g. mode: \"0{n}\", so that YAML cannot read it as decimal"
            )));
        }
        Some(other) => {
            return Err(ParamError(format!(
                "{ty}: mode must be a string of octal digits like \"0644\", found {other}"
            )));
        }
    };
    let ok = (3..=4).contains(&text.len()) && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(text, 8) {
        Ok(m) if ok => Ok(Some(m)),
        _ => Err(ParamError(format!(
            "{ty}: mode {text:?} is not an octal mode; write 3 or 4 digits 0-7, e.g. \"0644\""
        ))),
    }
}

/// The folder that holds `path` (`/` for `/x`); `None` for `/` itself.
pub(super) fn parent(path: &str) -> Option<&str> {
    Path::new(path)
        .parent()
        .map(|p| p.to_str().expect("a parent of a &str is UTF-8"))
}

/// A path for messages: as is, or escaped when it holds control characters (a newline).
pub(super) fn shown(path: &str) -> String {
    if path.chars().any(char::is_control) {
        format!("{path:?}")
    } else {
        path.to_string()
    }
}

pub(super) fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

pub(super) fn sha1_hex(data: &[u8]) -> String {
    format!("{:x}", Sha1::digest(data))
}

// ---------------------------------------------------------------------------------------
// What a probe says about a path.

/// Owner, group, mode and size, from a `stat <owner> <uid> <group> <gid> <mode> <size>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    /// `UNKNOWN` when the uid has no name.
    pub owner: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
}

impl Meta {
    fn owner_matches(&self, want: &str) -> bool {
        want == self.owner || want == self.uid.to_string()
    }
    fn group_matches(&self, want: &str) -> bool {
        want == self.group || want == self.gid.to_string()
    }
    fn owner_shown(&self) -> String {
        name_or_id(&self.owner, self.uid)
    }
    fn group_shown(&self) -> String {
        name_or_id(&self.group, self.gid)
    }
}

fn name_or_id(name: &str, id: u32) -> String {
    if name == "UNKNOWN" {
        id.to_string()
    } else {
        name.to_string()
    }
}

/// The fields after `stat ` on a stat line; `None` when they are not what `stat -c` prints.
pub(super) fn parse_stat(rest: &str) -> Option<Meta> {
    let f: Vec<&str> = rest.split(' ').collect();
    let [owner, uid, group, gid, mode, size] = f[..] else {
        return None;
    };
    let mode = u32::from_str_radix(mode, 8).ok()?;
    (!owner.is_empty() && !group.is_empty() && mode <= 0o7777).then_some(())?;
    Some(Meta {
        owner: owner.to_string(),
        uid: uid.parse().ok()?,
        group: group.to_string(),
        gid: gid.parse().ok()?,
        mode,
        size: size.parse().ok()?,
    })
}

/// Reads base64 lines up to an `end` line, which it takes too, and decodes them. `None`: the
/// lines ran out before `end`.
pub(super) fn base64_block<'a>(
    lines: &mut impl Iterator<Item = &'a str>,
) -> Option<Result<Vec<u8>, base64::DecodeError>> {
    let mut text = String::new();
    for l in lines {
        if l == "end" {
            return Some(base64::engine::general_purpose::STANDARD.decode(&text));
        }
        text.push_str(l.trim());
    }
    None
}

/// A file's content after a `content` line: `base64_block`, with plain messages for a
/// [`ProbeError`](super::ProbeError).
pub(super) fn content_block<'a>(
    lines: &mut impl Iterator<Item = &'a str>,
) -> Result<Vec<u8>, String> {
    base64_block(lines)
        .ok_or("the content has no `end` line (the file could not be read whole)")?
        .map_err(|e| format!("the content is not base64: {e}"))
}

// ---------------------------------------------------------------------------------------
// The probe of one regular file, shared by json_config and audit_rules:
//
// kind none|file|dir|link|other
// stat <owner> <uid> <group> <gid> <octal mode> <size>     (kind file)
// content                                                   (kind file, at most 1 MiB)
// <base64 of the whole content, in lines>
// end
// large                                                     (kind file, larger)

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileKind {
    None,
    File,
    Dir,
    Link,
    Other,
}

/// A file as `probe_file` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileState {
    pub kind: FileKind,
    pub meta: Option<Meta>,
    /// The content of a regular file of at most `MAX_CONTENT` bytes.
    pub content: Option<Vec<u8>>,
    /// A regular file larger than `MAX_CONTENT`.
    pub large: bool,
}

/// The probe of the file at `path`: see above. A symlink is reported, not followed.
pub(super) fn probe_file(path: &str) -> Script {
    Script::new().raw("(\np=").arg(path).raw(
        "\nif [ -L \"$p\" ]; then echo 'kind link'\n\
         elif [ -d \"$p\" ]; then echo 'kind dir'\n\
         elif [ -f \"$p\" ]; then\n\
         \x20 echo 'kind file'\n\
         \x20 stat -c 'stat %U %u %G %g %a %s' \"$p\" || exit 1\n\
         \x20 if [ \"$(stat -c %s \"$p\")\" -le 1048576 ]; then\n\
         \x20   echo content; base64 <\"$p\" && echo end\n\
         \x20 else echo large; fi\n\
         elif [ -e \"$p\" ]; then echo 'kind other'\n\
         else echo 'kind none'; fi\n)\n",
    )
}

/// Reads the lines `probe_file` printed from `lines`, leaving what follows. Errors are
/// plain messages, for a [`ProbeError`](super::ProbeError).
pub(super) fn parse_file<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<FileState, String> {
    let kind = match lines.next() {
        Some("kind none") => FileKind::None,
        Some("kind file") => FileKind::File,
        Some("kind dir") => FileKind::Dir,
        Some("kind link") => FileKind::Link,
        Some("kind other") => FileKind::Other,
        Some(l) => return Err(format!("expected a `kind` line first, found {l:?}")),
        None => return Err("the probe printed nothing".into()),
    };
    let mut state = FileState {
        kind,
        meta: None,
        content: None,
        large: false,
    };
    if state.kind != FileKind::File {
        return Ok(state);
    }
    let line = lines.next().unwrap_or("");
    state.meta = Some(
        line.strip_prefix("stat ")
            .and_then(parse_stat)
            .ok_or_else(|| {
                format!("expected `stat OWNER UID GROUP GID MODE SIZE`, found {line:?}")
            })?,
    );
    match lines.next() {
        Some("large") => state.large = true,
        Some("content") => state.content = Some(content_block(lines)?),
        other => return Err(format!("expected `content` or `large`, found {other:?}")),
    }
    Ok(state)
}

/// The probe's output for an error message, with every base64 content block replaced by its
/// line count: a file's content (a token, say) must not reach a report in an encoding that
/// masking by value does not recognise.
pub(super) fn redacted(out: &str) -> String {
    let mut text = String::new();
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        text.push_str(line);
        text.push('\n');
        if line == "content" || line == "loaded" {
            let n = lines.by_ref().take_while(|l| *l != "end").count();
            text.push_str(&format!("<{n} lines of base64 left out>\nend\n"));
        }
    }
    text
}

// ---------------------------------------------------------------------------------------
// Owner, group and mode: diff and apply.

/// The names of the owner, group and mode changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PermNames {
    pub owner: &'static str,
    pub group: &'static str,
    pub mode: &'static str,
}

impl PermNames {
    /// `owner`, `group`, `mode`.
    pub(super) const PLAIN: PermNames = PermNames {
        owner: "owner",
        group: "group",
        mode: "mode",
    };
}

impl Default for PermNames {
    fn default() -> PermNames {
        PermNames::PLAIN
    }
}

/// Owner, group and mode as wanted; `None`: left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Perms {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
    /// How the changes are named (`PermNames::PLAIN` unless `Perms::named`).
    pub names: PermNames,
}

impl Perms {
    pub(super) fn from_params(
        ty: &str,
        owner: Option<String>,
        group: Option<String>,
        mode: &Option<Value>,
    ) -> Result<Perms, ParamError> {
        check_name(ty, "owner", &owner)?;
        check_name(ty, "group", &group)?;
        Ok(Perms {
            owner,
            group,
            mode: parse_mode(ty, mode)?,
            names: PermNames::PLAIN,
        })
    }

    /// The same, with its changes named `names`.
    pub(super) fn named(self, names: PermNames) -> Perms {
        Perms { names, ..self }
    }

    /// The changes against what is there (`None`: nothing yet). `new_mode`: the mode a new
    /// path gets when no mode is wanted, shown in a create.
    pub(super) fn changes(&self, meta: Option<&Meta>, new_mode: Option<u32>) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(o) = &self.owner
            && !meta.is_some_and(|m| m.owner_matches(o))
        {
            out.push(Change::new(
                self.names.owner,
                meta.map(Meta::owner_shown),
                Some(o.clone()),
            ));
        }
        if let Some(g) = &self.group
            && !meta.is_some_and(|m| m.group_matches(g))
        {
            out.push(Change::new(
                self.names.group,
                meta.map(Meta::group_shown),
                Some(g.clone()),
            ));
        }
        let mode = match meta {
            None => self.mode.or(new_mode),
            Some(_) => self.mode,
        };
        if let Some(want) = mode
            && meta.is_none_or(|m| m.mode != want)
        {
            out.push(Change::new(
                self.names.mode,
                meta.map(|m| octal(m.mode)),
                Some(octal(want)),
            ));
        }
        out
    }

    /// chown/chgrp/chmod of the path in `$p`, in place: only the fields that `changes` name,
    /// and the mode again after a chown (which may clear set-id bits).
    pub(super) fn apply_in_place(&self, changes: &[Change]) -> Script {
        self.in_place(|f| changes.iter().any(|c| c.field == f))
    }

    /// The apply of owner, group and mode changes alone, to the regular file at `path`: in
    /// place, refusing a path that is no longer a regular file.
    pub(super) fn apply_to_file(&self, path: &str, changes: &[Change]) -> Script {
        apply_script(
            Script::new()
                .raw("p=")
                .arg(path)
                .raw(
                    "\n{ [ -f \"$p\" ] && [ ! -L \"$p\" ]; } || \
                     die \"$p is no longer a regular file; run again\"\n",
                )
                .then(self.apply_in_place(changes)),
        )
    }

    /// chown/chgrp/chmod of `$p` to every wanted field, whatever it is now.
    pub(super) fn apply_all_in_place(&self) -> Script {
        self.in_place(|_| true)
    }

    fn in_place(&self, changed: impl Fn(&str) -> bool) -> Script {
        let mut s = Script::new();
        let mut chowned = false;
        if let Some(o) = self.owner.as_deref().filter(|_| changed(self.names.owner)) {
            s = s
                .raw("chown ")
                .arg(o)
                .raw(" \"$p\" || die \"cannot change the owner of $p\"\n");
            chowned = true;
        }
        if let Some(g) = self.group.as_deref().filter(|_| changed(self.names.group)) {
            s = s
                .raw("chgrp ")
                .arg(g)
                .raw(" \"$p\" || die \"cannot change the group of $p\"\n");
            chowned = true;
        }
        if let Some(m) = self.mode.filter(|_| changed(self.names.mode) || chowned) {
            s = s
                .raw("chmod ")
                .arg(&octal(m))
                .raw(" \"$p\" || die \"cannot change the mode of $p\"\n");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Apply building blocks.

/// An apply body in a subshell with `die`, umask 077 (backup folders are 0700, temporary
/// files 0600), and the failure passed on to the calling script.
pub(super) fn apply_script(body: Script) -> Script {
    Script::new()
        .raw("(\numask 077\n")
        .raw(DIE)
        .then(body)
        .raw(") || exit 1\n")
}

/// Where the backup of `path` goes in this run.
pub(super) fn backup_path(ctx: &ApplyContext, path: &str) -> String {
    format!("{}{path}", ctx.backup_dir())
}

/// Copies what is at `$p` (if anything) to `backup` with `copy` (`cp -pP`, `cp -a`), unless
/// this run already holds a backup of it: the first copy in a run is the state before the run.
/// `merge`: when `$p` is a folder and an earlier step of this run already backed up files
/// inside it (so the backup folder exists), the folder is merged in: a fresh copy, with the
/// earlier copies of files put over it (`cp -n` is no help: its exit status differs between
/// coreutils versions). Folders keep the fresh copy's owner and mode.
pub(super) fn backup_script(backup: &str, copy: &str, merge: bool) -> Script {
    let s = Script::new()
        .raw("b=")
        .arg(backup)
        .raw("\nbd=")
        .arg(parent(backup).unwrap_or("/"))
        .raw(
            "\nif [ -e \"$b\" ] || [ -L \"$b\" ]; then\n\
             \x20 :\n",
        );
    let s = if merge {
        s.raw(
            "  if [ -d \"$p\" ] && [ ! -L \"$p\" ] && [ -d \"$b\" ] && [ ! -L \"$b\" ]; then\n\
             \x20   m=$(mktemp -d \"$bd/.rampart.XXXXXX\") || die \"cannot create a folder in $bd\"\n\
             \x20   { cp -a \"$p\" \"$m/d\" && ( cd \"$b\" && find . ! -type d -exec sh -c \
             'for f do mkdir -p \"$0/${f%/*}\" && cp -pP \"$f\" \"$0/$f\" || exit 1; done' \
             \"$m/d\" {} + ) && rm -rf \"$b\" && mv \"$m/d\" \"$b\" && rmdir \"$m\"; } || \
             die \"cannot back up $p to $b\"\n\
             \x20 fi\n",
        )
    } else {
        s
    };
    s.raw(
        "elif [ -e \"$p\" ] || [ -L \"$p\" ]; then\n\
         \x20 mkdir -p \"$bd\" || die \"cannot create the backup folder $bd\"\n  ",
    )
    .raw(copy)
    .raw(" \"$p\" \"$b\" || die \"cannot back up $p to $b\"\nfi\n")
}

/// Shell text that clears `$t` and removes the temporary file it names on exit.
pub(super) const TEMP_TRAP: &str = "t=\ntrap '[ -z \"$t\" ] || rm -f \"$t\"' EXIT\n";

/// Sets `$t` to a new temporary file in the folder `$d`, holding `content`.
pub(super) fn write_temp(content: &[u8]) -> Script {
    Script::new()
        .raw(
            "t=$(mktemp \"$d/.rampart.XXXXXX\") || die \"cannot create a temporary file in $d\"\n\
             base64 -d >\"$t\" ",
        )
        .payload(content)
        .raw("[ $? -eq 0 ] || die \"cannot write the temporary file $t\"\n")
}

/// Renames the temporary file `$t` over `$p`.
pub(super) const RENAME_TEMP: &str = "mv -f \"$t\" \"$p\" || die \"cannot rename $t to $p\"\nt=\n";

/// One atomic write of a regular file, with `$p` set to its path first.
pub(super) struct Write<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    /// Wanted owner, group and mode. Fields not given are copied from the regular file being
    /// replaced, else: the connecting user, and `new_mode`.
    pub perms: &'a Perms,
    pub new_mode: u32,
    /// Where this run keeps what is replaced, if anywhere.
    pub backup: Option<String>,
    /// Runs first, with `$p` set: may `exit 0` (nothing left to do) or `die`.
    pub check: Script,
    /// Makes the missing folder (mode 0750) instead of failing.
    pub make_folder: bool,
    /// A symlink at the path is replaced by the file (the link backed up, its target left
    /// alone), and only a folder there is refused; otherwise anything but a regular file is.
    pub replace_link: bool,
}

impl Write<'_> {
    pub(super) fn script(&self) -> Script {
        let mut s = Script::new()
            .raw("p=")
            .arg(self.path)
            .raw("\nd=")
            .arg(parent(self.path).unwrap_or("/"))
            .raw("\n")
            .raw(TEMP_TRAP);
        s = s.raw(if self.make_folder {
            "[ -d \"$d\" ] || { mkdir -p \"$d\" && chmod 0750 \"$d\"; } || \
             die \"cannot create the folder $d\"\n"
        } else {
            "[ -d \"$d\" ] || die \"cannot write $p: its folder $d does not exist \
             (add a directory step for it before this step)\"\n"
        });
        s = s
            .raw(if self.replace_link {
                "if [ -d \"$p\" ]; then die \"$p is a folder (or a symlink to one), not a file: \
                 not replacing it\"; fi\n"
            } else {
                "if [ -L \"$p\" ] || { [ -e \"$p\" ] && [ ! -f \"$p\" ]; }; then \
                 die \"$p is no longer a regular file; not replacing it\"; fi\n"
            })
            .then(self.check.clone());
        if let Some(b) = &self.backup {
            s = s.then(backup_script(b, "cp -pP", false));
        }
        s = s
            .then(write_temp(self.content))
            .raw("old=\nif [ -f \"$p\" ] && [ ! -L \"$p\" ]; then old=1; fi\n");
        s = match &self.perms.owner {
            Some(o) => s.raw("chown ").arg(o).raw(" \"$t\""),
            None => s.raw("[ -z \"$old\" ] || chown \"$(stat -c %u \"$p\")\" \"$t\""),
        }
        .raw(" || die \"cannot set the owner of $t\"\n");
        s = match &self.perms.group {
            Some(g) => s.raw("chgrp ").arg(g).raw(" \"$t\""),
            None => s.raw("[ -z \"$old\" ] || chgrp \"$(stat -c %g \"$p\")\" \"$t\""),
        }
        .raw(" || die \"cannot set the group of $t\"\n");
        s = match self.perms.mode {
            Some(m) => s.raw("chmod ").arg(&octal(m)).raw(" \"$t\""),
            None => s
                .raw("if [ -n \"$old\" ]; then chmod \"$(stat -c %a \"$p\")\" \"$t\"; else chmod ")
                .arg(&octal(self.new_mode))
                .raw(" \"$t\"; fi"),
        }
        .raw(" || die \"cannot set the mode of $t\"\n");
        s.raw(RENAME_TEMP)
    }
}
