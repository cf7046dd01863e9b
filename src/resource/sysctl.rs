//! sysctl: kernel parameters, live (`/proc/sys`) and persisted in one `sysctl.d` file that
//! rampart owns whole. Not kernel modules, nor other `sysctl.d` files (a later file, such as
//! `99-sysctl.conf`, still wins at boot: rampart does not look at them).
//!
//! Owns the `sysctl` type: its probe (the file, and per key its live value and whether its
//! `/proc/sys` entry is writable here), the pure diff, and the apply (the file written
//! atomically with a backup by the kit's [`write_config`], live values written to
//! `/proc/sys`; no `sysctl` binary needed).
//!
//! ## What the environment forbids is reported, never skipped silently
//!
//! A container (systemd-nspawn, Docker, LXC) mounts `/proc/sys` read-only but for
//! `/proc/sys/net`; a kernel may lack a key (`kernel.yama.ptrace_scope` without Yama). Each
//! wanted key is in one of these classes on a host:
//!
//! - **settable**: the entry exists and is writable: its live value is compared and set.
//! - **read-only here**: the entry exists but is not writable (`[ -w ]` fails: a read-only
//!   mount, or a read-only key).
//! - **unknown here**: no `/proc/sys` entry.
//! - **unreadable**: the entry exists but cannot be read (a write-only key such as
//!   `vm.drop_caches`): no live value to compare.
//!
//! The file always holds every key. The live value of a key that is not settable is not part
//! of the desired state on that host (no apply could change it, and a verdict that can never
//! come in line would fail every verify), so:
//!
//! - when the file must change, the verdict lists, next to the `content` change, one
//!   `KEY (live)` change per such key whose live value differs (or is not known), with the
//!   reason in its `after`: `2 (not settable live here: /proc/sys/kernel/kptr_restrict is
//!   read-only; set in the file only)`. The apply writes the file, sets the settable keys,
//!   and prints a note for each of the others: it does not fail on them.
//! - when the file is in line, those keys do not make drift: the step is in line, and its
//!   sentence names every one of them, with its live and wanted values:
//!   `sysctl /etc/sysctl.d/60-rampart.conf is in line: 3 keys set live and in the file; set in
//!   the file, not settable live here (read-only /proc/sys): kernel.kptr_restrict (live 0,
//!   wanted 2); unknown here (no /proc/sys entry), only in the file: kernel.yama.ptrace_scope`.
//!
//! A key whose `/proc/sys` entry is a folder (`net.ipv4`) is an error. Values are compared
//! with runs of blanks made one space (`32768 60999` matches the kernel's tab).
//!
//! Keys are written as sysctl.d does: dots separate the parts, and a `/` in a dotted key is a
//! dot in the part (`net.ipv4.conf.eth0/100.rp_filter`); a key whose first separator is a
//! `/` is a path under `/proc/sys` as it is.
//!
//! ## Probe output
//!
//! ```text
//! rampart-sysctl 1
//! file=file                        # none | file | other | link <base64 of the target>
//! content=<base64 of the file>     (file=file only)
//! key=net.ipv4.ip_forward rw value MA==    # rw|ro, base64 of the live value
//! key=kernel.kptr_restrict ro value MA==
//! key=vm.drop_caches rw unreadable
//! key=kernel.yama.ptrace_scope missing
//! key=net.ipv4 dir
//! end
//! ```

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::fsfile::{apply_script, backup_path};
use super::kit::{
    ConfigFile, FILE_KEYS, Fields, FileField, check_config_path, config_changes, config_probe,
    parse_config, write_config,
};
use super::{
    ApplyContext, Change, Field, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
    params,
};
use crate::remote::Script;

pub const SYSCTL: TypeInfo = TypeInfo {
    name: "sysctl",
    params: &["values", "file"],
    build,
};

/// Where the values persist unless `file` says otherwise.
pub const DEFAULT_FILE: &str = "/etc/sysctl.d/60-rampart.conf";

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(Sysctl::from_params(params(value)?)?))
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// The `sysctl` step as written (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlParams {
    /// Key -> value (a number or a string), in the playbook's order.
    pub values: serde_json::Map<String, Value>,
    /// Default [`DEFAULT_FILE`]; must end in `.conf`.
    pub file: Option<String>,
}

/// One wanted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// As written: `net.ipv4.ip_forward`.
    pub key: String,
    /// `/proc/sys/net/ipv4/ip_forward`.
    pub proc_path: String,
    /// Trimmed text: `0`, `32768 60999`.
    pub value: String,
}

/// What the `sysctl` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub file: String,
    /// In the playbook's order.
    pub settings: Vec<Setting>,
}

/// The `/proc/sys` path of a key, sysctl.d's way (see the module doc), or why it is no key.
pub fn proc_path(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("an empty key".into());
    }
    if let Some(c) = key.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '+'))
    }) {
        return Err(format!(
            "{c:?} in a key (keys use A-Z a-z 0-9 and _ - . / : @ +)"
        ));
    }
    let path: String = match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => key.to_string(),
        _ => key
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
    };
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("an empty, `.` or `..` part".into());
    }
    Ok(format!("/proc/sys/{path}"))
}

fn value_text(key: &str, v: &Value) -> Result<String, ParamError> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => {
            return Err(ParamError(format!(
                "sysctl: {key}: {b} is a boolean; write the number the kernel takes (1 or 0)"
            )));
        }
        other => {
            return Err(ParamError(format!(
                "sysctl: {key}: the value must be a number or a string, found {other}"
            )));
        }
    };
    if text.is_empty() {
        return Err(ParamError(format!("sysctl: {key}: the value is empty")));
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParamError(format!(
            "sysctl: {key}: the value {text:?} holds a line break or control character, \
             which a sysctl.d line cannot hold"
        )));
    }
    Ok(text)
}

impl Sysctl {
    pub fn from_params(p: SysctlParams) -> Result<Sysctl, ParamError> {
        let file = p.file.unwrap_or_else(|| DEFAULT_FILE.to_string());
        check_config_path("sysctl", &file)?;
        if !file.ends_with(".conf") {
            return Err(ParamError(format!(
                "sysctl: file {file:?} does not end in .conf, so systemd-sysctl and \
                 `sysctl --system` would not read it at boot"
            )));
        }
        let values = p.values;
        if values.is_empty() {
            return Err(ParamError("sysctl: `values` is empty".into()));
        }
        let mut settings: Vec<Setting> = Vec::new();
        for (key, v) in &values {
            let key = key.trim();
            let path = proc_path(key)
                .map_err(|why| ParamError(format!("sysctl: {key:?} is not a key: {why}")))?;
            if let Some(twin) = settings.iter().find(|s| s.proc_path == path) {
                return Err(ParamError(format!(
                    "sysctl: {key} and {} are the same key; keep one",
                    twin.key
                )));
            }
            settings.push(Setting {
                key: key.to_string(),
                proc_path: path,
                value: value_text(key, v)?,
            });
        }
        Ok(Sysctl { file, settings })
    }

    /// The file's whole text.
    pub fn content(&self) -> String {
        let mut text =
            String::from("# Written by rampart (sysctl step); local edits are overwritten.\n");
        for s in &self.settings {
            text.push_str(&format!("{} = {}\n", s.key, s.value));
        }
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Probe and parse.

const HEADER: &str = "rampart-sysctl 1";

const KEYS_PROBE: &str = r#"while [ $# -gt 0 ]; do
  k=$1 f=$2
  shift 2
  if [ -d "$f" ]; then
    printf 'key=%s dir\n' "$k"
  elif [ -e "$f" ]; then
    if [ -w "$f" ]; then w=rw; else w=ro; fi
    if v=$(cat "$f" 2>/dev/null); then
      printf 'key=%s %s value %s\n' "$k" "$w" "$(printf '%s' "$v" | base64 | tr -d '\n')"
    else
      printf 'key=%s %s unreadable\n' "$k" "$w"
    fi
  else
    printf 'key=%s missing\n' "$k"
  fi
done
"#;

/// A key's live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    Value { value: String, writable: bool },
    Unreadable { writable: bool },
    Missing,
    Dir,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    file: ConfigFile,
    /// Per wanted key, in the step's order.
    live: Vec<Live>,
}

fn parse<'a>(d: &Sysctl, out: &'a str) -> Result<(Observed, Fields<'a>), ProbeError> {
    let keys: Vec<&str> = FILE_KEYS.iter().copied().chain(["key"]).collect();
    let f = Fields::read(out, HEADER, &keys)?;
    let file = parse_config(&f)?;
    let mut live: Vec<Option<Live>> = vec![None; d.settings.len()];
    for line in f.all("key") {
        let mut words = line.splitn(4, ' ');
        let key = words.next().unwrap_or("");
        let Some(i) = d.settings.iter().position(|s| s.key == key) else {
            return Err(f.error(format!("a key the step does not name: {key:?}")));
        };
        let writable = |w: Option<&str>| match w {
            Some("rw") => Ok(true),
            Some("ro") => Ok(false),
            _ => Err(f.error(format!("`key={line}`: expected rw or ro"))),
        };
        let state = match words.next() {
            Some("missing") => Live::Missing,
            Some("dir") => Live::Dir,
            w => {
                let writable = writable(w)?;
                match (words.next(), words.next()) {
                    (Some("unreadable"), None) => Live::Unreadable { writable },
                    (Some("value"), b64) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64.unwrap_or("").trim())
                            .map_err(|e| f.error(format!("`key={line}`: not base64: {e}")))?;
                        Live::Value {
                            value: String::from_utf8_lossy(&bytes).into_owned(),
                            writable,
                        }
                    }
                    _ => return Err(f.error(format!("cannot read `key={line}`"))),
                }
            }
        };
        if live[i].replace(state).is_some() {
            return Err(f.error(format!("key {key} appears twice")));
        }
    }
    let live = live
        .into_iter()
        .zip(&d.settings)
        .map(|(l, s)| l.ok_or_else(|| f.error(format!("no line for key {}", s.key))))
        .collect::<Result<_, _>>()?;
    Ok((Observed { file, live }, f))
}

// ---------------------------------------------------------------------------------------------
// Diff.

fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The fields of a `sysctl` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlField {
    /// The file's content.
    Content,
    /// A symbolic link at the file's path, replaced by the file.
    Type,
    /// A key's live value (`/proc/sys`), shown as `KEY (live)`.
    Live(String),
}

impl From<FileField> for SysctlField {
    fn from(f: FileField) -> SysctlField {
        match f {
            FileField::Content => SysctlField::Content,
            FileField::Type => SysctlField::Type,
        }
    }
}

impl Field for SysctlField {
    fn name(&self) -> String {
        match self {
            SysctlField::Content => FileField::Content.text().into(),
            SysctlField::Type => FileField::Type.text().into(),
            SysctlField::Live(key) => format!("{key} (live)"),
        }
    }

    fn of(name: &str) -> Option<SysctlField> {
        match FileField::of(name) {
            Some(f) => Some(f.into()),
            None => Some(SysctlField::Live(name.strip_suffix(" (live)")?.to_string())),
        }
    }
}

fn live_field(key: &str) -> SysctlField {
    SysctlField::Live(key.to_string())
}

/// Pure: the verdict for what the probe found.
fn compare(d: &Sysctl, (o, f): &(Observed, Fields)) -> Result<Verdict<SysctlField>, ProbeError> {
    let mut changes = config_changes(&d.file, &o.file, &d.content(), f)?;
    let file_changes = !changes.is_empty();
    // Keys that are not settable here, for the verdict or the sentence.
    let mut notes: Vec<Change<SysctlField>> = Vec::new();
    let mut read_only: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    let mut settable = 0;
    for (s, live) in d.settings.iter().zip(&o.live) {
        match live {
            Live::Dir => {
                return Err(f.error(format!(
                    "sysctl: {} is a group of keys ({} is a folder), not one key",
                    s.key, s.proc_path
                )));
            }
            Live::Value {
                value,
                writable: true,
            } => {
                settable += 1;
                if !same(value.as_str(), &s.value) {
                    changes.push(Change::of(
                        live_field(&s.key),
                        Some(value.trim().to_string()),
                        Some(s.value.clone()),
                    ));
                }
            }
            Live::Value {
                value,
                writable: false,
            } => {
                if !same(value.as_str(), &s.value) {
                    read_only.push(format!(
                        "{} (live {}, wanted {})",
                        s.key,
                        value.split_whitespace().collect::<Vec<_>>().join(" "),
                        s.value
                    ));
                    notes.push(Change::of(
                        live_field(&s.key),
                        Some(value.trim().to_string()),
                        Some(format!(
                            "{} (not settable live here: {} is read-only; set in the file only)",
                            s.value, s.proc_path
                        )),
                    ));
                }
            }
            Live::Unreadable { .. } => {
                unreadable.push(s.key.clone());
                notes.push(Change::of(
                    live_field(&s.key),
                    None,
                    Some(format!(
                        "{} (not compared live: {} cannot be read; set in the file only)",
                        s.value, s.proc_path
                    )),
                ));
            }
            Live::Missing => {
                unknown.push(s.key.clone());
                notes.push(Change::of(
                    live_field(&s.key),
                    None,
                    Some(format!(
                        "{} (unknown here: no {}; set in the file only)",
                        s.value, s.proc_path
                    )),
                ));
            }
        }
    }
    if changes.is_empty() {
        let mut sentence = format!(
            "sysctl {} is in line: {settable} {} set live and in the file",
            d.file,
            if settable == 1 { "key" } else { "keys" }
        );
        for (what, keys) in [
            (
                "set in the file, not settable live here (read-only /proc/sys)",
                &read_only,
            ),
            (
                "unknown here (no /proc/sys entry), only in the file",
                &unknown,
            ),
            (
                "unreadable here (write-only /proc/sys entry), only in the file",
                &unreadable,
            ),
        ] {
            if !keys.is_empty() {
                sentence.push_str(&format!("; {what}: {}", keys.join(", ")));
            }
        }
        return Ok(Verdict::InLine(sentence));
    }
    if file_changes {
        changes.extend(notes);
    }
    Ok(if o.file == ConfigFile::Absent {
        Verdict::Create(changes)
    } else {
        Verdict::Modify(changes)
    })
}

// ---------------------------------------------------------------------------------------------
// Apply.

/// Sets each `(key, path, value)` live when its entry is writable; prints a note for the
/// others. Fails only when a writable entry refuses the value.
const SET_LIVE: &str = r#"while [ $# -gt 0 ]; do
  k=$1 f=$2 v=$3
  shift 3
  if [ -e "$f" ] && [ -w "$f" ]; then
    printf '%s\n' "$v" >"$f" || die "cannot set $k to $v live: the kernel refused the write to $f"
  elif [ -e "$f" ]; then
    printf 'rampart: %s: not settable live here (%s is read-only); set in the file only\n' "$k" "$f"
  else
    printf 'rampart: %s: unknown here (no %s); set in the file only\n' "$k" "$f"
  fi
done
"#;

/// Notified as a handler: everything.
fn converge(d: &Sysctl, work: Work<'_, SysctlField>, ctx: &ApplyContext) -> Script {
    if let Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) = work {
        return Script::new();
    }
    let all = work.is_notified() || work.changes().is_empty();
    let has = |f: &SysctlField| all || work.has(f);
    let mut s = Script::new();
    if has(&SysctlField::Content) || has(&SysctlField::Type) {
        let backup = backup_path(ctx, &d.file);
        s = s.then(write_config(&d.file, d.content().as_bytes(), &backup, 0o644));
    }
    let mut set = Script::new().raw("set --");
    let mut any = false;
    for st in &d.settings {
        if has(&live_field(&st.key)) {
            set = set
                .raw(" ")
                .arg(&st.key)
                .raw(" ")
                .arg(&st.proc_path)
                .raw(" ")
                .arg(&st.value);
            any = true;
        }
    }
    if any {
        s = s.then(set).raw("\n").raw(SET_LIVE);
    }
    apply_script(s)
}

impl Resource for Sysctl {
    fn id(&self) -> String {
        format!("sysctl {}", self.file)
    }

    fn probe(&self) -> Script {
        let mut s = Script::new()
            .raw("(\nprintf '")
            .raw(HEADER)
            .raw("\\n'\n")
            .then(config_probe(&self.file))
            .raw("set --");
        for st in &self.settings {
            s = s.raw(" ").arg(&st.key).raw(" ").arg(&st.proc_path);
        }
        s.raw("\n").raw(KEYS_PROBE).raw("printf 'end\\n'\n)\n")
    }
}

impl Typed for Sysctl {
    type Observed<'a> = (Observed, Fields<'a>);
    type Field = SysctlField;

    fn parse<'a>(&self, out: &'a str) -> Result<(Observed, Fields<'a>), ProbeError> {
        parse(self, out)
    }

    fn compare(&self, o: &(Observed, Fields<'_>)) -> Result<Verdict<SysctlField>, ProbeError> {
        compare(self, o)
    }

    fn converge(&self, work: Work<'_, SysctlField>, ctx: &ApplyContext) -> Script {
        converge(self, work, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::{b64, run_local_ok};
    use serde_json::json;

    fn sysctl(p: Value) -> Sysctl {
        Sysctl::from_params(params(p).unwrap()).unwrap()
    }

    fn err(p: Value) -> String {
        match params::<SysctlParams>(p) {
            Err(e) => e.0,
            Ok(p) => Sysctl::from_params(p).unwrap_err().0,
        }
    }

    /// The baseline's kind of step: two net keys, two kernel keys.
    fn step() -> Sysctl {
        sysctl(json!({"values": {
            "net.ipv4.ip_forward": 0,
            "net.ipv4.ip_local_port_range": "32768 60999",
            "kernel.kptr_restrict": "2",
            "kernel.yama.ptrace_scope": 1,
        }}))
    }

    const CONTENT: &str = "# Written by rampart (sysctl step); local edits are overwritten.\n\
        net.ipv4.ip_forward = 0\nnet.ipv4.ip_local_port_range = 32768 60999\n\
        kernel.kptr_restrict = 2\nkernel.yama.ptrace_scope = 1\n";

    /// A probe output with `file` lines and these key lines.
    fn out(file: &str, keys: &[&str]) -> String {
        let mut s = format!("rampart-sysctl 1\n{file}");
        for k in keys {
            s.push_str(&format!("key={k}\n"));
        }
        s.push_str("end\n");
        s
    }

    fn file(text: &str) -> String {
        format!("file=file\ncontent={}\n", b64(text))
    }

    /// A container: net writable, kernel read-only, no Yama.
    fn container(forward: &str, kptr: &str) -> Vec<String> {
        vec![
            format!("net.ipv4.ip_forward rw value {}", b64(forward)),
            format!(
                "net.ipv4.ip_local_port_range rw value {}",
                b64("32768\t60999")
            ),
            format!("kernel.kptr_restrict ro value {}", b64(kptr)),
            "kernel.yama.ptrace_scope missing".to_string(),
        ]
    }

    fn keys(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn params_keys_paths_and_the_file() {
        let s = step();
        assert_eq!(s.file, DEFAULT_FILE);
        assert_eq!(s.content(), CONTENT);
        assert_eq!(s.settings[0].proc_path, "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(
            proc_path("net.ipv4.conf.eth0/100.rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            proc_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        let p = json!({"values": {"a.b": 1}, "file": "/etc/sysctl.d/10-x.conf"});
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, SYSCTL.params);
        assert!((SYSCTL.build)(p).is_ok());
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        assert!(
            err(json!({"values": {"a": 1}, "ignore_unavailable": true}))
                .contains("unknown field `ignore_unavailable`")
        );
        assert!(err(json!({})).contains("missing field `values`"));
        assert!(err(json!({"values": {}})).contains("is empty"));
        assert!(err(json!({"values": ["a"]})).contains("expected a map"));
        assert!(err(json!({"values": {"a.b": true}})).contains("write the number"));
        assert!(err(json!({"values": {"a.b": "1\n2"}})).contains("line break"));
        assert!(err(json!({"values": {"a.b": ""}})).contains("empty"));
        assert!(err(json!({"values": {"a..b": 1}})).contains("is not a key"));
        assert!(err(json!({"values": {"a.b; id": 1}})).contains("is not a key"));
        assert!(err(json!({"values": {"../etc": 1}})).contains("is not a key"));
        assert!(err(json!({"values": {"a.b": 1, "a/b": 2}})).contains("same key"));
        assert!(err(json!({"values": {"a.b": 1}, "file": "/etc/sysctl.d/x"})).contains(".conf"));
        assert!(err(json!({"values": {"a.b": 1}, "file": "x.conf"})).contains("not absolute"));
    }

    #[test]
    fn a_fresh_container_gets_the_file_and_net_keys_with_the_rest_reported() {
        let v = (step())
            .diff(&out("file=none\n", &keys(&container("1", "0"))))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Create(vec![
                Change::new("content", None, Some(CONTENT.into())),
                Change::new(
                    "net.ipv4.ip_forward (live)",
                    Some("1".into()),
                    Some("0".into())
                ),
                Change::new(
                    "kernel.kptr_restrict (live)",
                    Some("0".into()),
                    Some(
                        "2 (not settable live here: /proc/sys/kernel/kptr_restrict is \
                         read-only; set in the file only)"
                            .into()
                    )
                ),
                Change::new(
                    "kernel.yama.ptrace_scope (live)",
                    None,
                    Some(
                        "1 (unknown here: no /proc/sys/kernel/yama/ptrace_scope; set in the \
                         file only)"
                            .into()
                    )
                ),
            ])
        );
    }

    #[test]
    fn with_the_file_in_line_the_container_is_in_line_and_says_what_it_could_not_set() {
        let v = (step())
            .diff(&out(&file(CONTENT), &keys(&container("0", "0"))))
            .unwrap();
        assert_eq!(
            v,
            Verdict::InLine(
                "sysctl /etc/sysctl.d/60-rampart.conf is in line: 2 keys set live and in the \
                 file; set in the file, not settable live here (read-only /proc/sys): \
                 kernel.kptr_restrict (live 0, wanted 2); unknown here (no /proc/sys entry), \
                 only in the file: kernel.yama.ptrace_scope"
                    .into()
            )
        );
        // A read-only key that already holds the wanted value is simply in line.
        let v = (step())
            .diff(&out(&file(CONTENT), &keys(&container("0", "2"))))
            .unwrap();
        assert!(
            matches!(&v, Verdict::InLine(s) if !s.contains("kptr_restrict")),
            "{v:?}"
        );
    }

    #[test]
    fn live_drift_alone_is_a_modify_of_the_settable_keys_only() {
        let v = (step())
            .diff(&out(&file(CONTENT), &keys(&container("1", "0"))))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Modify(vec![Change::new(
                "net.ipv4.ip_forward (live)",
                Some("1".into()),
                Some("0".into())
            )])
        );
        // A VM: every key settable.
        let vm = [
            format!("net.ipv4.ip_forward rw value {}", b64("0")),
            format!(
                "net.ipv4.ip_local_port_range rw value {}",
                b64("1024 65000")
            ),
            format!("kernel.kptr_restrict rw value {}", b64("0")),
            format!("kernel.yama.ptrace_scope rw value {}", b64("1")),
        ];
        let v = (step()).diff(&out(&file(CONTENT), &keys(&vm))).unwrap();
        assert_eq!(
            v.changes()
                .iter()
                .map(|c| c.field.as_str())
                .collect::<Vec<_>>(),
            [
                "net.ipv4.ip_local_port_range (live)",
                "kernel.kptr_restrict (live)"
            ]
        );
    }

    #[test]
    fn an_edited_file_is_a_text_change() {
        let edited = CONTENT.replace("= 2", "= 1");
        let v = (step())
            .diff(&out(&file(&edited), &keys(&container("0", "2"))))
            .unwrap();
        // With the file changing, the key unknown here is reported next to it.
        assert_eq!(
            v,
            Verdict::Modify(vec![
                Change::new("content", Some(edited.clone()), Some(CONTENT.into())),
                Change::new(
                    "kernel.yama.ptrace_scope (live)",
                    None,
                    Some(
                        "1 (unknown here: no /proc/sys/kernel/yama/ptrace_scope; set in the \
                         file only)"
                            .into()
                    )
                ),
            ])
        );
        assert!(v.changes()[0].is_text());
    }

    #[test]
    fn junk_and_cut_short_probe_outputs_are_probe_errors() {
        let s = step();
        let good = container("0", "0");
        let mut missing_key = good.clone();
        missing_key.pop();
        let mut twice = good.clone();
        twice.push(good[0].clone());
        let mut stranger = good.clone();
        stranger.push("fs.other rw value MA==".into());
        for bad in [
            String::new(),
            "junk\n".into(),
            out("file=none\n", &keys(&missing_key)),
            out("file=none\n", &keys(&twice)),
            out("file=none\n", &keys(&stranger)),
            out("file=none\n", &["net.ipv4.ip_forward maybe value MA=="]),
            out("file=none\n", &["net.ipv4.ip_forward rw value %%%"]),
            out("file=none\nrubbish\n", &keys(&good)),
            out(&file(CONTENT), &keys(&good)).replace("end\n", ""),
            out("file=other\n", &keys(&good)),
        ] {
            assert!((s).diff(&bad).is_err(), "{bad:?}");
        }
        let dir = sysctl(json!({"values": {"net.ipv4": 1}}));
        let e = (dir)
            .diff(&out("file=none\n", &["net.ipv4 dir"]))
            .unwrap_err();
        assert!(e.message.contains("is a group of keys"), "{e}");
    }

    #[test]
    fn apply_sets_only_the_keys_in_the_verdict_and_never_fails_on_read_only_ones() {
        let s = step();
        let v = (s)
            .diff(&out("file=none\n", &keys(&container("1", "0"))))
            .unwrap();
        let text = (s).apply(&v, &ApplyContext::new("r")).render().unwrap();
        assert!(text.contains("base64 -d"), "{text}");
        assert!(
            text.contains(
                "set -- 'net.ipv4.ip_forward' '/proc/sys/net/ipv4/ip_forward' '0' \
                 'kernel.kptr_restrict' '/proc/sys/kernel/kptr_restrict' '2' \
                 'kernel.yama.ptrace_scope' '/proc/sys/kernel/yama/ptrace_scope' '1'\n"
            ),
            "{text}"
        );
        assert!(!text.contains("ip_local_port_range' '/proc"), "{text}");
    }

    #[tokio::test]
    async fn an_unknown_key_goes_to_the_file_and_is_reported() {
        // Run here, on this machine: the file part and a key no kernel has. Live writes are
        // tested on testbed hosts (tests/integration/resources_system.rs).
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sysctl.d/60-test.conf");
        let s = sysctl(json!({
            "values": {"rampart.test.nosuch": 1},
            "file": path.to_str().unwrap(),
        }));
        let v = s.diff(&run_local_ok(s.probe()).await).unwrap();
        assert_eq!(v.action(), "create");
        let mut ctx = ApplyContext::new("t");
        ctx.backup_root = tmp.path().join("backups").display().to_string();
        let said = run_local_ok(s.apply(&v, &ctx)).await;
        assert!(said.contains("rampart.test.nosuch: unknown here"), "{said}");
        let v = s.diff(&run_local_ok(s.probe()).await).unwrap();
        assert!(
            matches!(&v, Verdict::InLine(t) if t.contains("unknown here (no /proc/sys entry), only in the file: rampart.test.nosuch")),
            "{v:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# Written by rampart (sysctl step); local edits are overwritten.\n\
             rampart.test.nosuch = 1\n"
        );
    }
}
