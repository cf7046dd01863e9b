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
//!
//! ## Folders that root does not control
//!
//! The agent's account is the attacker, and it owns its folders: it can swap any name in them
//! for a symbolic link, a hard link or another file at any moment. So every script that changes
//! a path first walks to its folder with `WALK`'s `rw_cd`, one part at a time from `/`,
//! entering each folder with `cd -P` and checking that the physical path is the one asked
//! for; after that, the script works on names relative to the folder it stands in, so a part
//! swapped later changes nothing. The walk follows a symbolic link only when root owns it in
//! a folder that only root controls (`/var/run`); any other link on the way, or at the path
//! itself, is refused with a message that names it, and the probes print it as
//! `kind unsafe <base64 message>` (the step fails, `drift` adds an `fs.symlink` finding).
//! The walk also tells who controls the names in that folder (`u`: 0 for root, else the owner
//! of the first folder on the way that root does not own). In a folder another account
//! controls, root writes nothing itself: the check, the backup's read and the write (temporary
//! file, group, mode, rename) run **as that account** (`runuser`), so a race wins the account
//! nothing it did not have; a file there that must belong to someone else (root) is refused,
//! since root cannot keep a file safely in a folder another account can rename.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;
use sha1::{Digest as _, Sha1};

use super::kit::DIE;
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

/// The probe of the file at `path`: see above. A symlink is reported, not followed; one
/// planted on the way, or at the path in a folder root does not control, is `kind unsafe`.
pub(super) fn probe_file(path: &str) -> Script {
    guarded_probe(path, true).raw(
        "if [ -L \"$p\" ]; then echo 'kind link'\n\
         elif [ -d \"$p\" ]; then echo 'kind dir'\n\
         elif [ -f \"$p\" ]; then\n\
         \x20 echo 'kind file'\n\
         \x20 stat -c 'stat %U %u %G %g %a %s' \"$p\" || exit 1\n\
         \x20 if [ \"$(stat -c %s \"$p\")\" -le 1048576 ]; then\n\
         \x20   echo content; rw_as base64 -- \"$p\" && echo end\n\
         \x20 else echo large; fi\n\
         elif [ -e \"$p\" ]; then echo 'kind other'\n\
         else echo 'kind none'; fi\nfi\n)\n",
    )
}

/// The opening of a probe of `path` (a subshell, closed by the caller with `fi\n)\n`):
/// `$p` set, the walk to its folder (`rw_guard`), and `if ...; then` for the rest of the probe,
/// which sees `$p` relative to the folder the walk reached. `link_unsafe`: a symbolic link at
/// the path itself is refused where root must not follow it.
pub(super) fn guarded_probe(path: &str, link_unsafe: bool) -> Script {
    guarded(
        path,
        parent(path).unwrap_or("/"),
        name_of(path),
        link_unsafe,
    )
}

/// [`guarded_probe`] of a folder: the walk goes into the folder itself, so a link at the path
/// is followed only where root may follow it, and `$p` becomes `./.`.
pub(super) fn guarded_probe_folder(path: &str) -> Script {
    guarded(path, path, ".", false)
}

fn guarded(path: &str, dir: &str, name: &str, link_unsafe: bool) -> Script {
    Script::new()
        .raw("(\np=")
        .arg(path)
        .raw("\nu=0\n")
        .raw(WALK)
        .raw("if rw_guard ")
        .arg(dir)
        .raw(" ")
        .arg(name)
        .raw(if link_unsafe { " 1" } else { " 0" })
        .raw("; then\n")
}

/// The probe's refusal: `kind unsafe <base64 message>` on the first line of `out`, as a
/// [`ProbeError`](super::ProbeError) that says why (and not the probe's output). `Ok` else.
pub(super) fn refusal(out: &str) -> Result<(), super::ProbeError> {
    let Some(b64) = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("kind unsafe "))
    else {
        return Ok(());
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| format!("an unsafe path (unreadable message {b64:?})"));
    Err(super::ProbeError::new(
        crate::untrusted::escape_name(&text).into_owned(),
        "",
    ))
}

/// The last part of `path` (`motd` for `/etc/motd`); `.` for `/`.
pub(super) fn name_of(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((_, "")) | None => ".",
        Some((_, name)) => name,
    }
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
        Some(l) if l.starts_with("kind unsafe ") => {
            return Err(refusal(l).err().map(|e| e.message).unwrap_or_default());
        }
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

crate::fields! {
    /// Owner, group and mode: fields of every type that writes a file or folder (each type's
    /// own field enum holds them, and may show them under other names).
    pub enum PermField {
        Owner = "owner",
        Group = "group",
        Mode = "mode",
    }
}

/// A type's field that may be an owner, group or mode change.
pub(super) trait AsPerm {
    fn perm(&self) -> Option<PermField>;
}

/// The owner, group and mode fields among `changes`.
pub(super) fn perm_fields<F: AsPerm>(changes: &[Change<F>]) -> Vec<PermField> {
    changes.iter().filter_map(|c| c.field.perm()).collect()
}

/// Owner, group and mode as wanted; `None`: left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Perms {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
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
        })
    }

    /// The changes against what is there (`None`: nothing yet). `new_mode`: the mode a new
    /// path gets when no mode is wanted, shown in a create.
    pub(super) fn changes<F: From<PermField>>(
        &self,
        meta: Option<&Meta>,
        new_mode: Option<u32>,
    ) -> Vec<Change<F>> {
        let mut out = Vec::new();
        if let Some(o) = &self.owner
            && !meta.is_some_and(|m| m.owner_matches(o))
        {
            out.push(Change::of(
                PermField::Owner.into(),
                meta.map(Meta::owner_shown),
                Some(o.clone()),
            ));
        }
        if let Some(g) = &self.group
            && !meta.is_some_and(|m| m.group_matches(g))
        {
            out.push(Change::of(
                PermField::Group.into(),
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
            out.push(Change::of(
                PermField::Mode.into(),
                meta.map(|m| octal(m.mode)),
                Some(octal(want)),
            ));
        }
        out
    }

    /// chown/chgrp/chmod of the shell word `at` (`"$f"`, `.`), in place: only the fields
    /// in `changed`, and the mode again after a chown (which may clear set-id bits).
    /// Messages name `$p`.
    pub(super) fn apply_in_place(&self, changed: &[PermField], at: &str) -> Script {
        self.in_place(|f| changed.contains(&f), at)
    }

    /// The apply of owner, group and mode changes alone, to the regular file at `path`: in
    /// place, after the walk to its folder, refusing a path that is no longer a regular file.
    /// In a folder another account controls the changes are made as that account, and a
    /// change of owner is refused (root would have to chown a name the account can swap).
    pub(super) fn apply_to_file(&self, path: &str, changed: &[PermField]) -> Script {
        let inner = Script::new()
            .raw(DIE)
            .raw(
                "f=$1 p=$2\n{ [ -f \"$f\" ] && [ ! -L \"$f\" ]; } || \
                 die \"$p is no longer a regular file; run again\"\n",
            )
            .then(self.apply_in_place(changed, "\"$f\""));
        let owner_change = changed.contains(&PermField::Owner);
        let mut s = walk_to_folder(path, false).raw(
            "{ [ -f \"$f\" ] && [ ! -L \"$f\" ]; } || \
             die \"$p is no longer a regular file; run again\"\n\
             if [ \"$u\" != 0 ] && [ \"$rw_me\" = 0 ]; then\n",
        );
        if owner_change {
            s = s.raw(
                "  die \"refusing to change the owner of $p: its folder is controlled by \
                 $(rw_name \"$u\"), who could swap the file for a link to another one at any \
                 moment. hint: remove it (an absent step, or by hand) and run again: it is then \
                 written anew as that account\"\n",
            );
        } else {
            s = s
                .raw(AS_OWNER_NAME)
                .raw("  runuser -u \"$un\" -- /bin/sh -c ")
                .script_arg(inner.clone())
                .raw(" rampart-perms \"$f\" \"$p\" || exit 1\n");
        }
        apply_script(
            s.raw("else\n")
                .then(self.apply_in_place(changed, "\"$f\""))
                .raw("fi\n"),
        )
    }

    /// chown/chgrp/chmod of `at` to every wanted field, whatever it is now.
    pub(super) fn apply_all_in_place(&self, at: &str) -> Script {
        self.in_place(|_| true, at)
    }

    fn in_place(&self, changed: impl Fn(PermField) -> bool, at: &str) -> Script {
        let mut s = Script::new();
        let mut chowned = false;
        if let Some(o) = self.owner.as_deref().filter(|_| changed(PermField::Owner)) {
            s = s
                .raw("chown ")
                .arg(o)
                .raw(" ")
                .raw(at)
                .raw(" || die \"cannot change the owner of $p\"\n");
            chowned = true;
        }
        if let Some(g) = self.group.as_deref().filter(|_| changed(PermField::Group)) {
            s = s
                .raw("chgrp ")
                .arg(g)
                .raw(" ")
                .raw(at)
                .raw(" || die \"cannot change the group of $p\"\n");
            chowned = true;
        }
        if let Some(m) = self.mode.filter(|_| changed(PermField::Mode) || chowned) {
            s = s
                .raw("chmod ")
                .arg(&octal(m))
                .raw(" ")
                .raw(at)
                .raw(" || die \"cannot change the mode of $p\"\n");
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

/// Shell functions of the walk to a folder (see the module doc), for probes and applies:
///
/// - `rw_cd DIR MK`: enters the folder DIR one part at a time from `/` (`cd -P`, then the
///   physical path checked), never following a symbolic link that anyone but root could have
///   made (`rw_planted`). Sets `u`, the uid that controls the names in the folder reached (0:
///   only root can rename them; else the owner of the first folder on the way that root does
///   not own), and `pu`, the same for the folder above it. A link root owns in a folder only
///   root controls is followed, and the walk starts again from its physical target. Returns
///   1 with `rw_err` (and `rw_link`, `rw_to`: a planted link and its target), 2 when a part
///   is missing (MK=1: made instead, mode `$rw_mkmode` or 0755, given to `u`), 3 when a part
///   is not a folder.
/// - `rw_planted NAME`: the link NAME in the working folder may be followed; else `rw_err`.
/// - `rw_guard DIR NAME LINK`: a probe's walk: prints `kind unsafe <base64 message>` and
///   fails when the way is not safe, or (LINK=1) when NAME is a link root must not follow;
///   else sets `p` to `./NAME` when the folder was reached.
/// - `rw_as CMD...`: runs CMD as the account `u` when it is not root and the script runs as
///   root (a probe reads a file there as its owner: a link swapped in at the last moment
///   then shows the probe nothing that account could not read itself), else as is.
/// - `rw_name UID`: `NAME (uid UID)` for messages.
/// - `rw_give UID`: the working folder given to UID and its login group.
///
/// Builtins only, except a `stat` where a folder root does not own is met and at links: the
/// probe stays cheap.
pub(crate) const WALK: &str = r#"rw_me=$(id -u)
rw_name() { rw_n=$(getent passwd "$1" 2>/dev/null | cut -d: -f1); if [ -n "$rw_n" ]; then printf '%s (uid %s)' "$rw_n" "$1"; else printf 'uid %s' "$1"; fi; }
rw_give() { chown "$1" . && { rw_g=$(getent passwd "$1" | cut -d: -f4); [ -z "$rw_g" ] || chgrp "$rw_g" .; }; }
rw_planted() {
  rw_lu=$(stat -c %u -- "$1" 2>/dev/null) || rw_lu=unknown
  if [ "$u" = 0 ] && [ "$rw_lu" = 0 ]; then return 0; fi
  rw_link=${PWD%/}/$1 rw_to=$(readlink -- "$1")
  if [ "$u" != 0 ]; then rw_by="in a folder that $(rw_name "$u") controls"; else rw_by="owned by $(rw_name "$rw_lu")"; fi
  rw_err="refusing to follow $rw_link: it is a symbolic link (to $rw_to) $rw_by, and root never follows a link someone else could have planted. hint: find out who made it (a compromised agent?), remove it, then run again"
  return 1
}
rw_cd() {
  rw_rest=${1#/} rw_hops=0 u=0 pu=0 rw_link= rw_to=
  cd / || { rw_err="cannot enter /"; return 1; }
  while [ -n "$rw_rest" ]; do
    rw_c=${rw_rest%%/*}
    case $rw_rest in */*) rw_rest=${rw_rest#*/} ;; *) rw_rest= ;; esac
    rw_want=${PWD%/}/$rw_c rw_made=
    if [ -L "$rw_c" ]; then
      rw_planted "$rw_c" || return 1
    elif [ ! -e "$rw_c" ]; then
      if [ "$2" != 1 ]; then rw_err="$rw_want does not exist"; return 2; fi
      mkdir -m "${rw_mkmode:-0755}" -- "$rw_c" || { rw_err="cannot create the folder $rw_want"; return 1; }
      rw_made=1
    fi
    cd -P -- "$rw_c" 2>/dev/null || { rw_err="$rw_want is not a folder"; return 3; }
    if [ "$PWD" != "$rw_want" ]; then
      if [ "$u" != 0 ]; then rw_link=$rw_want rw_to=$PWD; rw_err="refusing to follow $rw_want: it became a symbolic link (to $PWD) while rampart walked to it, in a folder that $(rw_name "$u") controls. hint: find out who made it, remove it, then run again"; return 1; fi
      rw_hops=$((rw_hops + 1))
      [ "$rw_hops" -le 20 ] || { rw_err="too many symbolic links on the way to $1"; return 1; }
      rw_rest=${PWD#/}${rw_rest:+/$rw_rest}
      cd / || return 1
      continue
    fi
    if [ -n "$rw_made" ] && [ "$u" != 0 ] && [ "$rw_me" = 0 ]; then rw_give "$u" || { rw_err="cannot give $rw_want to uid $u"; return 1; }; fi
    pu=$u
    if [ "$u" = 0 ] && ! { [ "$rw_me" = 0 ] && [ -O . ]; }; then
      rw_o=$(stat -c %u .) || { rw_err="cannot stat $rw_want"; return 1; }
      [ "$rw_o" = 0 ] || u=$rw_o
    fi
  done
}
rw_as() {
  if [ "$u" != 0 ] && [ "$rw_me" = 0 ]; then runuser -u "$(getent passwd "$u" | cut -d: -f1)" -- "$@"; else "$@"; fi
}
rw_guard() {
  rw_cd "$1" 0
  case $? in
    0) if [ "$3" != 1 ] || [ ! -L "$2" ] || rw_planted "$2"; then p=./$2; return 0; fi ;;
    1) ;;
    *) return 0 ;;
  esac
  printf 'kind unsafe %s\n' "$(printf '%s' "$rw_err" | base64 | tr -d '\n')"
  return 1
}
"#;

/// Shell text (with `die`) setting `p` to `path`, `d` to its folder, `n` to its name, walking
/// to the folder (`rw_cd`; `make`: missing folders are made) and setting `f` to `./NAME`:
/// after it the script works on `"$f"` in the folder it stands in, and names `$p` in messages.
pub(super) fn walk_to_folder(path: &str, make: bool) -> Script {
    Script::new()
        .raw("p=")
        .arg(path)
        .raw("\nd=")
        .arg(parent(path).unwrap_or("/"))
        .raw("\nn=")
        .arg(name_of(path))
        .raw("\nf=./$n\n")
        .raw(WALK)
        .raw(if make {
            "rw_cd \"$d\" 1\n"
        } else {
            "rw_cd \"$d\" 0\n"
        })
        .raw(
            "case $? in\n\
             \x20 0) ;;\n\
             \x20 2) die \"cannot write $p: its folder $d does not exist (add a directory step \
             for it before this step)\" ;;\n\
             \x20 *) die \"cannot change $p: $rw_err\" ;;\n\
             esac\n",
        )
}

/// Shell text (inside `if ...; then`) setting `un` to the name of the account `$u`, or dying.
pub(super) const AS_OWNER_NAME: &str = "  un=$(getent passwd \"$u\" | cut -d: -f1)\n\
  [ -n \"$un\" ] || die \"cannot change $p: its folder belongs to uid $u, which has no account \
to act as; root does not write there\"\n\
  command -v runuser >/dev/null || die \"cannot change $p: runuser (util-linux) is needed to \
write as $un\"\n";

/// Run as the account that controls the folder (`sh -c THIS rampart-write F P MODE GROUP
/// NEWMODE`, the content in base64 on stdin, the folder as working folder): the atomic write
/// of `F` (`./NAME`; `P` names it in messages). MODE, GROUP: wanted, or empty to keep the
/// old file's (else NEWMODE and the account's own group).
const WRITE_AS_OWNER: &str = r#"f=$1 p=$2 mode=$3 grp=$4 newmode=$5
umask 077
if [ -L "$f" ] || { [ -e "$f" ] && [ ! -f "$f" ]; }; then die "$p is no longer a regular file; not replacing it"; fi
t=
trap '[ -z "$t" ] || rm -f "$t"' EXIT
t=$(mktemp ./.rampart.XXXXXX) || die "cannot create a temporary file beside $p as $(id -un)"
base64 -d >"$t" || die "cannot write the temporary file $t beside $p"
old=
if [ -f "$f" ] && [ ! -L "$f" ]; then old=1; fi
if [ -n "$grp" ]; then chgrp -- "$grp" "$t" || die "cannot give $p to group $grp as $(id -un) (not one of its groups?)"
elif [ -n "$old" ]; then chgrp -- "$(stat -c %g -- "$f")" "$t" || die "cannot keep the group of $p as $(id -un)"; fi
if [ -n "$mode" ]; then chmod -- "$mode" "$t"; elif [ -n "$old" ]; then chmod -- "$(stat -c %a -- "$f")" "$t"; else chmod -- "$newmode" "$t"; fi || die "cannot set the mode of $p"
mv -f -- "$t" "$f" || die "cannot rename $t to $p"
t=
"#;

/// Where the backup of `path` goes in this run.
pub(super) fn backup_path(ctx: &ApplyContext, path: &str) -> String {
    format!("{}{path}", ctx.backup_dir())
}

/// Copies what is at `$f` (if anything; `$p` names it in messages) to `backup` with `copy`
/// (`cp -pP`, `cp -a`), unless this run already holds a backup of it: the first copy in a
/// run is the state before the run. `merge`: when `$f` is a folder and an earlier step of this run already backed up files
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
            "  if [ -d \"$f\" ] && [ ! -L \"$f\" ] && [ -d \"$b\" ] && [ ! -L \"$b\" ]; then\n\
             \x20   m=$(mktemp -d \"$bd/.rampart.XXXXXX\") || die \"cannot create a folder in $bd\"\n\
             \x20   { cp -a \"$f\" \"$m/d\" && ( cd \"$b\" && find . ! -type d -exec sh -c \
             'for f do mkdir -p \"$0/${f%/*}\" && cp -pP \"$f\" \"$0/$f\" || exit 1; done' \
             \"$m/d\" {} + ) && rm -rf \"$b\" && mv \"$m/d\" \"$b\" && rmdir \"$m\"; } || \
             die \"cannot back up $p to $b\"\n\
             \x20 fi\n",
        )
    } else {
        s
    };
    s.raw(
        "elif [ -e \"$f\" ] || [ -L \"$f\" ]; then\n\
         \x20 mkdir -p \"$bd\" || die \"cannot create the backup folder $bd\"\n  ",
    )
    .raw(copy)
    .raw(" \"$f\" \"$b\" || die \"cannot back up $p to $b\"\nfi\n")
}

/// Shell text that clears `$t` and removes the temporary file it names on exit.
pub(super) const TEMP_TRAP: &str = "t=\ntrap '[ -z \"$t\" ] || rm -f \"$t\"' EXIT\n";

/// Sets `$t` to a new temporary file in the folder `$d`, holding `content`.
pub(super) fn write_temp(content: &[u8]) -> Script {
    write_temp_in("\"$d\"", content)
}

/// [`write_temp`] in the folder named by the shell word `dir` (`.`: the working folder).
fn write_temp_in(dir: &str, content: &[u8]) -> Script {
    Script::new()
        .raw("t=$(mktemp ")
        .raw(dir)
        .raw(
            "/.rampart.XXXXXX) || die \"cannot create a temporary file beside $p\"\n\
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
    /// The write: the walk to the folder, the checks of what is at the path, then either
    /// root's write or, in a folder another account controls, the same as that account.
    pub(super) fn script(&self) -> Script {
        let mut s = walk_to_folder(self.path, self.make_folder);
        if self.make_folder {
            s = Script::new().raw("rw_mkmode=0750\n").then(s);
        }
        s = s.raw(TEMP_TRAP).raw(
            "if [ -L \"$f\" ] && ! rw_planted \"$n\"; then die \"cannot write $p: $rw_err\"; fi\n",
        );
        s = s.raw(if self.replace_link {
            "if [ -d \"$f\" ]; then die \"$p is a folder (or a symlink to one), not a file: \
             not replacing it\"; fi\n"
        } else {
            "if [ -L \"$f\" ] || { [ -e \"$f\" ] && [ ! -f \"$f\" ]; }; then \
             die \"$p is no longer a regular file; not replacing it\"; fi\n"
        });
        s.raw("if [ \"$u\" != 0 ] && [ \"$rw_me\" = 0 ]; then\n")
            .then(self.as_owner())
            .raw("else\n")
            .then(self.as_root())
            .raw("fi\n")
    }

    /// Root's own write, in a folder only root controls (or by an account writing its own).
    fn as_root(&self) -> Script {
        let mut s = self.check.clone();
        if let Some(b) = &self.backup {
            s = s.then(backup_script(b, "cp -pP", false));
        }
        s = s
            .then(write_temp_in(".", self.content))
            .raw("old=\nif [ -f \"$f\" ] && [ ! -L \"$f\" ]; then old=1; fi\n");
        s = match &self.perms.owner {
            Some(o) => s.raw("chown ").arg(o).raw(" \"$t\""),
            None => s.raw("[ -z \"$old\" ] || chown \"$(stat -c %u -- \"$f\")\" \"$t\""),
        }
        .raw(" || die \"cannot set the owner of $t\"\n");
        s = match &self.perms.group {
            Some(g) => s.raw("chgrp ").arg(g).raw(" \"$t\""),
            None => s.raw("[ -z \"$old\" ] || chgrp \"$(stat -c %g -- \"$f\")\" \"$t\""),
        }
        .raw(" || die \"cannot set the group of $t\"\n");
        s = match self.perms.mode {
            Some(m) => s.raw("chmod ").arg(&octal(m)).raw(" \"$t\""),
            None => s
                .raw(
                    "if [ -n \"$old\" ]; then chmod \"$(stat -c %a -- \"$f\")\" \"$t\"; \
                     else chmod ",
                )
                .arg(&octal(self.new_mode))
                .raw(" \"$t\"; fi"),
        }
        .raw(" || die \"cannot set the mode of $t\"\n");
        s.raw("mv -f \"$t\" \"$f\" || die \"cannot rename $t to $p\"\nt=\n")
    }

    /// The write as the account `$u` that controls the folder: the file must be (or become)
    /// that account's; the check, the backup's read and the write run as it.
    fn as_owner(&self) -> Script {
        let mut s = Script::new().raw(AS_OWNER_NAME);
        s = match &self.perms.owner {
            Some(o) => s
                .raw("  wu=$(id -u ")
                .arg(o)
                .raw(
                    " 2>/dev/null) || wu=\n\
                 \x20 [ \"$wu\" = \"$u\" ] || die \"refusing to write $p for owner ",
                )
                .arg(o)
                .raw(
                    ": its folder is controlled by $(rw_name \"$u\"), who can rename or swap the \
                 file at any moment, so root cannot keep a file of someone else's there safely. \
                 hint: give the step owner: $un, or keep the file in a folder only root \
                 controls\"\n",
                ),
            None => s.raw(
                "  if [ -e \"$f\" ] && [ \"$(stat -c %u -- \"$f\")\" != \"$u\" ]; then\n\
                 \x20   die \"refusing to rewrite $p: it belongs to $(rw_name \"$(stat -c %u -- \
                 \"$f\")\") but its folder is controlled by $(rw_name \"$u\"), who can swap it \
                 at any moment, so root cannot keep it there safely. hint: give the step \
                 owner: $un, or move the file to a folder only root controls\"\n\
                 \x20 fi\n",
            ),
        };
        if self.check != Script::new() {
            // The check may end the apply (`exit 0`: nothing left to do) or fail it.
            let inner = Script::new()
                .raw(DIE)
                .raw("f=$1 p=$2\n")
                .then(self.check.clone())
                .raw("echo rampart-go\n");
            s = s
                .raw("  go=$(runuser -u \"$un\" -- /bin/sh -c ")
                .script_arg(inner)
                .raw(" rampart-check \"$f\" \"$p\") || exit 1\n  [ \"$go\" = rampart-go ] || exit 0\n");
        }
        if let Some(b) = &self.backup {
            s = s.raw("  b=").arg(b).raw("\n  bd=").arg(parent(b).unwrap_or("/")).raw(
                "\n  if [ ! -e \"$b\" ] && [ ! -L \"$b\" ] && [ -f \"$f\" ]; then\n\
                 \x20   mkdir -p \"$bd\" || die \"cannot create the backup folder $bd\"\n\
                 \x20   bt=$(mktemp \"$bd/.rampart.XXXXXX\") || die \"cannot create a file in $bd\"\n\
                 \x20   if ! runuser -u \"$un\" -- cat -- \"$f\" >\"$bt\"; then rm -f \"$bt\"; \
                 die \"cannot read $p as $un to back it up\"; fi\n\
                 \x20   bm=$(stat -c '%g %a' -- \"$f\") && chown \"$u:${bm% *}\" \"$bt\" && \
                 chmod \"$(printf '%o' $((0${bm#* } & 0777)))\" \"$bt\" && mv -f \"$bt\" \"$b\" || \
                 { rm -f \"$bt\"; die \"cannot back up $p to $b\"; }\n\
                 \x20 fi\n",
            );
        }
        let inner = Script::new().raw(DIE).raw(WRITE_AS_OWNER);
        s.raw("  runuser -u \"$un\" -- /bin/sh -c ")
            .script_arg(inner)
            .raw(" rampart-write \"$f\" \"$p\" ")
            .arg(&self.perms.mode.map(octal).unwrap_or_default())
            .raw(" ")
            .arg(self.perms.group.as_deref().unwrap_or(""))
            .raw(" ")
            .arg(&octal(self.new_mode))
            .raw(" ")
            .payload(self.content)
            .raw("  [ $? -eq 0 ] || exit 1\n")
    }
}
