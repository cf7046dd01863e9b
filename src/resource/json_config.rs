//! json_config: settings deep-merged into a JSON config file (the agent gateway's
//! `openclaw.json`, say), the file's owner, group and mode. The file's probe, its owner, group
//! and mode and its atomic write are [`fsfile`](super::fsfile)'s, shared with `audit_rules`.
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
//! [`fsfile`](super::fsfile)'s probe of one regular file:
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

use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fsfile::{
    AsPerm, FileKind, FileState, MAX_CONTENT, PermField, Perms, Write, apply_script, backup_path,
    check_file_path, parse_file, perm_fields, probe_file, redacted, refusal, sha1_hex, shown,
};
use super::{
    ApplyContext, Change, Field, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
    params,
};
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
    changes: Vec<Change<JsonField>>,
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

/// The fields of a `json_config` step: a key path of the document (`gateway.auth.token`), or
/// the file's owner, group or mode (`file owner`: a key path never holds a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonField {
    Key(String),
    File(PermField),
}

impl Field for JsonField {
    fn name(&self) -> String {
        match self {
            JsonField::Key(path) => path.clone(),
            JsonField::File(f) => format!("file {}", f.text()),
        }
    }

    fn of(name: &str) -> Option<JsonField> {
        Some(match name.strip_prefix("file ").and_then(PermField::of) {
            Some(f) => JsonField::File(f),
            None => JsonField::Key(name.to_string()),
        })
    }
}

impl From<PermField> for JsonField {
    fn from(f: PermField) -> JsonField {
        JsonField::File(f)
    }
}

impl AsPerm for JsonField {
    fn perm(&self) -> Option<PermField> {
        match self {
            JsonField::File(f) => Some(*f),
            JsonField::Key(_) => None,
        }
    }
}

/// What the probe found, with its output redacted (quoted by errors).
pub struct JsonFound {
    state: FileState,
    redacted: String,
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
fn leaf_changes(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Change<JsonField>>,
) {
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
                out.push(Change::of(JsonField::Key(path.to_string()), before, after));
                return;
            }
            match old {
                Some(o) if old_branch => {
                    for (p, c) in children(path, o) {
                        leaf_changes(&p, Some(c), None, out);
                    }
                }
                Some(o) => out.push(Change::of(JsonField::Key(path.into()), Some(show(o)), None)),
                None => {}
            }
            match new {
                Some(n) if new_branch => {
                    for (p, c) in children(path, n) {
                        leaf_changes(&p, None, Some(c), out);
                    }
                }
                Some(n) => out.push(Change::of(JsonField::Key(path.into()), None, Some(show(n)))),
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

    fn plan_for(&self, changes: &[Change<JsonField>]) -> Option<Plan> {
        let plans = self.plans.lock().expect("not poisoned");
        plans.iter().rev().find(|p| p.changes == changes).cloned()
    }
}

impl Resource for JsonConfig {
    fn plain_fields(&self) -> &'static [&'static str] {
        &["file owner", "file group", "file mode"]
    }

    /// Mode 0600 or stricter: a secrets file.
    fn sensitive(&self) -> bool {
        self.perms.mode.is_some_and(|m| m & 0o077 == 0)
    }

    fn fs_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn id(&self) -> String {
        format!("json_config {}", shown(&self.path))
    }

    fn probe(&self) -> Script {
        probe_file(&self.path)
    }
}

impl Typed for JsonConfig {
    type Observed<'a> = JsonFound;
    type Field = JsonField;

    fn parse(&self, probe_output: &str) -> Result<JsonFound, ProbeError> {
        refusal(probe_output)?;
        let err = |m: String| ProbeError::new(m, &redacted(probe_output));
        let mut lines = probe_output.lines().peekable();
        let state = parse_file(&mut lines).map_err(err)?;
        if let Some(l) = lines.next() {
            return Err(err(format!("unexpected line {l:?}")));
        }
        Ok(JsonFound {
            state,
            redacted: redacted(probe_output),
        })
    }

    fn compare(&self, found: &JsonFound) -> Result<Verdict<JsonField>, ProbeError> {
        let state = &found.state;
        let err = |m: String| ProbeError::new(m, &found.redacted);
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
        changes.extend(self.perms.changes(meta, Some(0o600)));
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

    fn converge(&self, work: Work<'_, JsonField>, ctx: &ApplyContext) -> Script {
        let changes = match work {
            Work::Converge(Verdict::Create(c) | Verdict::Modify(c)) => c,
            Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) => return Script::new(),
            // As a notified handler: no diff planned a document, so the apply fails and
            // says so (json_config is no handler).
            Work::Notified => &Vec::new(),
        };
        let Some(plan) = self.plan_for(changes) else {
            return apply_script(Script::new().raw(
                "die \"json_config: this verdict did not come from this step's diff; run again\"\n",
            ));
        };
        let Some(new) = &plan.new else {
            return self.perms.apply_to_file(&self.path, &perm_fields(changes));
        };
        // The merge was made on the probed file: if it changed since, stop; if it already
        // holds the result (a rerun), only the wanted owner, group and mode are left.
        let check = Script::new()
            .raw("if [ -f \"$f\" ]; then\n  h=$(sha1sum <\"$f\" | cut -d ' ' -f 1)\n  if [ \"$h\" = ")
            .arg(&sha1_hex(new))
            .raw(" ]; then\n")
            .then(self.perms.apply_all_in_place("\"$f\""))
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
                backup: Some(backup_path(ctx, &self.path)),
                check,
                make_folder: false,
                replace_link: false,
            }
            .script(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::{b64, converge_one, run_local};
    use crate::transport::local::LocalSession;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn build(v: Value) -> JsonConfig {
        JsonConfig::try_from(params::<JsonConfigParams>(v).unwrap()).unwrap()
    }

    fn build_err(v: Value) -> String {
        (JSON_CONFIG.build)(v).unwrap_err().to_string()
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
            .plan_for(
                r.compare(&r.parse(&probed(text)).unwrap())
                    .unwrap()
                    .changes(),
            )
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
        let out = run_local(r.probe()).await;
        let verdict = r.diff(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let apply = r.apply(&verdict, &ctx);
        assert!(run_local(apply.clone()).await.success());
        assert!(run_local(apply.clone()).await.success());
        assert_eq!(read(&path), json!({"a": 2}));
        // Changed by hand in between: refused, untouched.
        std::fs::write(&path, "{\"a\": 3}").unwrap();
        let out = run_local(apply).await;
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
