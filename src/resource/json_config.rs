//! json_config: settings deep-merged into a JSON config file (the agent gateway's
//! `openclaw.json`, say), the file's owner, group and mode. Also the atomic file writer that
//! `audit_rules` shares.
//!
//! `settings` is a JSON object merged into the file's top-level object: keys in the file but
//! not in `settings` stay as they are; an object in `settings` merges into the object at the
//! same key, recursively; every other value (arrays, strings, numbers, booleans, null)
//! replaces what is there. No key is ever removed (a `file` step owns a whole file). A missing
//! file is created from `settings` alone (unless `create: false`), with mode 0600 when no
//! `mode` is given: such files hold tokens. An empty file counts as `{}`.
//!
//! `format: json5` reads JSON5 (comments, trailing commas, unquoted keys, single quotes,
//! hex numbers), as the agent's own config may be written. A file is compared by value, not
//! by text, so a file whose values already match is left alone, comments and all; but when a
//! value has to change the file is written back as pretty-printed JSON (two-space indent, the
//! keys in their order, new keys last): **comments and JSON5 formatting are not preserved**.
//! `NaN`/`Infinity` (JSON5 only) cannot be written as JSON and come back as `null`.
//!
//! ## Changes
//!
//! One [`Change`] per leaf that differs, named by its key path (`gateway.bind`,
//! `exec.allow[0]`, `models["gpt-4.1"]`), values shown raw: a string as its text, without
//! quotes or JSON escapes (so a secret is shown exactly as it is and the report's masking by
//! value finds it), other values as JSON (`8080`, `true`, `null`, `{}`, `[]`). A value that
//! changes kind shows the old leaves going (`-> (absent)`) and the new ones coming
//! (`(absent) ->`). When a string and a non-string would show the same (`"8080"` and `8080`),
//! both sides name their kind. The file's owner, group and mode are `file owner`,
//! `file group` and `file mode`: a key path never contains a space, so they cannot clash.
//!
//! The new document is worked out by the diff and kept (by verdict) for the apply, so it
//! never appears in a [`Change`]: its JSON text escapes strings, which would hide a secret
//! holding `"` or `\` from masking. Error messages give a line and column, never the text.
//!
//! ## Probe output
//!
//! ```text
//! kind none|file|dir|link|other
//! stat <owner> <uid> <group> <gid> <octal mode> <size>     (kind file)
//! content                                                   (kind file, at most 1 MiB)
//! <base64 of the whole content, in lines>
//! end
//! large                                                     (kind file, larger)
//! ```
//!
//! The file is written atomically: a temporary file in the same folder gets the content, the
//! owner, group and mode, and is renamed over the path; the old file is first copied to
//! [`ApplyContext::backup_dir`] under its full path (the first copy in a run wins). The apply
//! refuses a file that changed since the probe ("run again") and does nothing to a file that
//! already holds the new document (a rerun).

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha1::{Digest as _, Sha1};

use super::file::{check_name, octal, parse_mode};
use super::{ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Verdict, params};
use crate::remote::Script;

pub const JSON_CONFIG: TypeInfo = TypeInfo {
    name: "json_config",
    params: &[
        "path", "settings", "owner", "group", "mode", "create", "format",
    ],
    build: |v| {
        Ok(Box::new(JsonConfig::try_from(params::<JsonConfigParams>(
            v,
        )?)?))
    },
};

/// Files up to this size come back whole in the probe; larger ones are refused.
const MAX_CONTENT: u64 = 1024 * 1024;

/// How many planned documents a resource keeps for its applies.
const PLANS_KEPT: usize = 8;

fn yes() -> bool {
    true
}

/// How the file is read. It is always written as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Json5,
}

/// `json_config` as written in the playbook (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfigParams {
    pub path: String,
    pub settings: Value,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// A string of octal digits (`"0600"`); a YAML number is refused.
    pub mode: Option<Value>,
    #[serde(default = "yes")]
    pub create: bool,
    #[serde(default)]
    pub format: Format,
}

/// `json_config`: settings merged into a JSON file.
pub struct JsonConfig {
    pub path: String,
    pub settings: Map<String, Value>,
    perms: Perms,
    pub create: bool,
    pub format: Format,
    /// What recent diffs planned, newest last: the apply gets only the verdict.
    plans: Mutex<Vec<Plan>>,
}

/// The document a diff worked out, for the apply of the same verdict.
#[derive(Clone)]
struct Plan {
    changes: Vec<Change>,
    /// SHA-1 of the file as probed; `None`: there was no file.
    old_sha1: Option<String>,
    /// The new file, when its content changes.
    new: Option<Vec<u8>>,
}

impl std::fmt::Debug for JsonConfig {
    /// Never the settings' values nor the planned document: they may hold secrets, and
    /// `{:?}` escapes strings, which masking by value would not find.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonConfig")
            .field("path", &self.path)
            .field("settings", &format_args!("<{} keys>", self.settings.len()))
            .field("perms", &self.perms)
            .field("create", &self.create)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl TryFrom<JsonConfigParams> for JsonConfig {
    type Error = ParamError;
    fn try_from(p: JsonConfigParams) -> Result<JsonConfig, ParamError> {
        check_file_path("json_config", &p.path)?;
        let Value::Object(settings) = p.settings else {
            return Err(ParamError(format!(
                "json_config: settings must be a mapping of keys to values (merged into the \
                 file's top-level object), found {}",
                kind_of(&p.settings)
            )));
        };
        Ok(JsonConfig {
            perms: Perms::from_params("json_config", p.owner, p.group, &p.mode)?,
            path: p.path,
            settings,
            create: p.create,
            format: p.format,
            plans: Mutex::new(Vec::new()),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Parameter checks, shared with audit_rules.

/// An absolute path to a file, in plain form: no `.` or `..` parts, no `//`, no trailing `/`.
pub(super) fn check_file_path(ty: &str, path: &str) -> Result<(), ParamError> {
    let bad = |why: &str| Err(ParamError(format!("{ty}: path {path:?} {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute (it must start with /)");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path == "/" {
        return bad("is the root folder, not a file");
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

pub(super) fn sha1_hex(data: &[u8]) -> String {
    format!("{:x}", Sha1::digest(data))
}

/// A path for messages: as is, or escaped when it holds control characters.
pub(super) fn shown(path: &str) -> String {
    if path.chars().any(char::is_control) {
        format!("{path:?}")
    } else {
        path.to_string()
    }
}

fn parent(path: &str) -> &str {
    Path::new(path)
        .parent()
        .and_then(Path::to_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
}

// ---------------------------------------------------------------------------------------
// Probe and parse of one file, shared with audit_rules.

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FileKind {
    None,
    File,
    Dir,
    Link,
    Other,
}

/// Owner, group, mode and size, from `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    owner: String,
    uid: u32,
    group: String,
    gid: u32,
    mode: u32,
    size: u64,
}

impl Meta {
    fn shown(name: &str, id: u32) -> String {
        if name == "UNKNOWN" {
            id.to_string()
        } else {
            name.to_string()
        }
    }
}

/// A file as a probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileState {
    pub kind: FileKind,
    pub meta: Option<Meta>,
    /// The content of a regular file of at most [`MAX_CONTENT`] bytes.
    pub content: Option<Vec<u8>>,
    /// A regular file larger than [`MAX_CONTENT`].
    pub large: bool,
}

/// The probe of the file at `path`: see the module doc. A symlink is reported, not followed.
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

/// Reads the lines [`probe_file`] printed from `lines`, leaving what follows. Errors are
/// plain messages, for a [`ProbeError`].
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
        Some("content") => {
            let mut text = String::new();
            let mut ended = false;
            for l in lines.by_ref() {
                if l == "end" {
                    ended = true;
                    break;
                }
                text.push_str(l.trim());
            }
            if !ended {
                return Err(
                    "the content has no `end` line (the file could not be read whole)".into(),
                );
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map_err(|e| format!("the content is not base64: {e}"))?;
            state.content = Some(bytes);
        }
        other => return Err(format!("expected `content` or `large`, found {other:?}")),
    }
    Ok(state)
}

fn parse_stat(rest: &str) -> Option<Meta> {
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
// Owner, group and mode.

/// Owner, group and mode as wanted; `None`: left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Perms {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
}

const OWNER: &str = "file owner";
const GROUP: &str = "file group";
const MODE: &str = "file mode";

impl Perms {
    fn from_params(
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

    /// The changes against `meta` (`None`: no file yet, which gets `new_mode` unless a mode
    /// is wanted).
    pub(super) fn changes(&self, meta: Option<&Meta>, new_mode: u32) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(o) = &self.owner
            && !meta.is_some_and(|m| *o == m.owner || *o == m.uid.to_string())
        {
            out.push(Change::new(
                OWNER,
                meta.map(|m| Meta::shown(&m.owner, m.uid)),
                Some(o.clone()),
            ));
        }
        if let Some(g) = &self.group
            && !meta.is_some_and(|m| *g == m.group || *g == m.gid.to_string())
        {
            out.push(Change::new(
                GROUP,
                meta.map(|m| Meta::shown(&m.group, m.gid)),
                Some(g.clone()),
            ));
        }
        let want = match meta {
            None => Some(self.mode.unwrap_or(new_mode)),
            Some(_) => self.mode,
        };
        if let Some(want) = want
            && meta.is_none_or(|m| m.mode != want)
        {
            out.push(Change::new(
                MODE,
                meta.map(|m| octal(m.mode)),
                Some(octal(want)),
            ));
        }
        out
    }

    /// chown/chgrp/chmod of `$p` in place: the fields that `changes` name, and the mode again
    /// after a chown (which may clear set-id bits).
    fn apply_in_place(&self, changes: &[Change]) -> Script {
        let changed = |f: &str| changes.iter().any(|c| c.field == f);
        let mut s = Script::new();
        let mut chowned = false;
        if let Some(o) = self.owner.as_deref().filter(|_| changed(OWNER)) {
            s = s
                .raw("chown ")
                .arg(o)
                .raw(" \"$p\" || die \"cannot change the owner of $p\"\n");
            chowned = true;
        }
        if let Some(g) = self.group.as_deref().filter(|_| changed(GROUP)) {
            s = s
                .raw("chgrp ")
                .arg(g)
                .raw(" \"$p\" || die \"cannot change the group of $p\"\n");
            chowned = true;
        }
        if let Some(m) = self.mode.filter(|_| changed(MODE) || chowned) {
            s = s
                .raw("chmod ")
                .arg(&octal(m))
                .raw(" \"$p\" || die \"cannot change the mode of $p\"\n");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Writing, shared with audit_rules.

/// An apply body in a subshell with `die`, umask 077 (backup folders 0700, temporary files
/// 0600), and a failure passed on to the calling script.
pub(super) fn apply_script(body: Script) -> Script {
    Script::new()
        .raw("(\numask 077\ndie() { printf 'rampart: %s\\n' \"$*\" >&2; exit 1; }\n")
        .then(body)
        .raw(") || exit 1\n")
}

/// One atomic write of a regular file, with `$p` set to its path first.
pub(super) struct Write<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    /// Wanted owner, group and mode. Fields not given are copied from the file being
    /// replaced, else: the connecting user, and `new_mode`.
    pub perms: &'a Perms,
    pub new_mode: u32,
    /// Where this run keeps the replaced file (the first copy in a run wins).
    pub backup: Option<String>,
    /// Runs first, with `$p` set: may `exit 0` (nothing left to do) or `die`.
    pub check: Script,
    /// Makes the missing folder (mode 0750) instead of failing.
    pub make_folder: bool,
}

impl Write<'_> {
    pub(super) fn script(&self) -> Script {
        let mut s = Script::new()
            .raw("p=")
            .arg(self.path)
            .raw("\nd=")
            .arg(parent(self.path))
            .raw("\nt=\ntrap '[ -z \"$t\" ] || rm -f \"$t\"' EXIT\n");
        s = if self.make_folder {
            s.raw(
                "[ -d \"$d\" ] || { mkdir -p \"$d\" && chmod 0750 \"$d\"; } || \
                 die \"cannot create the folder $d\"\n",
            )
        } else {
            s.raw(
                "[ -d \"$d\" ] || die \"cannot write $p: its folder $d does not exist \
                 (add a directory step for it before this step)\"\n",
            )
        };
        s = s
            .raw(
                "if [ -L \"$p\" ] || { [ -e \"$p\" ] && [ ! -f \"$p\" ]; }; then \
                 die \"$p is no longer a regular file; not replacing it\"; fi\n",
            )
            .then(self.check.clone());
        if let Some(b) = &self.backup {
            s = s.raw("b=").arg(b).raw(
                "\nif [ -f \"$p\" ] && [ ! -e \"$b\" ]; then\n\
                 \x20 mkdir -p \"${b%/*}\" || die \"cannot create the backup folder ${b%/*}\"\n\
                 \x20 cp -p \"$p\" \"$b\" || die \"cannot back up $p to $b\"\n\
                 fi\n",
            );
        }
        s = s
            .raw(
                "t=$(mktemp \"$d/.rampart.XXXXXX\") || die \"cannot create a temporary file in $d\"\n\
                 base64 -d >\"$t\" ",
            )
            .payload(self.content)
            .raw(
                "[ $? -eq 0 ] || die \"cannot write the temporary file $t\"\n\
                 old=\nif [ -f \"$p\" ]; then old=1; fi\n",
            );
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
        s.raw("mv -f \"$t\" \"$p\" || die \"cannot rename $t to $p\"\nt=\n")
    }
}

// ---------------------------------------------------------------------------------------
// Documents: read, merge, compare.

/// The file's top-level object. Errors name a line and column, never the text.
fn read_document(bytes: &[u8], format: Format) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (byte {} is not valid UTF-8)",
            e.valid_up_to()
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(e) if format == Format::Json => {
            return Err(format!(
                "is not valid JSON ({e}){}",
                if e.is_syntax() {
                    "; if it holds comments or trailing commas, set format: json5"
                } else {
                    ""
                }
            ));
        }
        Err(_) => json5::from_str::<Value>(text).map_err(|e| match e {
            json5::Error::Message {
                location: Some(l), ..
            } => format!(
                "is not valid JSON5 (at line {}, column {})",
                l.line, l.column
            ),
            json5::Error::Message { location: None, .. } => "is not valid JSON5".to_string(),
        })?,
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "holds {} at the top level, not an object: json_config merges into objects only",
            kind_of(&other)
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Merges `settings` into `base`: objects recursively, everything else replaces.
pub fn deep_merge(base: &mut Map<String, Value>, settings: &Map<String, Value>) {
    for (key, want) in settings {
        match (base.get_mut(key), want) {
            (Some(Value::Object(have)), Value::Object(want)) => deep_merge(have, want),
            _ => {
                base.insert(key.clone(), want.clone());
            }
        }
    }
}

/// `gateway.bind`, `exec.allow[0]`, `models["gpt-4.1"]`: a key as written when it is a plain
/// name, else quoted in brackets.
fn key_path(prefix: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'));
    match (plain, prefix.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{prefix}.{key}"),
        (false, _) => format!("{prefix}[{}]", Value::String(key.to_string())),
    }
}

/// A leaf as shown in a change: a string raw, anything else as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

/// An object or array with something in it: shown by its leaves.
fn is_branch(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// The children of a branch, with their paths.
fn children<'a>(path: &str, v: &'a Value) -> Vec<(String, &'a Value)> {
    match v {
        Value::Object(m) => m.iter().map(|(k, c)| (key_path(path, k), c)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{path}[{i}]"), c))
            .collect(),
        _ => Vec::new(),
    }
}

/// One change per leaf that differs between `old` and `new` under `path`.
fn leaf_changes(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for (k, vb) in b {
                leaf_changes(&key_path(path, k), a.get(k), Some(vb), out);
            }
            for (k, va) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                leaf_changes(&key_path(path, k), Some(va), None, out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                leaf_changes(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
            }
        }
        _ => {
            let (old_branch, new_branch) = (old.is_some_and(is_branch), new.is_some_and(is_branch));
            if !old_branch && !new_branch {
                let (mut before, mut after) = (old.map(show), new.map(show));
                if let (Some(o), Some(n), Some(b), Some(a)) = (old, new, &mut before, &mut after)
                    && b == a
                {
                    // `"8080"` and `8080`: the same text, another kind.
                    *b = format!("{b} ({})", kind_of(o));
                    *a = format!("{a} ({})", kind_of(n));
                }
                out.push(Change {
                    field: path.to_string(),
                    before,
                    after,
                });
                return;
            }
            match old {
                Some(o) if old_branch => {
                    for (p, c) in children(path, o) {
                        leaf_changes(&p, Some(c), None, out);
                    }
                }
                Some(o) => out.push(Change::new(path, Some(show(o)), None)),
                None => {}
            }
            match new {
                Some(n) if new_branch => {
                    for (p, c) in children(path, n) {
                        leaf_changes(&p, None, Some(c), out);
                    }
                }
                Some(n) => out.push(Change::new(path, None, Some(show(n)))),
                None => {}
            }
        }
    }
}

/// The file as written: pretty JSON and a final newline.
fn render(doc: &Map<String, Value>) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(doc).expect("a JSON value serializes");
    text.push('\n');
    text.into_bytes()
}

// ---------------------------------------------------------------------------------------
// The resource.

impl JsonConfig {
    fn remember(&self, plan: Plan) {
        let mut plans = self.plans.lock().expect("not poisoned");
        plans.retain(|p| p.changes != plan.changes);
        plans.push(plan);
        let extra = plans.len().saturating_sub(PLANS_KEPT);
        plans.drain(..extra);
    }

    fn plan_for(&self, changes: &[Change]) -> Option<Plan> {
        let plans = self.plans.lock().expect("not poisoned");
        plans.iter().rev().find(|p| p.changes == changes).cloned()
    }
}

impl Resource for JsonConfig {
    fn id(&self) -> String {
        format!("json_config {}", shown(&self.path))
    }

    fn probe(&self) -> Script {
        probe_file(&self.path)
    }

    fn diff(&self, probe_output: &str) -> Result<Verdict, ProbeError> {
        let err = |m: String| ProbeError::new(m, &redacted(probe_output));
        let mut lines = probe_output.lines().peekable();
        let state = parse_file(&mut lines).map_err(err)?;
        if let Some(l) = lines.next() {
            return Err(err(format!("unexpected line {l:?}")));
        }
        let path = shown(&self.path);
        let (old, meta) = match state.kind {
            FileKind::None if !self.create => {
                return Ok(Verdict::InLine(format!(
                    "{} is in line: the file does not exist and create is false",
                    self.id()
                )));
            }
            FileKind::None => (None, None),
            FileKind::File if state.large => {
                return Err(err(format!(
                    "{path} is larger than {MAX_CONTENT} bytes; json_config edits smaller files only"
                )));
            }
            FileKind::File => {
                let bytes = state.content.as_deref().unwrap_or_default();
                let doc =
                    read_document(bytes, self.format).map_err(|m| err(format!("{path} {m}")))?;
                (Some((doc, sha1_hex(bytes))), state.meta.as_ref())
            }
            FileKind::Link => {
                return Err(err(format!(
                    "{path} is a symlink; json_config edits regular files only (give the path \
                     of its target)"
                )));
            }
            FileKind::Dir | FileKind::Other => {
                return Err(err(format!(
                    "{path} is {}, not a regular file",
                    if state.kind == FileKind::Dir {
                        "a folder"
                    } else {
                        "a special file (device, FIFO or socket)"
                    }
                )));
            }
        };
        let mut merged = old.as_ref().map(|(d, _)| d.clone()).unwrap_or_default();
        deep_merge(&mut merged, &self.settings);
        let mut changes = Vec::new();
        let old_doc = old.as_ref().map(|(d, _)| Value::Object(d.clone()));
        let new_doc = Value::Object(merged.clone());
        // A new file: every leaf of the settings, even an empty object, is shown coming.
        match &old_doc {
            Some(o) => leaf_changes("", Some(o), Some(&new_doc), &mut changes),
            None => {
                for (k, v) in &merged {
                    leaf_changes(&key_path("", k), None, Some(v), &mut changes);
                }
            }
        }
        let content_changes = !changes.is_empty() || old.is_none();
        changes.extend(self.perms.changes(meta, 0o600));
        if changes.is_empty() {
            // Nothing more to say: the report shows no sentence that ends here.
            return Ok(Verdict::InLine(format!("{} is in line", self.id())));
        }
        self.remember(Plan {
            changes: changes.clone(),
            old_sha1: old.as_ref().map(|(_, h)| h.clone()),
            new: content_changes.then(|| render(&merged)),
        });
        Ok(match old {
            None => Verdict::Create(changes),
            Some(_) => Verdict::Modify(changes),
        })
    }

    fn apply(&self, verdict: &Verdict, ctx: &ApplyContext) -> Script {
        let changes = match verdict {
            Verdict::Create(c) | Verdict::Modify(c) => c,
            Verdict::InLine(_) | Verdict::Remove(_) => return Script::new(),
        };
        let Some(plan) = self.plan_for(changes) else {
            return apply_script(Script::new().raw(
                "die \"json_config: this verdict did not come from this step's diff; run again\"\n",
            ));
        };
        let Some(new) = &plan.new else {
            return apply_script(
                Script::new()
                    .raw("p=")
                    .arg(&self.path)
                    .raw(
                        "\n{ [ -f \"$p\" ] && [ ! -L \"$p\" ]; } || \
                         die \"$p is no longer a regular file; run again\"\n",
                    )
                    .then(self.perms.apply_in_place(changes)),
            );
        };
        // The merge was made on the probed file: if it changed since, stop; if it already
        // holds the result (a rerun), only the wanted owner, group and mode are left.
        let check = Script::new()
            .raw("if [ -f \"$p\" ]; then\n  h=$(sha1sum <\"$p\" | cut -d ' ' -f 1)\n  if [ \"$h\" = ")
            .arg(&sha1_hex(new))
            .raw(" ]; then\n")
            .then(self.perms.apply_in_place(&[
                Change::new(OWNER, None, None),
                Change::new(GROUP, None, None),
                Change::new(MODE, None, None),
            ]))
            .raw("    exit 0\n  fi\n");
        let check = match &plan.old_sha1 {
            Some(old) => check
                .raw("  [ \"$h\" = ")
                .arg(old)
                .raw(" ] || die \"$p changed since it was probed; run again\"\nelse\n")
                .raw("  die \"$p was removed since it was probed; run again\"\nfi\n"),
            None => check.raw("  die \"$p appeared since it was probed; run again\"\nfi\n"),
        };
        apply_script(
            Write {
                path: &self.path,
                content: new,
                perms: &self.perms,
                new_mode: 0o600,
                backup: Some(format!("{}{}", ctx.backup_dir(), self.path)),
                check,
                make_folder: false,
            }
            .script(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::converge_one;
    use crate::transport::local::LocalSession;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn build(v: Value) -> JsonConfig {
        JsonConfig::try_from(params::<JsonConfigParams>(v).unwrap()).unwrap()
    }

    fn build_err(v: Value) -> String {
        (JSON_CONFIG.build)(v).unwrap_err().to_string()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// Probe output for a file with `content`, mode 0600, owned by moltbot.
    fn probed(content: &str) -> String {
        format!(
            "kind file\nstat moltbot 1001 moltbot 1001 600 {}\ncontent\n{}\nend\n",
            content.len(),
            b64(content)
        )
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::new(field, before.map(String::from), after.map(String::from))
    }

    fn agent(settings: Value) -> JsonConfig {
        build(json!({"path": "/home/moltbot/.openclaw/openclaw.json", "settings": settings}))
    }

    // ---- parameters ----

    #[test]
    fn params_list_every_key_and_bad_ones_are_refused() {
        let v = json!({"path": "/a.json", "settings": {}, "owner": "moltbot", "group": "moltbot",
                       "mode": "0600", "create": false, "format": "json5"});
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, JSON_CONFIG.params);
        build(v);
        for (v, want) in [
            (
                json!({"path": "a.json", "settings": {}}),
                "json_config: path \"a.json\" is not absolute (it must start with /)",
            ),
            (
                json!({"path": "/a.json", "settings": [1]}),
                "json_config: settings must be a mapping of keys to values (merged into the \
                 file's top-level object), found an array",
            ),
            (
                json!({"path": "/a.json", "settings": {}, "mode": 600}),
                "json_config: mode 600 is a number; write it as a quoted string of octal \
                 digits, e.g. mode: \"0600\", so that YAML cannot read it as decimal",
            ),
            (
                json!({"path": "/a.json", "settings": {}, "format": "yaml"}),
                "unknown variant `yaml`, expected `json` or `json5`",
            ),
            (
                json!({"path": "/a.json", "settings": {}, "owner": "a b"}),
                "json_config: owner \"a b\" is not a user or group name (no spaces, `:` or leading `-`)",
            ),
        ] {
            assert_eq!(build_err(v), want);
        }
    }

    #[test]
    fn debug_never_shows_the_settings() {
        let r = agent(json!({"gateway": {"auth": {"token": "s3cr\"et"}}}));
        let text = format!("{r:?}");
        assert!(!text.contains("s3cr"), "{text}");
        assert!(text.contains("<1 keys>"), "{text}");
    }

    // ---- diff on recorded probe output ----

    #[test]
    fn in_line_when_the_values_match_whatever_the_formatting() {
        let r = agent(json!({"gateway": {"bind": "loopback", "port": 18789}}));
        let out = probed("{\"gateway\":{\"port\":18789,\"bind\":\"loopback\",\"x\":1},\"y\":[1]}");
        assert_eq!(
            r.diff(&out).unwrap(),
            Verdict::InLine("json_config /home/moltbot/.openclaw/openclaw.json is in line".into())
        );
    }

    #[test]
    fn changes_are_one_per_leaf_path_with_raw_values() {
        let token = "t0k\"en\\with'quotes";
        let r = agent(json!({
            "gateway": {"bind": "loopback", "auth": {"mode": "token", "token": token}},
            "exec": {"allow": ["ls", "cat"]},
            "models": {"gpt-4.1": {"enabled": false}},
        }));
        let out = probed(
            r#"{"gateway": {"bind": "0.0.0.0", "port": 18789, "auth": {"mode": "none"}},
                "exec": {"allow": ["ls", "curl", "sh"]}, "other": true}"#,
        );
        assert_eq!(
            r.diff(&out).unwrap(),
            Verdict::Modify(vec![
                change("gateway.bind", Some("0.0.0.0"), Some("loopback")),
                change("gateway.auth.mode", Some("none"), Some("token")),
                change("gateway.auth.token", None, Some(token)),
                change("exec.allow[1]", Some("curl"), Some("cat")),
                change("exec.allow[2]", Some("sh"), None),
                change("models[\"gpt-4.1\"].enabled", None, Some("false")),
            ])
        );
    }

    #[test]
    fn deep_merge_keeps_other_keys_and_replaces_arrays_and_scalars() {
        let mut doc = json!({"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [1, 2, 3], "k": "v"})
            .as_object()
            .unwrap()
            .clone();
        let settings = json!({"a": {"c": {"d": 20, "f": {"g": 1}}}, "l": [9], "n": null});
        deep_merge(&mut doc, settings.as_object().unwrap());
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"a": {"b": 1, "c": {"d": 20, "e": 3, "f": {"g": 1}}}, "l": [9], "k": "v", "n": null})
        );
        // Key order: the file's keys in their order, new keys last.
        let keys: Vec<&String> = doc["a"]["c"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["d", "e", "f"]);
    }

    #[test]
    fn a_value_that_changes_kind_shows_its_leaves_going_and_coming() {
        let r = agent(
            json!({"gateway": {"bind": "loopback"}, "port": 8080, "tools": "none",
                              "list": [], "flag": null}),
        );
        let out = probed(
            r#"{"gateway": "0.0.0.0", "port": "8080", "tools": {"a": 1, "b": [true]},
                "list": ["x"], "flag": "null"}"#,
        );
        assert_eq!(
            r.diff(&out).unwrap(),
            Verdict::Modify(vec![
                change("gateway", Some("0.0.0.0"), None),
                change("gateway.bind", None, Some("loopback")),
                change("port", Some("8080 (a string)"), Some("8080 (a number)")),
                change("tools.a", Some("1"), None),
                change("tools.b[0]", Some("true"), None),
                change("tools", None, Some("none")),
                change("list[0]", Some("x"), None),
                change("flag", Some("null (a string)"), Some("null (null)")),
            ])
        );
    }

    #[test]
    fn json5_files_are_read_leniently() {
        let r = build(json!({"path": "/c.json5", "format": "json5",
                              "settings": {"gateway": {"bind": "loopback"}}}));
        let text = "// the agent's config\n{\n  gateway: { bind: 'lan', port: 0x10, /* c */ },\n  \
                    skills: { enabled: false, },\n}\n";
        assert_eq!(
            r.diff(&probed(text)).unwrap(),
            Verdict::Modify(vec![change("gateway.bind", Some("lan"), Some("loopback"))])
        );
        let plan = r
            .plan_for(r.diff(&probed(text)).unwrap().changes())
            .unwrap();
        assert_eq!(
            String::from_utf8(plan.new.unwrap()).unwrap(),
            "{\n  \"gateway\": {\n    \"bind\": \"loopback\",\n    \"port\": 16\n  },\n  \
             \"skills\": {\n    \"enabled\": false\n  }\n}\n"
        );
        // In line: values match, the comments stay (nothing is written).
        let same = "{ gateway: { bind: 'loopback' }, // yes\n }";
        assert!(r.diff(&probed(same)).unwrap().is_in_line());
        // The same text is refused as plain JSON, with a hint and no content.
        let strict = build(json!({"path": "/c.json", "settings": {"a": 1}}));
        let e = strict.diff(&probed(text)).unwrap_err();
        assert!(e.message.starts_with("/c.json is not valid JSON (expected value at line 1 column 1); if it holds comments or trailing commas, set format: json5"), "{}", e.message);
        assert!(!e.output.contains(&b64(text)[..20]), "{}", e.output);
        assert!(
            e.output.contains("<1 lines of base64 left out>"),
            "{}",
            e.output
        );
        let e = r.diff(&probed("{ a: 'x',\n b: }")).unwrap_err();
        assert!(
            e.message
                .starts_with("/c.json5 is not valid JSON5 (at line "),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_top_level_must_be_an_object_and_an_empty_file_is_one() {
        let r = agent(json!({"a": 1}));
        let e = r.diff(&probed("[1, 2]")).unwrap_err();
        assert_eq!(
            e.message,
            "/home/moltbot/.openclaw/openclaw.json holds an array at the top level, not an \
             object: json_config merges into objects only"
        );
        assert_eq!(
            r.diff(&probed("\n")).unwrap(),
            Verdict::Modify(vec![change("a", None, Some("1"))])
        );
    }

    #[test]
    fn a_missing_file_is_created_with_mode_0600_unless_create_is_false() {
        let r = build(json!({"path": "/x.json", "owner": "moltbot",
                              "settings": {"a": {"b": "c", "e": {}}, "l": [1]}}));
        assert_eq!(
            r.diff("kind none\n").unwrap(),
            Verdict::Create(vec![
                change("a.b", None, Some("c")),
                change("a.e", None, Some("{}")),
                change("l[0]", None, Some("1")),
                change("file owner", None, Some("moltbot")),
                change("file mode", None, Some("0600")),
            ])
        );
        let r = build(json!({"path": "/x.json", "create": false, "settings": {"a": 1}}));
        assert_eq!(
            r.diff("kind none\n").unwrap(),
            Verdict::InLine(
                "json_config /x.json is in line: the file does not exist and create is false"
                    .into()
            )
        );
    }

    #[test]
    fn owner_and_mode_are_enforced() {
        let r = build(
            json!({"path": "/home/moltbot/.openclaw/openclaw.json", "owner": "moltbot",
                              "group": "1001", "mode": "0640", "settings": {"a": 1}}),
        );
        assert_eq!(
            r.diff(&probed("{\"a\": 1}")).unwrap(),
            Verdict::Modify(vec![change("file mode", Some("0600"), Some("0640"))])
        );
        let out = format!(
            "kind file\nstat root 0 UNKNOWN 4242 644 8\ncontent\n{}\nend\n",
            b64("{\"a\": 1}")
        );
        assert_eq!(
            r.diff(&out).unwrap().changes(),
            [
                change("file owner", Some("root"), Some("moltbot")),
                change("file group", Some("4242"), Some("1001")),
                change("file mode", Some("0644"), Some("0640")),
            ]
        );
    }

    #[test]
    fn junk_and_odd_files_are_probe_errors() {
        let r = agent(json!({"a": 1}));
        for (out, want) in [
            ("", "the probe printed nothing"),
            ("hello\n", "expected a `kind` line first, found \"hello\""),
            (
                "kind file\nstat x\n",
                "expected `stat OWNER UID GROUP GID MODE SIZE`, found \"stat x\"",
            ),
            (
                "kind file\nstat a 1 a 1 600 3\ncontent\nAAAA\n",
                "the content has no `end` line (the file could not be read whole)",
            ),
            (
                "kind file\nstat a 1 a 1 600 3\ncontent\n!!!\nend\n",
                "the content is not base64: Invalid symbol 33, offset 0.",
            ),
            ("kind none\nextra\n", "unexpected line \"extra\""),
            (
                "kind link\n",
                "/home/moltbot/.openclaw/openclaw.json is a symlink; json_config edits regular \
                 files only (give the path of its target)",
            ),
            (
                "kind dir\n",
                "/home/moltbot/.openclaw/openclaw.json is a folder, not a regular file",
            ),
            (
                "kind file\nstat a 1 a 1 600 2000000\nlarge\n",
                "/home/moltbot/.openclaw/openclaw.json is larger than 1048576 bytes; \
                 json_config edits smaller files only",
            ),
            (
                "kind file\nstat a 1 a 1 600 1\ncontent\n/w==\nend\n",
                "/home/moltbot/.openclaw/openclaw.json is not UTF-8 text (byte 0 is not valid UTF-8)",
            ),
        ] {
            assert_eq!(r.diff(out).unwrap_err().message, want, "{out:?}");
        }
    }

    #[test]
    fn an_apply_without_its_diff_refuses() {
        let r = agent(json!({"a": 1}));
        let s = r.apply(
            &Verdict::Modify(vec![change("a", None, Some("1"))]),
            &ApplyContext::new("r"),
        );
        assert!(s.to_string().contains("did not come from this step's diff"));
    }

    // ---- converge on this machine, in a temporary folder ----

    fn ctx(dir: &Path) -> ApplyContext {
        let mut ctx = ApplyContext::new("run1");
        ctx.backup_root = format!("{}/backups", dir.display());
        ctx
    }

    async fn converge(r: &JsonConfig, ctx: &ApplyContext) -> Verdict {
        let (before, after) = converge_one(&LocalSession::default(), r, ctx)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.id()));
        assert!(after.is_in_line(), "not in line after apply: {after:?}");
        before
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn read(p: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn create_then_merge_then_drift_then_in_line() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("it's $(id).json");
        let p = path.to_str().unwrap();
        let token = "tok\"en'$(touch pwned)\\";
        let r = build(
            json!({"path": p, "settings": {"gateway": {"bind": "loopback",
                                                                   "auth": {"token": token}}}}),
        );
        assert_eq!(converge(&r, &ctx).await.action(), "create");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            read(&path),
            json!({"gateway": {"bind": "loopback", "auth": {"token": token}}})
        );
        assert!(converge(&r, &ctx).await.is_in_line());

        // Other keys by hand are kept; a changed value is drift, put back.
        std::fs::write(
            &path,
            "{\"gateway\": {\"bind\": \"0.0.0.0\", \"port\": 1, \"auth\": {\"token\": \"x\"}}, \"z\": [1]}",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = converge(&r, &ctx).await;
        assert_eq!(
            before,
            Verdict::Modify(vec![
                change("gateway.bind", Some("0.0.0.0"), Some("loopback")),
                change("gateway.auth.token", Some("x"), Some(token)),
            ])
        );
        assert_eq!(
            read(&path),
            json!({"gateway": {"bind": "loopback", "port": 1, "auth": {"token": token}}, "z": [1]})
        );
        assert_eq!(mode_of(&path), 0o640, "no mode wanted: the old one is kept");
        let backup = format!("{}/backups/run1{p}", tmp.path().display());
        assert!(
            std::fs::read_to_string(&backup)
                .unwrap()
                .contains("0.0.0.0")
        );
        assert!(!tmp.path().join("pwned").exists());
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[tokio::test]
    async fn mode_alone_is_fixed_in_place_and_a_rerun_of_an_apply_is_harmless() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("c.json");
        std::fs::write(&path, "{\"a\": 1}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let uid = std::fs::metadata(&path).unwrap().uid();
        let r = build(json!({"path": path.to_str().unwrap(), "mode": "0600",
                              "owner": uid.to_string(), "settings": {"a": 1}}));
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(
            converge(&r, &ctx).await,
            Verdict::Modify(vec![change("file mode", Some("0644"), Some("0600"))])
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            ino,
            "changed in place"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}");

        // The same apply twice: the second finds the new document and stops.
        let r = build(json!({"path": path.to_str().unwrap(), "settings": {"a": 2}}));
        let session = LocalSession::default();
        let run = |script: Script| {
            let session = &session;
            async move {
                use crate::transport::Session;
                session
                    .exec(
                        &crate::remote::exec_command(false),
                        script.render().unwrap().as_bytes(),
                        std::time::Duration::from_secs(30),
                    )
                    .await
                    .unwrap()
            }
        };
        let out = run(r.probe()).await;
        let verdict = r.diff(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let apply = r.apply(&verdict, &ctx);
        assert!(run(apply.clone()).await.success());
        assert!(run(apply.clone()).await.success());
        assert_eq!(read(&path), json!({"a": 2}));
        // Changed by hand in between: refused, untouched.
        std::fs::write(&path, "{\"a\": 3}").unwrap();
        let out = run(apply).await;
        assert!(!out.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("changed since it was probed"),
            "{}",
            out.stderr_block()
        );
        assert_eq!(read(&path), json!({"a": 3}));
    }

    #[tokio::test]
    async fn json5_is_rewritten_as_json_and_a_missing_folder_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("agent.json");
        std::fs::write(
            &path,
            "{ // c\n keep: [1, 2,], gateway: { bind: 'lan' }, }\n",
        )
        .unwrap();
        let r = build(json!({"path": path.to_str().unwrap(), "format": "json5",
                              "settings": {"gateway": {"bind": "loopback"}}}));
        converge(&r, &ctx).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"keep\": [\n    1,\n    2\n  ],\n  \"gateway\": {\n    \"bind\": \"loopback\"\n  }\n}\n"
        );

        let missing = tmp.path().join("no/such.json");
        let r = build(json!({"path": missing.to_str().unwrap(), "settings": {"a": 1}}));
        let err = converge_one(&LocalSession::default(), &r, &ctx)
            .await
            .unwrap_err();
        assert!(err.contains("its folder"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }
}
