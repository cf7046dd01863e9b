//! sshd: settings of the SSH server, written to a drop-in file that the main
//! `/etc/ssh/sshd_config` includes, checked against what sshd itself says is in effect,
//! validated with `sshd -t` and reloaded under the dead-man switch.
//!
//! Owns the `sshd` step's parameters, its probe, the pure parse and diff of the probe's output
//! and the apply script. The drop-in's record in the probe, its diff and its write (as a `file`
//! step writes, with its backup) and the copy kept for the restore are
//! [`risky`](super::risky)'s, shared with nftables; running the scripts and confirming the
//! change over a new connection (which disarms the switch) are the engine's.
//!
//! ## Parameters
//!
//! - `settings`: sshd_config keywords and their values. A string or number is written as is, a
//!   boolean as `yes`/`no`. A list is written one line per item for keywords that sshd adds up
//!   ([`ACCUMULATING`]: `ListenAddress`, `Port`, `AcceptEnv`, `AllowUsers`, …), joined with
//!   commas for algorithm lists ([`COMMA_LISTS`]: `Ciphers`, `KexAlgorithms`, …) and with
//!   spaces otherwise (`AuthenticationMethods`, `AuthorizedKeysFile`, …). `Match` and `Include`
//!   are refused: the drop-in holds global settings only.
//! - `file`: the drop-in, `/etc/ssh/sshd_config.d/10-rampart.conf` unless given.
//! - `service`: the unit to reload; unless given, `ssh` when systemd knows `ssh.service`
//!   (Debian, Ubuntu), else `sshd`.
//!
//! ## What "in line" means
//!
//! Two things are compared: the drop-in's content, and the values sshd says are in effect.
//! sshd takes the **first** value it reads for most keywords, and Debian's `sshd_config`
//! includes `sshd_config.d/*.conf` at its top, so a drop-in only wins where nothing read before
//! it sets the same keyword. The probe therefore asks sshd: `sshd -T` prints the effective
//! configuration, and `sshd -T -o 'Keyword value' …` prints it as it is with our settings in
//! front of everything else. Where the two differ, the effective value changes; sshd does the
//! canonicalising itself (`2m` is `120`, `prohibit-password` is `without-password`, a
//! `ListenAddress` gets its port). Settings sshd refuses make the probe fail at plan time,
//! with sshd's message.
//!
//! The probe also reads the main config and the files its `Include` lines name, in sshd's
//! order. A main config without an `Include` that reads the drop-in, or with that `Include`
//! inside a `Match` block, is an error (the drop-in would have no effect). An effective value
//! that would differ because a line read before the drop-in sets the keyword first (a setting
//! above the `Include`, an earlier `00-*.conf`) is an error that names that line: writing the
//! drop-in cannot fix it. Known limits: keywords removed from `settings` show in the content
//! diff only (the `-o` run still sees the old drop-in); `sshd -T` reads the files, not the
//! running daemon, so a reload that never happened is not seen.
//!
//! ## Apply
//!
//! Copies the old drop-in aside (in the run's dead-man folder; the run's backup folder gets
//! its copy too), writes the new one in place atomically, and runs `sshd -t` on the whole
//! configuration. If sshd refuses it, the old drop-in is put back, nothing is reloaded, and the
//! step fails with sshd's message. Otherwise the dead-man switch is armed (its restore puts the
//! old drop-in back, or removes the new one, and reloads sshd) and the service is reloaded.
//! A reload keeps open connections, so only the engine's confirmation over a NEW connection
//! proves the new settings still let rampart in. A service that is not running is not
//! reloaded (socket activation starts a fresh sshd per connection).
//!
//! ## Probe output
//!
//! One record a line, texts in base64 on one line:
//!
//! ```text
//! rampart-sshd 1
//! sshd /usr/sbin/sshd                     # or: sshd none (not installed)
//! service ssh loaded                      # the unit and systemd's LoadState; n/a: no systemd
//! main content <base64>                   # or: main none
//! include <line> <glob> <base64 path> <base64 content>   # each file an Include of the
//!                                         # main config reads: its line, which of its globs
//! file content <base64>                   # or: file none | file other
//! actual ok <base64 of `sshd -T`>         # or: actual failed <base64 of sshd's stderr>
//! desired ok <base64 of `sshd -T -o …`>   # or: desired failed <base64 …>
//! end
//! ```
//!
//! Of `sshd -T`'s ~90 lines, `actual` and `desired` carry only those of the keywords whose
//! values differ between the two runs (the rest cannot make a change).
//!
//! `actual` and `desired` are missing when sshd is not installed: then only the content is
//! compared, and the apply fails until it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fsfile::{apply_script, parent};
use super::kit::FileField;
use super::risky::{
    Aside, B64, Current, FILE_PROBE, PATH, check_plain_path, condensed, content_changes,
    decode_text, parse_file_record, write_file,
};
use super::{
    ApplyContext, Change, Field, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
    deadman_arm, deadman_dir, params,
};
use crate::glob::{Syntax, glob_match};
use crate::remote::Script;

pub const SSHD: TypeInfo = TypeInfo {
    name: "sshd",
    params: &["settings", "file", "service"],
    build: |v| Ok(Box::new(Sshd::try_from(params::<SshdParams>(v)?)?)),
};

/// Where the settings go unless `file` says otherwise.
pub const DEFAULT_FILE: &str = "/etc/ssh/sshd_config.d/10-rampart.conf";
/// The configuration sshd reads.
pub const MAIN_CONFIG: &str = "/etc/ssh/sshd_config";

/// Keywords that sshd adds up over every line (and file) that sets them: a list is written one
/// line per item, and a line read before the drop-in never hides ours.
pub const ACCUMULATING: &[&str] = &[
    "acceptenv",
    "allowgroups",
    "allowusers",
    "denygroups",
    "denyusers",
    "hostcertificate",
    "hostkey",
    "listenaddress",
    "port",
    "subsystem",
];

/// Keywords whose value is one comma-separated list: a YAML list is joined with commas.
pub const COMMA_LISTS: &[&str] = &[
    "casignaturealgorithms",
    "ciphers",
    "gssapikexalgorithms",
    "hostbasedacceptedalgorithms",
    "hostbasedacceptedkeytypes",
    "hostkeyalgorithms",
    "kexalgorithms",
    "macs",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
];

/// Old names and the name `sshd -T` prints.
const ALIASES: &[(&str, &str)] = &[
    (
        "challengeresponseauthentication",
        "kbdinteractiveauthentication",
    ),
    ("pubkeyacceptedkeytypes", "pubkeyacceptedalgorithms"),
    ("hostbasedacceptedkeytypes", "hostbasedacceptedalgorithms"),
];

const HEADER: &str = "# Managed by rampart (sshd step): edits here are overwritten.\n";

// ---------------------------------------------------------------------------------------
// Parameters.

/// `sshd` as written in the playbook (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshdParams {
    pub settings: Map<String, Value>,
    pub file: Option<String>,
    pub service: Option<String>,
}

/// `sshd`: these settings in the drop-in, and in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sshd {
    /// The drop-in's path.
    pub file: String,
    /// The unit to reload; `None`: detected on the host.
    pub service: Option<String>,
    /// `Keyword value` lines, in the order of `settings`.
    lines: Vec<String>,
    /// The drop-in's whole content.
    content: String,
    /// The main config (a test points it elsewhere).
    pub main_config: String,
}

impl TryFrom<SshdParams> for Sshd {
    type Error = ParamError;
    fn try_from(p: SshdParams) -> Result<Sshd, ParamError> {
        let file = p.file.unwrap_or_else(|| DEFAULT_FILE.to_string());
        check_plain_path("sshd: file", &file)?;
        if let Some(s) = &p.service
            && (s.is_empty()
                || s.starts_with('-')
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c)))
        {
            return Err(ParamError(format!(
                "sshd: service {s:?} is not a unit name (letters, digits, @ . _ -)"
            )));
        }
        if p.settings.is_empty() {
            return Err(ParamError(
                "sshd: settings is empty; give at least one keyword".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut lines = Vec::new();
        for (key, value) in &p.settings {
            let lower = key.to_ascii_lowercase();
            if key.is_empty()
                || !key.starts_with(|c: char| c.is_ascii_alphabetic())
                || !key.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(ParamError(format!(
                    "sshd: {key:?} is not an sshd_config keyword (letters and digits only)"
                )));
            }
            if lower == "match" || lower == "include" {
                return Err(ParamError(format!(
                    "sshd: `{key}` is not supported in settings: the drop-in holds global \
                     settings only (write a file step for Match blocks)"
                )));
            }
            if !seen.insert(lower.clone()) {
                return Err(ParamError(format!(
                    "sshd: `{key}` is given twice (keywords are case-insensitive)"
                )));
            }
            lines.extend(render(key, &lower, value)?);
        }
        let mut content = HEADER.to_string();
        for line in &lines {
            content.push_str(line);
            content.push('\n');
        }
        Ok(Sshd {
            file,
            service: p.service,
            lines,
            content,
            main_config: MAIN_CONFIG.to_string(),
        })
    }
}

/// One scalar as sshd_config text.
fn scalar(key: &str, value: &Value) -> Result<String, ParamError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Null => {
            return Err(ParamError(format!(
                "sshd: `{key}` has no value; give one or leave the keyword out"
            )));
        }
        Value::Array(_) | Value::Object(_) => {
            return Err(ParamError(format!(
                "sshd: `{key}`: a value must be a string, number or boolean, found {value}"
            )));
        }
    };
    if text.trim().is_empty() {
        return Err(ParamError(format!("sshd: `{key}` has an empty value")));
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParamError(format!(
            "sshd: the value of `{key}` contains a newline or control character: {text:?}"
        )));
    }
    Ok(text)
}

/// The lines of one keyword.
fn render(key: &str, lower: &str, value: &Value) -> Result<Vec<String>, ParamError> {
    let Value::Array(items) = value else {
        return Ok(vec![format!("{key} {}", scalar(key, value)?)]);
    };
    if items.is_empty() {
        return Err(ParamError(format!(
            "sshd: `{key}` is an empty list; give at least one value or leave the keyword out"
        )));
    }
    let items = items
        .iter()
        .map(|v| scalar(key, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if ACCUMULATING.contains(&lower) {
        items.iter().map(|i| format!("{key} {i}")).collect()
    } else if COMMA_LISTS.contains(&lower) {
        vec![format!("{key} {}", items.join(","))]
    } else {
        vec![format!("{key} {}", items.join(" "))]
    })
}

// ---------------------------------------------------------------------------------------
// Probe and parse.

/// Shell text that sets `$svc` to the unit to reload: `given`, or detected.
fn service_script(given: Option<&str>) -> Script {
    let s = Script::new().raw("svc=");
    match given {
        Some(name) => s.arg(name).raw("\n"),
        None => s.raw(
            "sshd\n\
             if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && \
             [ \"$(systemctl show -p LoadState --value ssh.service 2>/dev/null)\" = loaded ]; then\n\
             \x20 svc=ssh\n\
             fi\n",
        ),
    }
}

/// One file an `Include` of the main config reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Included {
    /// The line of the `Include` in the main config.
    line: usize,
    /// Which of that line's globs found it (0-based).
    glob: usize,
    path: String,
    content: String,
}

/// The probe's output, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// sshd's path; `None`: not installed.
    sshd: Option<String>,
    service: String,
    /// systemd's `LoadState` of the service's unit (`loaded`, `not-found`); `None`: no
    /// systemd.
    unit: Option<String>,
    main: Option<String>,
    includes: Vec<Included>,
    file: Current,
    /// `sshd -T`: its output, or why it failed.
    actual: Option<Result<String, String>>,
    /// `sshd -T -o …` with our settings.
    desired: Option<Result<String, String>>,
}

/// Parses the probe's output. Pure.
fn parse(out: &str) -> Result<Observed, ProbeError> {
    let err = |m: String| ProbeError::new(m, &condensed(out));
    let mut lines = out.lines();
    match lines.next() {
        Some("rampart-sshd 1") => {}
        Some(l) => return Err(err(format!("expected `rampart-sshd 1` first, found {l:?}"))),
        None => return Err(err("the probe printed nothing".into())),
    }
    let mut obs = Observed {
        sshd: None,
        service: String::new(),
        unit: None,
        main: None,
        includes: Vec::new(),
        file: Current::None,
        actual: None,
        desired: None,
    };
    let (mut sshd, mut service, mut main, mut file) = (false, false, false, false);
    let mut ended = false;
    for line in lines.by_ref() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(err(format!("`{key}` twice")))
            } else {
                Ok(())
            }
        };
        match key {
            "end" if rest.is_empty() => {
                ended = true;
                break;
            }
            "sshd" => {
                once(&mut sshd)?;
                obs.sshd = (rest != "none").then(|| rest.to_string());
            }
            "service" if !rest.is_empty() => {
                once(&mut service)?;
                let (name, state) = rest.split_once(' ').unwrap_or((rest, "n/a"));
                obs.service = name.to_string();
                obs.unit = (state != "n/a").then(|| state.to_string());
            }
            "main" => {
                once(&mut main)?;
                obs.main = match rest.split_once(' ') {
                    Some(("content", b)) => Some(decode_text("main", b, out)?),
                    None if rest == "content" => Some(String::new()),
                    None if rest == "none" => None,
                    _ => return Err(err(format!("unexpected line {line:?}"))),
                };
            }
            "include" => {
                let f: Vec<&str> = rest.splitn(4, ' ').collect();
                let (Some(n), Some(g), Some(p)) = (
                    f.first().and_then(|n| n.parse().ok()),
                    f.get(1).and_then(|g| g.parse().ok()),
                    f.get(2),
                ) else {
                    return Err(err(format!("unexpected line {line:?}")));
                };
                obs.includes.push(Included {
                    line: n,
                    glob: g,
                    path: decode_text("include", p, out)?,
                    content: decode_text("include", f.get(3).unwrap_or(&""), out)?,
                });
            }
            "file" => {
                once(&mut file)?;
                obs.file = parse_file_record(rest, line, out)?;
            }
            "actual" | "desired" => {
                let result = match rest.split_once(' ').unwrap_or((rest, "")) {
                    ("ok", b) => Ok(decode_text(key, b, out)?),
                    ("failed", b) => Err(decode_text(key, b, out)?),
                    _ => return Err(err(format!("unexpected line {line:?}"))),
                };
                let slot = if key == "actual" {
                    &mut obs.actual
                } else {
                    &mut obs.desired
                };
                if slot.replace(result).is_some() {
                    return Err(err(format!("`{key}` twice")));
                }
            }
            _ => return Err(err(format!("unexpected line {line:?}"))),
        }
    }
    if !ended {
        return Err(err("no `end` line: the probe was cut short".into()));
    }
    if let Some(l) = lines.find(|l| !l.trim().is_empty()) {
        return Err(err(format!("unexpected line after `end`: {l:?}")));
    }
    if !(sshd && service && main && file) {
        return Err(err(
            "a `sshd`, `service`, `main` or `file` line is missing".into()
        ));
    }
    if obs.sshd.is_some() && (obs.actual.is_none() || obs.desired.is_none()) {
        return Err(err("sshd is installed but `sshd -T` was not run".into()));
    }
    Ok(obs)
}

// ---------------------------------------------------------------------------------------
// The order sshd reads its configuration in.

/// One setting line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    file: String,
    line: usize,
    /// Lowercased, aliases resolved to the name `sshd -T` prints.
    keyword: String,
    text: String,
    /// Inside a `Match` block: applies to some connections only.
    in_match: bool,
}

impl Directive {
    fn shown(&self) -> String {
        format!("{}:{}: {}", self.file, self.line, self.text.trim())
    }
}

/// The keyword of a config line (lowercased, alias resolved) and the rest, or `None` for a
/// comment or empty line.
fn keyword(line: &str) -> Option<(String, &str)> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    let key = t[..end].to_ascii_lowercase();
    let rest = t[end..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    let key = ALIASES
        .iter()
        .find(|(old, _)| *old == key)
        .map(|(_, new)| new.to_string())
        .unwrap_or(key);
    Some((key, rest))
}

/// The setting lines of one file. A `Match` holds until the end of the file.
fn directives(file: &str, text: &str, mut in_match: bool) -> Vec<Directive> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((kw, _)) = keyword(line) {
            in_match |= kw == "match";
            out.push(Directive {
                file: file.to_string(),
                line: i + 1,
                keyword: kw,
                text: line.to_string(),
                in_match,
            });
        }
    }
    out
}

impl Sshd {
    /// An `Include` argument as a path (relative ones are relative to the main config's
    /// folder, `/etc/ssh`).
    fn resolve(&self, glob: &str) -> String {
        if glob.starts_with('/') {
            glob.to_string()
        } else {
            let dir = Path::new(&self.main_config)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("/etc/ssh");
            format!("{}/{glob}", dir.trim_end_matches('/'))
        }
    }

    /// The setting lines sshd reads before the drop-in, or why the drop-in would not be read.
    fn read_before(&self, main: &str, includes: &[Included]) -> Result<Vec<Directive>, String> {
        let mut before = Vec::new();
        let mut in_match = None;
        for (i, line) in main.lines().enumerate() {
            let n = i + 1;
            let Some((kw, rest)) = keyword(line) else {
                continue;
            };
            if kw == "match" && in_match.is_none() {
                in_match = Some(n);
            }
            if kw == "include" {
                let globs: Vec<String> = rest.split_whitespace().map(|g| self.resolve(g)).collect();
                if let Some(k) = globs
                    .iter()
                    .position(|g| glob_match(g, &self.file, Syntax::Paths))
                {
                    if let Some(m) = in_match {
                        return Err(format!(
                            "the Include at {}:{n} that reads {} is inside the Match block \
                             of line {m}: the settings would apply to matching connections \
                             only; move the Include above every Match block",
                            self.main_config, self.file
                        ));
                    }
                    for inc in includes.iter().filter(|inc| {
                        inc.line == n
                            && (inc.glob < k
                                || (inc.glob == k && inc.path.as_bytes() < self.file.as_bytes()))
                    }) {
                        before.extend(directives(&inc.path, &inc.content, false));
                    }
                    return Ok(before);
                }
                for inc in includes.iter().filter(|inc| inc.line == n) {
                    before.extend(directives(&inc.path, &inc.content, in_match.is_some()));
                }
            }
            before.push(Directive {
                file: self.main_config.clone(),
                line: n,
                keyword: kw,
                text: line.to_string(),
                in_match: in_match.is_some(),
            });
        }
        Err(format!(
            "{main_config} has no Include that reads {file}, so sshd would ignore the drop-in; \
             add `Include {dir}/*.conf` as the first setting of {main_config} (Debian's \
             default), or set `file` to a file it includes",
            main_config = self.main_config,
            file = self.file,
            dir = Path::new(&self.file)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("/etc/ssh/sshd_config.d"),
        ))
    }
}

/// `sshd -T` output as keyword -> values.
fn effective(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(k.to_string()).or_default().insert(v.to_string());
    }
    map
}

/// The effective values that differ between `sshd -T` and `sshd -T -o …`: keyword, before,
/// after (`None`: not printed).
fn effective_changes(actual: &str, desired: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let (a, d) = (effective(actual), effective(desired));
    let keys: BTreeSet<&String> = a.keys().chain(d.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != d.get(*k))
        .map(|k| {
            let (a, d) = (a.get(k), d.get(k));
            // Several values are shown one a line, as a unified diff.
            let multi = a.is_some_and(|v| v.len() > 1) || d.is_some_and(|v| v.len() > 1);
            let join = |s: Option<&BTreeSet<String>>| {
                s.map(|v| {
                    let mut t = v.iter().cloned().collect::<Vec<_>>().join("\n");
                    if multi {
                        t.push('\n');
                    }
                    t
                })
            };
            (k.clone(), join(a), join(d))
        })
        .collect()
}

/// The fields of an `sshd` step: the drop-in's content, and each keyword whose effective
/// value (`sshd -T`) changes, shown as `effective KEYWORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshdField {
    Content,
    Effective(String),
}

impl Field for SshdField {
    fn name(&self) -> String {
        match self {
            SshdField::Content => FileField::Content.text().into(),
            SshdField::Effective(kw) => format!("effective {kw}"),
        }
    }

    fn of(name: &str) -> Option<SshdField> {
        if name == FileField::Content.text() {
            return Some(SshdField::Content);
        }
        Some(SshdField::Effective(
            name.strip_prefix("effective ")?.to_string(),
        ))
    }
}

impl From<FileField> for SshdField {
    fn from(_: FileField) -> SshdField {
        // content_changes makes content changes only.
        SshdField::Content
    }
}

/// What the probe found, with its output condensed (quoted by errors).
pub struct SshdFound {
    obs: Observed,
    condensed: String,
}

impl Resource for Sshd {
    fn risky(&self) -> bool {
        true
    }

    fn id(&self) -> String {
        format!("sshd {}", self.file)
    }

    fn probe(&self) -> Script {
        let mut desired = Script::new().raw("sshd -T -f \"$m\"");
        for line in &self.lines {
            desired = desired.raw(" -o ").arg(line);
        }
        Script::new()
            .raw("(\n")
            .raw(PATH)
            .raw(B64)
            .raw("m=")
            .arg(&self.main_config)
            .raw("\np=")
            .arg(&self.file)
            .raw(
                "\necho 'rampart-sshd 1'\n\
                 if command -v sshd >/dev/null 2>&1; then printf 'sshd %s\\n' \"$(command -v sshd)\"; \
                 else echo 'sshd none'; fi\n",
            )
            .then(service_script(self.service.as_deref()))
            .raw(
                "if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then\n\
                 \x20 printf 'service %s %s\\n' \"$svc\" \"$(systemctl show -p LoadState --value \"$svc.service\" 2>/dev/null)\"\n\
                 else printf 'service %s n/a\\n' \"$svc\"; fi\n\
                 if [ -f \"$m\" ]; then\n\
                 \x20 printf 'main content %s\\n' \"$(b64 <\"$m\")\"\n\
                 \x20 awk 'tolower($1) == \"include\" { $1 = \"\"; print NR, $0 }' \"$m\" |\n\
                 \x20 while read -r n globs; do\n\
                 \x20   k=0\n\
                 \x20   set -f\n\
                 \x20   for g in $globs; do\n\
                 \x20     set +f\n\
                 \x20     case $g in /*) ;; *) g=\"${m%/*}/$g\" ;; esac\n\
                 \x20     for f in $g; do\n\
                 \x20       [ -f \"$f\" ] || continue\n\
                 \x20       printf 'include %s %s %s %s\\n' \"$n\" \"$k\" \"$(printf '%s' \"$f\" | b64)\" \"$(b64 <\"$f\")\"\n\
                 \x20     done\n\
                 \x20     k=$((k + 1))\n\
                 \x20     set -f\n\
                 \x20   done\n\
                 \x20   set +f\n\
                 \x20 done\n\
                 else\n\
                 \x20 echo 'main none'\n\
                 fi\n",
            )
            .raw(FILE_PROBE)
            .raw(
                "if command -v sshd >/dev/null 2>&1; then\n\
                 \x20 a=$(sshd -T -f \"$m\" 2>/dev/null); ra=$?\n\
                 \x20 d=$(",
            )
            .then(desired.clone())
            .raw(
                " 2>/dev/null); rd=$?\n\
                 \x20 ks=$( { printf '%s\\n' \"$a\" | sort -u; printf '%s\\n' \"$d\" | sort -u; } | sort | uniq -u | cut -d ' ' -f 1 | sort -u | tr '\\n' ' ')\n\
                 \x20 only() { printf '%s\\n' \"$1\" | awk -v ks=\" $ks\" 'index(ks, \" \" $1 \" \") > 0'; }\n\
                 \x20 if [ $ra -eq 0 ]; then printf 'actual ok %s\\n' \"$(only \"$a\" | b64)\"\n\
                 \x20 else printf 'actual failed %s\\n' \"$(sshd -T -f \"$m\" 2>&1 >/dev/null | b64)\"; fi\n\
                 \x20 if [ $rd -eq 0 ]; then printf 'desired ok %s\\n' \"$(only \"$d\" | b64)\"\n\
                 \x20 else printf 'desired failed %s\\n' \"$(",
            )
            .then(desired)
            .raw(
                " 2>&1 >/dev/null | b64)\"; fi\n\
                 fi\n\
                 echo end\n)\n",
            )
    }
}

impl Typed for Sshd {
    type Observed<'a> = SshdFound;
    type Field = SshdField;

    fn parse(&self, probe_output: &str) -> Result<SshdFound, ProbeError> {
        Ok(SshdFound {
            obs: parse(probe_output)?,
            condensed: condensed(probe_output),
        })
    }

    fn compare(&self, found: &SshdFound) -> Result<Verdict<SshdField>, ProbeError> {
        let obs = &found.obs;
        let err = |m: String| ProbeError::new(m, &found.condensed);
        let (mut changes, create) =
            content_changes(&obs.file, &self.file, &self.content, "an sshd step").map_err(err)?;
        let content_in_line = changes.is_empty();
        let verdict = |changes: Vec<Change<SshdField>>| {
            if create {
                Verdict::Create(changes)
            } else {
                Verdict::Modify(changes)
            }
        };
        if obs.sshd.is_none() {
            return Ok(if content_in_line {
                Verdict::InLine(format!(
                    "{} is in line: sshd is not installed here, so only the file is checked",
                    self.id()
                ))
            } else {
                verdict(changes)
            });
        }
        if let Some(state) = obs.unit.as_deref().filter(|s| *s != "loaded") {
            return Err(err(format!(
                "systemd has no unit {}.service to reload (its load state: {}); set `service` \
                 to sshd's unit",
                obs.service,
                if state.is_empty() { "none" } else { state }
            )));
        }
        let Some(main) = &obs.main else {
            return Err(err(format!(
                "sshd is installed but {} does not exist",
                self.main_config
            )));
        };
        let before = if self.file == self.main_config {
            Vec::new()
        } else {
            self.read_before(main, &obs.includes).map_err(&err)?
        };
        let actual = match obs.actual.as_ref().expect("parse checks") {
            Ok(t) => t,
            Err(e) => {
                return Err(err(format!(
                    "sshd -T fails on the current configuration:\n{}",
                    e.trim_end()
                )));
            }
        };
        let desired = match obs.desired.as_ref().expect("parse checks") {
            Ok(t) => t,
            Err(e) => {
                return Err(err(format!(
                    "sshd refuses these settings:\n{}",
                    e.trim_end()
                )));
            }
        };
        let differ = effective_changes(actual, desired);
        let mut shadowed = Vec::new();
        for (kw, _, _) in &differ {
            if ACCUMULATING.contains(&kw.as_str()) {
                continue;
            }
            shadowed.extend(
                before
                    .iter()
                    .filter(|d| !d.in_match && d.keyword == *kw)
                    .map(Directive::shown),
            );
        }
        if !shadowed.is_empty() {
            return Err(err(format!(
                "sshd uses the first value it reads, and these lines come before {}: the \
                 drop-in cannot change them; remove them or give them the wanted value:\n  {}",
                self.file,
                shadowed.join("\n  ")
            )));
        }
        if content_in_line && !differ.is_empty() {
            let names: Vec<&str> = differ.iter().map(|(k, _, _)| k.as_str()).collect();
            return Err(err(format!(
                "{} is in line but sshd's effective values differ ({}): another file sets \
                 them first",
                self.file,
                names.join(", ")
            )));
        }
        if content_in_line {
            return Ok(Verdict::InLine(format!("{} is in line", self.id())));
        }
        for (kw, a, d) in differ {
            changes.push(Change::of(SshdField::Effective(kw), a, d));
        }
        Ok(verdict(changes))
    }

    /// As a notified handler: the configuration checked and sshd reloaded, under the dead-man
    /// switch, without writing the drop-in.
    fn converge(&self, work: Work<'_, SshdField>, ctx: &ApplyContext) -> Script {
        let changes = match work {
            Work::Converge(Verdict::Create(c) | Verdict::Modify(c)) => c,
            Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) => return Script::new(),
            Work::Notified => &Vec::new(),
        };
        let dm = deadman_dir(ctx);
        let mut s = Script::new()
            .raw(PATH)
            .then(self.functions(&dm))
            .raw("d=")
            .arg(parent(&self.file).unwrap_or("/"))
            .raw(
                "\ncommand -v sshd >/dev/null 2>&1 || die \"sshd is not installed\"\n\
                 [ -d \"$d\" ] || (umask 022 && mkdir -p \"$d\") || die \"cannot create $d\"\n\
                 { mkdir -p \"$dm\" && chmod 700 \"$dm\"; } || die \"cannot create $dm\"\n",
            )
            .then(DROP_IN_ASIDE.keep());
        if changes.iter().any(|c| c.field == SshdField::Content) {
            s = s.then(write_file(&self.file, &self.content, ctx));
        }
        apply_script(s.raw(
            "if ! out=$(sshd -t -f \"$m\" 2>&1); then\n\
             \x20 put_back || printf 'rampart: could not put the previous %s back\\n' \"$p\" >&2\n\
             \x20 die \"sshd refuses the new configuration; nothing was reloaded and the previous $p is back in place:\n$out\"\n\
             fi\n",
        )
        .then(deadman_arm(ctx, "sshd", self.restore(&dm)))
        .raw(
            "[ $? -eq 0 ] || { put_back; die \"cannot arm the dead-man switch; the previous $p is back in place\"; }\n\
             if ! out=$(reload_sshd 2>&1); then\n\
             \x20 put_back; reload_sshd >/dev/null 2>&1\n\
             \x20 die \"cannot reload sshd ($svc); the previous $p is back in place:\n$out\"\n\
             fi\n\
             [ -z \"$out\" ] || printf '%s\\n' \"$out\"\n",
        ))
    }
}

/// The drop-in, kept in the dead-man folder while a reload waits for confirmation.
const DROP_IN_ASIDE: Aside = Aside {
    var: "p",
    saved: "sshd.prev",
    none: "sshd.none",
};

impl Sshd {
    /// Variables and functions shared by the apply and the dead-man restore: `$p`, `$m`,
    /// `$dm`, `$svc`, `put_back` (the saved drop-in back in place, or the new one removed)
    /// and `reload_sshd`.
    fn functions(&self, dm: &str) -> Script {
        Script::new()
            .raw("p=")
            .arg(&self.file)
            .raw("\nm=")
            .arg(&self.main_config)
            .raw("\ndm=")
            .arg(dm)
            .raw("\n")
            .then(service_script(self.service.as_deref()))
            .raw("put_back() {\n")
            .then(DROP_IN_ASIDE.put_back())
            .raw(
                "}\n\
                 listeners() {\n\
                 \x20 ss -Hltne 2>/dev/null | awk -v ports=\" $1 \" '{ n = split($4, a, \":\"); \
                 if (index(ports, \" \" a[n] \" \")) for (i = 5; i <= NF; i++) if ($i ~ /^ino:/) print $i }'\n\
                 }\n\
                 fresh() {\n\
                 \x20 for port in $1; do\n\
                 \x20   cur=$(listeners \"$port\")\n\
                 \x20   [ -n \"$cur\" ] || return 1\n\
                 \x20   for ino in $cur; do case \" $2 \" in *\" $ino \"*) return 1 ;; esac; done\n\
                 \x20 done\n\
                 }\n\
                 sync_socket() {\n\
                 \x20 sd=/etc/systemd/system/$svc.socket.d\n\
                 \x20 # sshd -T wants its privilege separation folder, which systemd removes with a\n\
                 \x20 # stopped ssh.service (its RuntimeDirectory): the restore runs then.\n\
                 \x20 [ -d /run/sshd ] || mkdir -m 0755 /run/sshd || return 1\n\
                 \x20 want=$(sshd -T -f \"$m\" 2>/dev/null | awk '$1 == \"listenaddress\" { n = split($2, a, \":\"); h = substr($2, 1, length($2) - length(a[n]) - 1); \
                 if (h == \"0.0.0.0\" || h == \"[::]\") print \"[::]:\" a[n]; else print $2 }' | sort -u)\n\
                 \x20 [ -n \"$want\" ] || { echo \"sshd -T names no listen address\" >&2; return 1; }\n\
                 \x20 have=$(systemctl show -p Listen --value \"$svc.socket\" | tr ' ' '\\n' | grep -v '^(' | grep . | sort -u)\n\
                 \x20 [ \"$want\" != \"$have\" ] || return 0\n\
                 \x20 mkdir -p \"$sd\" || return 1\n\
                 \x20 { printf '# Written by rampart: where sshd_config says sshd listens.\\n[Socket]\\nListenStream=\\n'\n\
                 \x20   printf '%s\\n' \"$want\" | sed 's/^\\[::\\]:\\([0-9]*\\)$/\\1/; s/^/ListenStream=/'; } >\"$sd/.rampart-listen.tmp\" &&\n\
                 \x20   chmod 0644 \"$sd/.rampart-listen.tmp\" && mv -f \"$sd/.rampart-listen.tmp\" \"$sd/rampart-listen.conf\" || return 1\n\
                 \x20 systemctl daemon-reload || return 1\n\
                 \x20 # A socket-started sshd (Accept=no) holds the old socket too: it goes first. Its\n\
                 \x20 # sessions (ours included) stay: ssh.service kills only its main process.\n\
                 \x20 if systemctl is-active --quiet \"$svc.service\"; then systemctl stop \"$svc.service\" || return 1; fi\n\
                 \x20 systemctl restart \"$svc.socket\" || return 1\n\
                 \x20 echo \"$svc.socket now listens on $(echo $want)\"\n\
                 }\n\
                 reload_sshd() {\n\
                 \x20 ports=$(sshd -T -f \"$m\" 2>/dev/null | awk '$1 == \"port\" { print $2 }' | tr '\\n' ' ')\n\
                 \x20 old=$(listeners \"$ports\" | tr '\\n' ' ')\n\
                 \x20 if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then\n\
                 \x20   # Socket activation (ssh.socket, Ubuntu 24.04's default): systemd listens, where\n\
                 \x20   # the socket unit says; a Port or ListenAddress change must reach it, and a\n\
                 \x20   # running sshd goes so that the next connection starts one with the new settings.\n\
                 \x20   if [ \"$(systemctl is-active \"$svc.socket\" 2>/dev/null)\" = active ]; then\n\
                 \x20     sync_socket || { echo \"cannot move $svc.socket to sshd's listen addresses\" >&2; return 1; }\n\
                 \x20     if systemctl is-active --quiet \"$svc.service\"; then systemctl stop \"$svc.service\" || return 1; fi\n\
                 \x20     return 0\n\
                 \x20   fi\n\
                 \x20   if [ \"$(systemctl show -p LoadState --value \"$svc.service\")\" != loaded ]; then\n\
                 \x20     echo \"systemd has no unit $svc.service\" >&2; return 1\n\
                 \x20   fi\n\
                 \x20   if ! systemctl is-active --quiet \"$svc.service\"; then\n\
                 \x20     echo \"$svc.service is not running: not reloaded\"; return 0\n\
                 \x20   fi\n\
                 \x20   systemctl reload \"$svc.service\" || return 1\n\
                 \x20 elif command -v rc-service >/dev/null 2>&1; then rc-service \"$svc\" reload || return 1\n\
                 \x20 elif [ -f /run/sshd.pid ]; then kill -HUP \"$(cat /run/sshd.pid)\" || return 1\n\
                 \x20 else echo \"no systemd, no OpenRC and no /run/sshd.pid: cannot reload sshd\" >&2; return 1\n\
                 \x20 fi\n\
                 \x20 # sshd re-executes itself on SIGHUP: its listening sockets close and open anew.\n\
                 \x20 # Wait (10 s at most) for new ones on every port, so that the next connection\n\
                 \x20 # (the controller's confirmation) is not refused.\n\
                 \x20 [ -n \"$ports\" ] || return 0\n\
                 \x20 command -v ss >/dev/null 2>&1 || { sleep 1; return 0; }\n\
                 \x20 i=0\n\
                 \x20 until fresh \"$ports\" \"$old\"; do\n\
                 \x20   i=$((i + 1))\n\
                 \x20   [ $i -le 100 ] || { echo \"sshd is not listening on port $ports 10 s after the reload\"; return 0; }\n\
                 \x20   sleep 0.1\n\
                 \x20 done\n\
                 }\n",
            )
    }

    /// The dead-man switch's restore: the previous drop-in back, sshd reloaded.
    fn restore(&self, dm: &str) -> Script {
        Script::new()
            .raw(PATH)
            .then(self.functions(dm))
            .raw("put_back\nreload_sshd\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::b64;
    use crate::resource::risky::bed::Bed;
    use serde_json::json;
    use std::time::Duration;

    fn sshd(v: Value) -> Sshd {
        Sshd::try_from(params::<SshdParams>(v).unwrap()).unwrap()
    }

    fn sshd_err(v: Value) -> String {
        match params::<SshdParams>(v) {
            Err(e) => e.0,
            Ok(p) => Sshd::try_from(p).unwrap_err().0,
        }
    }

    /// Debian 12's sshd_config as the testbed has it (comments trimmed).
    const DEBIAN_MAIN: &str = "# This is the sshd server system-wide configuration file.\n\
        \n\
        Include /etc/ssh/sshd_config.d/*.conf\n\
        \n\
        KbdInteractiveAuthentication no\n\
        UsePAM yes\n\
        X11Forwarding yes\n\
        PrintMotd no\n\
        AcceptEnv LANG LC_*\n\
        Subsystem\tsftp\t/usr/lib/openssh/sftp-server\n";

    /// Lines of `sshd -T` on a testbed host (OpenSSH 9.2), trimmed.
    const ACTUAL: &str = "port 22\naddressfamily any\nlistenaddress [::]:22\n\
        listenaddress 0.0.0.0:22\nusepam yes\nlogingracetime 120\nmaxauthtries 6\n\
        permitrootlogin without-password\nx11forwarding yes\nacceptenv LANG\nacceptenv LC_*\n\
        usedns no\n";

    /// A probe output with these parts.
    struct Probe {
        main: Option<String>,
        /// Include line, glob index, path, content.
        includes: Vec<(usize, usize, String, String)>,
        file: Option<String>,
        actual: Result<String, String>,
        desired: Result<String, String>,
    }

    impl Probe {
        /// A testbed host: Debian's main config, the testbed's 00-testbed.conf, `ACTUAL`.
        fn debian(file: Option<&str>, desired: Result<String, String>) -> Probe {
            Probe {
                main: Some(DEBIAN_MAIN.into()),
                includes: vec![(
                    3,
                    0,
                    "/etc/ssh/sshd_config.d/00-testbed.conf".into(),
                    "UseDNS no\n".into(),
                )],
                file: file.map(String::from),
                actual: Ok(ACTUAL.into()),
                desired,
            }
        }

        fn text(&self) -> String {
            let mut out = "rampart-sshd 1\nsshd /usr/sbin/sshd\nservice ssh loaded\n".to_string();
            match &self.main {
                Some(m) => out.push_str(&format!("main content {}\n", b64(m))),
                None => out.push_str("main none\n"),
            }
            for (n, k, p, c) in &self.includes {
                out.push_str(&format!("include {n} {k} {} {}\n", b64(p), b64(c)));
            }
            match &self.file {
                Some(c) => out.push_str(&format!("file content {}\n", b64(c))),
                None => out.push_str("file none\n"),
            }
            for (name, r) in [("actual", &self.actual), ("desired", &self.desired)] {
                match r {
                    Ok(t) => out.push_str(&format!("{name} ok {}\n", b64(t))),
                    Err(e) => out.push_str(&format!("{name} failed {}\n", b64(e))),
                }
            }
            out.push_str("end\n");
            out
        }
    }

    /// `ACTUAL` with one edit.
    fn edited(from: &str, to: &str) -> Result<String, String> {
        assert!(ACTUAL.contains(from));
        Ok(ACTUAL.replace(from, to))
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::new(field, before.map(String::from), after.map(String::from))
    }

    #[test]
    fn settings_are_rendered_by_keyword_kind() {
        let s = sshd(json!({"settings": {
            "PermitRootLogin": false,
            "MaxAuthTries": 3,
            "LogLevel": "VERBOSE",
            "Ciphers": ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"],
            "ListenAddress": ["10.0.0.1", "::1"],
            "AuthenticationMethods": ["publickey,password", "publickey"],
            "X11Forwarding": true,
        }}));
        assert_eq!(
            s.content,
            "# Managed by rampart (sshd step): edits here are overwritten.\n\
             PermitRootLogin no\nMaxAuthTries 3\nLogLevel VERBOSE\n\
             Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com\n\
             ListenAddress 10.0.0.1\nListenAddress ::1\n\
             AuthenticationMethods publickey,password publickey\nX11Forwarding yes\n"
        );
        assert_eq!(s.file, DEFAULT_FILE);
        assert_eq!(s.id(), "sshd /etc/ssh/sshd_config.d/10-rampart.conf");
        assert!(s.risky());
    }

    #[test]
    fn bad_parameters_are_refused_with_the_reason() {
        let cases = [
            (json!({"settings": {}}), "settings is empty"),
            (
                json!({"settings": {"Match": "User x"}}),
                "`Match` is not supported",
            ),
            (
                json!({"settings": {"include": "/x"}}),
                "`include` is not supported",
            ),
            (
                json!({"settings": {"PermitRootLogin": "no", "permitrootlogin": "yes"}}),
                "`permitrootlogin` is given twice",
            ),
            (
                json!({"settings": {"Banner": "x\nPermitRootLogin yes"}}),
                "contains a newline",
            ),
            (
                json!({"settings": {"Permit Root": "no"}}),
                "is not an sshd_config keyword",
            ),
            (json!({"settings": {"AllowUsers": []}}), "is an empty list"),
            (json!({"settings": {"Banner": null}}), "has no value"),
            (json!({"settings": {"Banner": ""}}), "has an empty value"),
            (
                json!({"settings": {"Banner": {"a": 1}}}),
                "must be a string",
            ),
            (
                json!({"settings": {"Port": 22}, "file": "x.conf"}),
                "absolute path",
            ),
            (
                json!({"settings": {"Port": 22}, "file": "/etc/../x"}),
                "not a plain path",
            ),
            (
                json!({"settings": {"Port": 22}, "service": "ssh; reboot"}),
                "not a unit name",
            ),
            (
                json!({"settings": {"Port": 22}, "sevice": "ssh"}),
                "unknown field `sevice`",
            ),
        ];
        for (v, want) in cases {
            let e = sshd_err(v.clone());
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn globs_match_like_fnmatch_with_pathname() {
        let m = |p, s| glob_match(p, s, Syntax::Paths);
        assert!(m(
            "/etc/ssh/sshd_config.d/*.conf",
            "/etc/ssh/sshd_config.d/10-rampart.conf"
        ));
        assert!(!m(
            "/etc/ssh/sshd_config.d/*.conf",
            "/etc/ssh/sshd_config.d/a/b.conf"
        ));
        assert!(!m(
            "/etc/ssh/sshd_config.d/*.conf",
            "/etc/ssh/sshd_config.d/10.conf.bak"
        ));
        assert!(m("/etc/ssh/x/[0-9]?-*.conf", "/etc/ssh/x/10-a.conf"));
        assert!(!m("/etc/ssh/x/[!0-9]*", "/etc/ssh/x/10-a.conf"));
        assert!(m("/etc/ssh/x/*", "/etc/ssh/x/"));
        assert!(m("/a/[b", "/a/[b"));
    }

    #[test]
    fn a_fresh_debian_host_gets_the_drop_in_and_the_effective_changes() {
        let s =
            sshd(json!({"settings": {"MaxAuthTries": 3, "PermitRootLogin": "prohibit-password"}}));
        let out = Probe::debian(None, edited("maxauthtries 6", "maxauthtries 3")).text();
        assert_eq!(
            s.diff(&out).unwrap(),
            Verdict::Create(vec![
                change("content", None, Some(&s.content)),
                change("effective maxauthtries", Some("6"), Some("3")),
            ]),
            "prohibit-password is sshd's without-password: no effective change"
        );
    }

    #[test]
    fn in_line_when_the_drop_in_and_the_effective_values_agree() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}}));
        let mut p = Probe::debian(Some(&s.content), edited("maxauthtries 6", "maxauthtries 3"));
        p.actual = edited("maxauthtries 6", "maxauthtries 3");
        p.includes.push((
            3,
            0,
            "/etc/ssh/sshd_config.d/10-rampart.conf".into(),
            "MaxAuthTries 3\n".into(),
        ));
        assert_eq!(
            s.diff(&p.text()).unwrap(),
            Verdict::InLine("sshd /etc/ssh/sshd_config.d/10-rampart.conf is in line".into())
        );
    }

    #[test]
    fn a_hand_edited_drop_in_is_a_content_diff() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}}));
        let old = format!("{}MaxAuthTries 5\n", HEADER);
        let mut p = Probe::debian(Some(&old), edited("maxauthtries 6", "maxauthtries 3"));
        p.actual = edited("maxauthtries 6", "maxauthtries 5");
        assert_eq!(
            s.diff(&p.text()).unwrap(),
            Verdict::Modify(vec![
                change("content", Some(&old), Some(&s.content)),
                change("effective maxauthtries", Some("5"), Some("3")),
            ])
        );
    }

    #[test]
    fn accumulating_keywords_compare_as_sets() {
        let s = sshd(json!({"settings": {"AcceptEnv": ["LANG", "TZ"]}}));
        let out = Probe::debian(
            None,
            edited(
                "acceptenv LC_*\n",
                "acceptenv LC_*\nacceptenv TZ\nacceptenv LANG\n",
            ),
        )
        .text();
        assert_eq!(
            s.diff(&out).unwrap().changes()[1],
            change(
                "effective acceptenv",
                Some("LANG\nLC_*\n"),
                Some("LANG\nLC_*\nTZ\n")
            )
        );
    }

    #[test]
    fn an_earlier_setting_that_hides_ours_is_an_error_naming_it() {
        let s = sshd(json!({"settings": {"UseDNS": "yes"}}));
        let err = s
            .diff(&Probe::debian(None, edited("usedns no", "usedns yes")).text())
            .unwrap_err();
        assert!(
            err.message.contains(
                "these lines come before /etc/ssh/sshd_config.d/10-rampart.conf: the drop-in \
                 cannot change them"
            ) && err
                .message
                .contains("/etc/ssh/sshd_config.d/00-testbed.conf:1: UseDNS no"),
            "{}",
            err.message
        );
        // A file that sorts after ours does not hide it.
        let mut p = Probe::debian(None, edited("usedns no", "usedns yes"));
        p.includes = vec![(
            3,
            0,
            "/etc/ssh/sshd_config.d/50-cloud-init.conf".into(),
            "UseDNS no\n".into(),
        )];
        assert_eq!(s.diff(&p.text()).unwrap().action(), "create");
        // Nor does a line above the Include of a keyword we do not set; one we set does.
        let mut p = Probe::debian(None, edited("usedns no", "usedns yes"));
        p.main = Some("PermitRootLogin yes\nUseDNS no\nInclude sshd_config.d/*.conf\n".into());
        p.includes = vec![];
        let err = s.diff(&p.text()).unwrap_err();
        assert!(
            err.message.contains("/etc/ssh/sshd_config:2: UseDNS no")
                && !err.message.contains("PermitRootLogin"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_main_config_that_does_not_read_the_drop_in_is_an_error() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}}));
        let mut p = Probe::debian(None, edited("maxauthtries 6", "maxauthtries 3"));
        p.main = Some("Port 22\nUsePAM yes\n".into());
        p.includes = vec![];
        let err = s.diff(&p.text()).unwrap_err().message;
        assert!(
            err.contains(
                "/etc/ssh/sshd_config has no Include that reads \
                 /etc/ssh/sshd_config.d/10-rampart.conf"
            ) && err.contains("add `Include /etc/ssh/sshd_config.d/*.conf` as the first setting"),
            "{err}"
        );
        p.main = Some(
            "Match User backup\n  ForceCommand true\nInclude /etc/ssh/sshd_config.d/*.conf\n"
                .into(),
        );
        let err = s.diff(&p.text()).unwrap_err().message;
        assert!(err.contains("is inside the Match block of line 1"), "{err}");
    }

    #[test]
    fn settings_sshd_refuses_fail_the_plan_with_its_message() {
        let s = sshd(json!({"settings": {"PermitRootLogin": "maybe"}}));
        let out = Probe::debian(
            None,
            Err("command-line line 0: unsupported option \"maybe\".\n".into()),
        )
        .text();
        let err = s.diff(&out).unwrap_err().message;
        assert_eq!(
            err,
            "sshd refuses these settings:\ncommand-line line 0: unsupported option \"maybe\"."
        );
        let mut p = Probe::debian(None, edited("maxauthtries 6", "maxauthtries 3"));
        p.actual = Err("/etc/ssh/sshd_config line 3: Bad configuration option: Bogus".into());
        let err = s.diff(&p.text()).unwrap_err().message;
        assert!(
            err.starts_with("sshd -T fails on the current configuration:"),
            "{err}"
        );
    }

    #[test]
    fn a_service_systemd_does_not_know_fails_the_plan() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}, "service": "sshd"}));
        let out = Probe::debian(None, edited("maxauthtries 6", "maxauthtries 3"))
            .text()
            .replace("service ssh loaded", "service sshd not-found");
        assert_eq!(
            s.diff(&out).unwrap_err().message,
            "systemd has no unit sshd.service to reload (its load state: not-found); set \
             `service` to sshd's unit"
        );
        // Without systemd the name is not checked.
        let out = out.replace("service sshd not-found", "service sshd n/a");
        assert_eq!(s.diff(&out).unwrap().action(), "create");
    }

    #[test]
    fn without_sshd_only_the_content_is_compared() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}}));
        let out = "rampart-sshd 1\nsshd none\nservice sshd\nmain none\nfile none\nend\n";
        assert_eq!(
            s.diff(out).unwrap(),
            Verdict::Create(vec![change("content", None, Some(&s.content))])
        );
        let out = format!(
            "rampart-sshd 1\nsshd none\nservice sshd\nmain none\nfile content {}\nend\n",
            b64(&s.content)
        );
        assert_eq!(
            s.diff(&out).unwrap(),
            Verdict::InLine(
                "sshd /etc/ssh/sshd_config.d/10-rampart.conf is in line: sshd is not installed \
                 here, so only the file is checked"
                    .into()
            )
        );
    }

    #[test]
    fn errors_show_the_probe_output_without_its_base64_texts() {
        let s = sshd(json!({"settings": {"PermitRootLogin": "maybe"}}));
        let out = Probe::debian(None, Err("unsupported option \"maybe\".".into())).text();
        let shown = s.diff(&out).unwrap_err().output;
        assert_eq!(
            shown,
            "rampart-sshd 1\nsshd /usr/sbin/sshd\nservice ssh loaded\nmain content <236 bytes>\n\
             include 3 0 <38 bytes> VXNlRE5TIG5vCg==\nfile none\nactual ok <209 bytes>\n\
             desired failed dW5zdXBwb3J0ZWQgb3B0aW9uICJtYXliZSIu\nend"
        );
    }

    #[test]
    fn junk_and_cut_short_output_are_probe_errors() {
        let s = sshd(json!({"settings": {"MaxAuthTries": 3}}));
        let good = Probe::debian(None, edited("maxauthtries 6", "maxauthtries 3")).text();
        let cases = [
            ("", "the probe printed nothing"),
            ("sh: 1: awk: not found\n", "expected `rampart-sshd 1` first"),
            (&good.replace("end\n", ""), "no `end` line"),
            (
                &good.replace("service ssh loaded\n", "service ssh loaded\nbogus line\n"),
                "unexpected line \"bogus line\"",
            ),
            (
                &good.replace("file none", "file content !!"),
                "file: not base64",
            ),
            (&good.replace("main content", "main"), "unexpected line"),
            (&good.replace("desired", "actual"), "`actual` twice"),
            (&good.replace("service ssh loaded\n", ""), "line is missing"),
            (&good.replace("end\n", "end\nmore\n"), "after `end`"),
        ];
        for (out, want) in cases {
            let e = s.diff(out).unwrap_err();
            assert!(e.message.contains(want), "{out:?}: {}", e.message);
        }
    }

    // ---- the scripts, on this machine, with stand-ins for sshd and the service manager ----

    /// A bed with a main config that includes the drop-in's folder, an `sshd` and an
    /// `rc-service` that records reloads.
    fn sshd_bed(deadman_seconds: u32) -> Bed {
        let bed = Bed::new(deadman_seconds);
        std::fs::create_dir_all(bed.path("ssh/sshd_config.d")).unwrap();
        std::fs::write(
            bed.path("ssh/sshd_config"),
            "Include sshd_config.d/*.conf\nUsePAM yes\n",
        )
        .unwrap();
        let d = bed.dir.path().display();
        // sshd -t refuses any config line with "Bogus"; -T prints the -o settings and the
        // files' settings, lowercased, the first value of a keyword winning.
        bed.stub(
            "sshd",
            &format!(
                "#!/bin/sh\nconf={d}/ssh\nmode=$1; shift\n\
                 if grep -qs Bogus $conf/sshd_config.d/*.conf; then\n\
                 \x20 echo \"$conf/sshd_config.d/10-rampart.conf line 2: Bad configuration option: Bogus\" >&2; exit 255\n\
                 fi\n\
                 [ \"$mode\" = -t ] && exit 0\n\
                 {{ while [ $# -gt 0 ]; do [ \"$1\" = -o ] && printf '%s\\n' \"$2\"; shift; done\n\
                 \x20 cat $conf/sshd_config.d/*.conf 2>/dev/null; cat $conf/sshd_config; }} |\n\
                 \x20 grep -v -e '^#' -e '^Include' -e '^-f' | awk '{{ k = tolower($1); if (!(k in s)) {{ s[k] = 1; $1 = k; print }} }}'\n"
            ),
        );
        bed.stub(
            "rc-service",
            &format!("#!/bin/sh\necho \"$*\" >>{d}/reloads\n"),
        );
        bed
    }

    fn resource(bed: &Bed, settings: Value) -> Sshd {
        let mut s = sshd(json!({
            "settings": settings,
            "file": bed.path("ssh/sshd_config.d/10-rampart.conf").display().to_string(),
        }));
        s.main_config = bed.path("ssh/sshd_config").display().to_string();
        s
    }

    fn reloads(bed: &Bed) -> String {
        std::fs::read_to_string(bed.path("reloads")).unwrap_or_default()
    }

    #[tokio::test]
    async fn apply_writes_validates_arms_and_reloads_and_the_switch_restores() {
        let bed = sshd_bed(1);
        let dropin = bed.path("ssh/sshd_config.d/10-rampart.conf");
        std::fs::write(&dropin, "MaxAuthTries 5\n").unwrap();
        let s = resource(&bed, json!({"MaxAuthTries": 3}));
        let v = bed.diff(&s).await;
        assert_eq!(
            v.changes()[1],
            change("effective maxauthtries", Some("5"), Some("3"))
        );
        let out = bed.run(s.apply(&v, &bed.ctx)).await;
        assert!(out.success(), "{}", out.stderr_block());
        assert_eq!(std::fs::read_to_string(&dropin).unwrap(), s.content);
        assert_eq!(reloads(&bed), "sshd reload\n");
        assert!(bed.diff(&s).await.is_in_line());
        assert_eq!(
            std::fs::read_to_string(bed.path(&format!("state/backups/t1{}", dropin.display())))
                .unwrap(),
            "MaxAuthTries 5\n"
        );
        // Nobody confirms: after a second the host puts the old drop-in back and reloads.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            std::fs::read_to_string(&dropin).unwrap(),
            "MaxAuthTries 5\n"
        );
        assert_eq!(reloads(&bed), "sshd reload\nsshd reload\n");
    }

    #[tokio::test]
    async fn a_new_drop_in_is_removed_by_the_restore_and_a_confirmed_one_stays() {
        let bed = sshd_bed(1);
        let dropin = bed.path("ssh/sshd_config.d/10-rampart.conf");
        let s = resource(&bed, json!({"MaxAuthTries": 3}));
        let v = bed.diff(&s).await;
        assert_eq!(v.action(), "create");
        assert!(bed.run(s.apply(&v, &bed.ctx)).await.success());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !dropin.exists(),
            "the restore removes a drop-in that was not there"
        );

        let mut ctx = bed.ctx.clone();
        ctx.run_id = "t2".into();
        assert!(bed.run(s.apply(&v, &ctx)).await.success());
        let out = bed.run(super::super::deadman_disarm(&ctx)).await;
        assert!(out.success());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(std::fs::read_to_string(&dropin).unwrap(), s.content);
    }

    #[tokio::test]
    async fn a_config_sshd_refuses_is_put_back_and_nothing_is_reloaded() {
        let bed = sshd_bed(60);
        let dropin = bed.path("ssh/sshd_config.d/10-rampart.conf");
        std::fs::write(&dropin, "MaxAuthTries 5\n").unwrap();
        let s = resource(&bed, json!({"MaxAuthTries": 3, "Bogus": "x"}));
        // (The real sshd refuses this at plan time already; here the apply's own check.)
        let v = Verdict::Modify(vec![change("content", None, None)]);
        let out = bed.run(s.apply(&v, &bed.ctx)).await;
        assert!(!out.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "rampart: sshd refuses the new configuration; nothing was reloaded and the \
                 previous"
            ) && stderr.contains("line 2: Bad configuration option: Bogus"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&dropin).unwrap(),
            "MaxAuthTries 5\n"
        );
        assert_eq!(reloads(&bed), "", "not reloaded");
        assert!(
            !bed.path("state/deadman/t1/sshd.armed").exists(),
            "the switch is not armed"
        );
    }
}
