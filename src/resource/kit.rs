//! kit: what several resource types share.
//!
//! - [`Fields`]: the reader of `key=value` probe outputs (package, service, sysctl, unit,
//!   user, wireguard);
//! - [`DIE`]: the `die` shell function apply scripts fail through;
//! - config files written whole (unit, sysctl, wireguard): their probe ([`config_probe`]),
//!   parse ([`parse_config`]), diff ([`config_changes`]) and atomic write ([`write_config`]:
//!   a temporary file in the same folder, the mode given (0644; 0600 for WireGuard) and owner root set before the rename; what
//!   it replaces is first copied to the run's backup folder, the first copy of a run winning,
//!   as file.rs does; the temporary file and the rename are [`fsfile`](super::fsfile)'s).
//! - systemd units (service, unit, wireguard): [`RunState`], the probe of a unit's state
//!   ([`SYSTEMD_PROBE`], [`parse_systemd`]), the diff of `enabled` and `state`
//!   ([`systemd_changes`]) and the `systemctl` actions ([`systemctl`], [`enable_script`]);
//!   service.rs's module doc says what counts as enabled, started, masked.
//!
//! Shell text only through [`Script`].

use base64::Engine as _;
use serde::Deserialize;

use super::fsfile::{RENAME_TEMP, TEMP_TRAP, octal, parent, write_temp};
use super::{Change, ParamError, ProbeError};
use crate::remote::Script;

/// Defines `die MESSAGE`: prints `rampart: MESSAGE` on stderr and exits 1.
pub(super) const DIE: &str = "die() { printf 'rampart: %s\\n' \"$*\" >&2; exit 1; }\n";

// ---------------------------------------------------------------------------------------------
// Probe output reader, shared by the system resource types.

/// The `key=value` lines of a probe's output, between its header and `end`, so that a cut
/// short or garbled output is an error, never an empty state. A line `error=TEXT` makes the
/// read fail with TEXT.
pub struct Fields<'a> {
    out: &'a str,
    pub(super) pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    pub(super) fn read(
        out: &'a str,
        header: &str,
        known: &[&str],
    ) -> Result<Fields<'a>, ProbeError> {
        let mut lines = out.lines().skip_while(|l| l.trim().is_empty());
        match lines.next().map(str::trim_end) {
            Some(h) if h == header => {}
            Some(h) => {
                return Err(ProbeError::new(
                    format!("expected `{header}` on the first line, found {h:?}"),
                    out,
                ));
            }
            None => return Err(ProbeError::new("the probe printed nothing", out)),
        }
        Fields::after_header(out, lines, known)
    }

    /// The `key=value` lines of `out` up to its `end`, from `lines`: the lines of `out` after
    /// its header (for a reader that checks the header its own way).
    pub(super) fn after_header(
        out: &'a str,
        lines: impl Iterator<Item = &'a str>,
        known: &[&str],
    ) -> Result<Fields<'a>, ProbeError> {
        let err = |m: String| Err(ProbeError::new(m, out));
        let mut pairs = Vec::new();
        let mut ended = false;
        for line in lines {
            if ended {
                if line.trim().is_empty() {
                    continue;
                }
                return err(format!("text after `end`: {line:?}"));
            }
            if line.trim_end() == "end" {
                ended = true;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return err(format!("not a `key=value` line: {line:?}"));
            };
            if key == "error" {
                return err(format!("the probe failed: {value}"));
            }
            if !known.contains(&key) {
                return err(format!("unknown key {key:?}"));
            }
            pairs.push((key, value));
        }
        if !ended {
            return err("the output stops before its `end` line (cut short?)".into());
        }
        Ok(Fields { out, pairs })
    }

    pub(super) fn error(&self, message: impl Into<String>) -> ProbeError {
        ProbeError::new(message, self.out)
    }

    pub(super) fn one(&self, key: &str) -> Result<Option<&'a str>, ProbeError> {
        let mut found = self.all(key);
        let first = found.next();
        if found.next().is_some() {
            return Err(self.error(format!("`{key}` appears twice")));
        }
        Ok(first)
    }

    pub(super) fn need(&self, key: &str) -> Result<&'a str, ProbeError> {
        self.one(key)?
            .ok_or_else(|| self.error(format!("no `{key}` line")))
    }

    pub(super) fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.pairs
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// A whole number.
    pub(super) fn number(&self, key: &str) -> Result<u32, ProbeError> {
        let v = self.need(key)?;
        v.parse()
            .map_err(|_| self.error(format!("`{key}` is not a number: {v:?}")))
    }

    /// `yes` or `no`.
    pub(super) fn yes_no(&self, key: &str) -> Result<bool, ProbeError> {
        match self.need(key)? {
            "yes" => Ok(true),
            "no" => Ok(false),
            v => Err(self.error(format!("`{key}` is neither yes nor no: {v:?}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config files: probe, parse, diff, atomic write. Shared with sysctl.rs.

crate::fields! {
    /// The fields of a config file written whole.
    pub enum FileField {
        Content = "content",
        /// A symbolic link to replace.
        Type = "type",
    }
}

/// The keys [`config_probe`] prints.
pub(super) const FILE_KEYS: &[&str] = &["file", "content"];

/// An absolute path in plain form (no `.`, `..`, `//`, trailing `/`, control characters).
pub(super) fn check_config_path(ty: &str, path: &str) -> Result<(), ParamError> {
    let bad = |why: &str| Err(ParamError(format!("{ty}: path {path:?} {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute (it must start with /)");
    }
    if path.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if path.ends_with('/') {
        return bad("ends with /: it must name a file");
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("contains //, . or ..; write the plain path");
    }
    Ok(())
}

/// Shell text printing the state of the file at `path` (`file=`, `content=` lines). Sets `p`.
pub(super) fn config_probe(path: &str) -> Script {
    Script::new().raw("p=").arg(path).raw(
        "\nif [ -L \"$p\" ]; then\n\
         \x20 printf 'file=link %s\\n' \"$(readlink \"$p\" | base64 | tr -d '\\n')\"\n\
         elif [ -f \"$p\" ]; then\n\
         \x20 if c=$(base64 <\"$p\"); then\n\
         \x20   printf 'file=file\\ncontent=%s\\n' \"$(printf '%s' \"$c\" | tr -d '\\n')\"\n\
         \x20 else\n\
         \x20   printf 'error=cannot read %s\\n' \"$p\"\n\
         \x20 fi\n\
         elif [ -e \"$p\" ]; then\n\
         \x20 printf 'file=other\\n'\n\
         else\n\
         \x20 printf 'file=none\\n'\n\
         fi\n",
    )
}

/// What is at a config file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    Absent,
    File(Vec<u8>),
    Link(String),
    /// A folder, device, FIFO or socket.
    Other,
}

pub(super) fn parse_config(f: &Fields) -> Result<ConfigFile, ProbeError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |what: &str, text: &str| {
        b64.decode(text.trim())
            .map_err(|e| f.error(format!("the {what} is not base64: {e}")))
    };
    let kind = f.need("file")?;
    let content = f.one("content")?;
    let file = match kind.split_once(' ') {
        None if kind == "none" => ConfigFile::Absent,
        None if kind == "other" => ConfigFile::Other,
        None if kind == "file" => {
            let text = content.ok_or_else(|| f.error("no `content` line for a file"))?;
            return Ok(ConfigFile::File(decode("content", text)?));
        }
        Some(("link", target)) => {
            let bytes = decode("symlink target", target)?;
            let text = String::from_utf8_lossy(&bytes);
            ConfigFile::Link(text.strip_suffix('\n').unwrap_or(&text).to_string())
        }
        _ => return Err(f.error(format!("unknown `file={kind}`"))),
    };
    if content.is_some() {
        return Err(f.error(format!("a `content` line with `file={kind}`")));
    }
    Ok(file)
}

/// The changes that make `path` a regular file holding `want`: none, a `content` change, or a
/// `type` change (a symbolic link to replace) and the content. A folder or special file at the
/// path is an error.
pub(super) fn config_changes<F: From<FileField>>(
    path: &str,
    file: &ConfigFile,
    want: &str,
    f: &Fields,
) -> Result<Vec<Change<F>>, ProbeError> {
    let after = Some(want.to_string());
    Ok(match file {
        ConfigFile::Absent => vec![Change::of(FileField::Content.into(), None, after)],
        ConfigFile::File(have) if have == want.as_bytes() => vec![],
        ConfigFile::File(have) => {
            let before = match std::str::from_utf8(have) {
                Ok(t) => t.to_string(),
                Err(_) => format!("<{} bytes, not UTF-8 text>", have.len()),
            };
            vec![Change::of(FileField::Content.into(), Some(before), after)]
        }
        ConfigFile::Link(target) => vec![
            Change::of(
                FileField::Type.into(),
                Some(format!("a symlink to {target}")),
                Some("a file".into()),
            ),
            Change::of(FileField::Content.into(), None, after),
        ],
        ConfigFile::Other => {
            return Err(f.error(format!(
                "{path} is a folder or special file, not a regular file; not replacing it \
                 (add an absent step before this one)"
            )));
        }
    })
}

/// Shell text (inside a subshell that defines `die`) writing `content` to `path` atomically,
/// with `mode` (0644 for unit files and sysctl.d, 0600 for a WireGuard config), owned by root
/// when run as root, after copying what is there to `backup` (unless this run already holds a
/// copy). Makes a missing folder (0755).
pub(super) fn write_config(path: &str, content: &[u8], backup: &str, mode: u32) -> Script {
    Script::new()
        .raw("p=")
        .arg(path)
        .raw("\nd=")
        .arg(parent(path).unwrap_or("/"))
        .raw("\nb=")
        .arg(backup)
        .raw("\nbd=")
        .arg(parent(backup).unwrap_or("/"))
        .raw("\n")
        .raw(TEMP_TRAP)
        .raw(
            "if [ ! -d \"$d\" ]; then (umask 022 && mkdir -p \"$d\") || die \"cannot create the folder $d\"; fi\n\
             if [ -d \"$p\" ]; then die \"$p is a folder (or a symlink to one): not replacing it\"; fi\n\
             if { [ -e \"$p\" ] || [ -L \"$p\" ]; } && [ ! -e \"$b\" ] && [ ! -L \"$b\" ]; then\n\
             \x20 { mkdir -p \"$bd\" && cp -pP \"$p\" \"$b\"; } || die \"cannot back up $p to $b\"\n\
             fi\n",
        )
        .then(write_temp(content))
        .raw("chmod ")
        // Four octal digits: a shell word as it is.
        .raw(&octal(mode))
        .raw(
            " \"$t\" || die \"cannot set the mode of $t\"\n\
             if [ \"$(id -u)\" = 0 ]; then chown 0:0 \"$t\" || die \"cannot give $t to root\"; fi\n",
        )
        .raw(RENAME_TEMP)
}

// ---------------------------------------------------------------------------------------------
// systemd units: state probe, parse, diff, and the systemctl actions. Shared by service.rs,
// unit.rs and wireguard.rs.

/// `started` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Started,
    Stopped,
}

/// The keys [`systemd_probe`] prints.
pub(super) const SYSTEMD_KEYS: &[&str] = &["systemd", "load", "enabled", "active", "reload"];

/// Shell text printing the state of the unit named in `$n` as `key=value` lines (see the
/// module doc). Side-effect free.
pub(super) const SYSTEMD_PROBE: &str = r#"if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  printf 'systemd=yes\n'
  printf 'load=%s\n' "$(systemctl show -p LoadState --value -- "$n" 2>/dev/null)"
  printf 'enabled=%s\n' "$(systemctl is-enabled -- "$n" 2>/dev/null | head -n 1)"
  printf 'active=%s\n' "$(systemctl is-active -- "$n" 2>/dev/null | head -n 1)"
  printf 'reload=%s\n' "$(systemctl show -p NeedDaemonReload --value -- "$n" 2>/dev/null)"
else
  printf 'systemd=no\n'
fi
"#;

/// How `systemctl is-enabled` classes a unit (see the module doc's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enablement {
    /// `enabled`, `alias`.
    On,
    /// `enabled-runtime`: until the next boot only.
    Runtime,
    /// `disabled`, `linked`, `linked-runtime`.
    Off,
    /// `static`, `indirect`, `generated`, `transient`: no `[Install]` to switch.
    Fixed,
    /// `masked`, `masked-runtime`.
    Masked,
    /// Not found, or a word rampart does not know.
    Unknown,
}

impl Enablement {
    fn of(word: &str) -> Enablement {
        match word {
            "enabled" | "alias" => Enablement::On,
            "enabled-runtime" => Enablement::Runtime,
            "disabled" | "linked" | "linked-runtime" => Enablement::Off,
            "static" | "indirect" | "generated" | "transient" => Enablement::Fixed,
            "masked" | "masked-runtime" => Enablement::Masked,
            _ => Enablement::Unknown,
        }
    }
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `LoadState`: `loaded`, `not-found`, `masked`, `error`, `bad-setting`, …
    pub load: String,
    /// The word of `systemctl is-enabled` (empty when it printed none).
    pub enabled: String,
    /// The word of `systemctl is-active`.
    pub active: String,
    /// `NeedDaemonReload=yes`: the unit's files changed since systemd read them.
    pub needs_reload: bool,
}

impl UnitState {
    pub(super) fn enablement(&self) -> Enablement {
        Enablement::of(&self.enabled)
    }

    pub(super) fn masked(&self) -> bool {
        self.load == "masked" || self.enablement() == Enablement::Masked
    }

    pub(super) fn found(&self) -> bool {
        self.load != "not-found" && !self.load.is_empty()
    }

    pub(super) fn started(&self) -> bool {
        matches!(
            self.active.as_str(),
            "active" | "reloading" | "activating" | "refreshing"
        )
    }

    pub(super) fn stopped(&self) -> bool {
        matches!(self.active.as_str(), "inactive" | "failed")
    }
}

/// Reads the systemd keys; `None` when the host runs no systemd.
pub(super) fn parse_systemd(f: &Fields) -> Result<Option<UnitState>, ProbeError> {
    if !f.yes_no("systemd")? {
        return Ok(None);
    }
    Ok(Some(UnitState {
        load: f.need("load")?.to_string(),
        enabled: f.need("enabled")?.to_string(),
        active: f.need("active")?.to_string(),
        needs_reload: match f.need("reload")? {
            "yes" => true,
            // Empty for a unit systemd does not know.
            "no" | "" => false,
            v => return Err(f.error(format!("`reload` is neither yes nor no: {v:?}"))),
        },
    }))
}

crate::fields! {
    /// The fields of a unit's systemd state, shared with unit.rs and wireguard.rs.
    pub enum SystemdField {
        Enabled = "enabled",
        State = "state",
    }
}

fn shown(word: &str) -> Option<String> {
    (!word.is_empty()).then(|| word.to_string())
}

/// The `enabled` and `state` changes for unit `name` in state `s`, or an error that explains a
/// wish systemd cannot grant (masked, static, unknown unit). `will_exist`: a unit step is
/// about to write the unit's file, so a unit systemd does not know yet is no error.
pub(super) fn systemd_changes<F: From<SystemdField>>(
    name: &str,
    s: &UnitState,
    enabled: Option<bool>,
    state: Option<RunState>,
    will_exist: bool,
    f: &Fields,
) -> Result<Vec<Change<F>>, ProbeError> {
    let mut c = Vec::new();
    if enabled.is_none() && state.is_none() {
        return Ok(c);
    }
    let known = s.found() || s.masked();
    if !known && !will_exist {
        return Err(f.error(format!(
            "systemd has no unit {name} on this host (LoadState={}); install the package that \
             ships it, or add a unit step that writes it",
            if s.load.is_empty() { "?" } else { &s.load }
        )));
    }
    let wants_on = enabled == Some(true) || state == Some(RunState::Started);
    if s.masked() && wants_on {
        return Err(f.error(format!(
            "unit {name} is masked (is-enabled: {}), so it cannot be enabled or started; \
             if it should run, unmask it first (systemctl unmask {name}), else ask for \
             enabled: false and state: stopped",
            if s.enabled.is_empty() {
                "masked"
            } else {
                &s.enabled
            }
        )));
    }
    if let Some(want) = enabled {
        let e = if known {
            s.enablement()
        } else {
            Enablement::Unknown
        };
        let change = match (want, e) {
            (true, Enablement::On | Enablement::Fixed) => false,
            (false, Enablement::Off | Enablement::Masked) => false,
            (false, Enablement::Fixed) => {
                return Err(f.error(format!(
                    "unit {name} is {} (it has no [Install] section: other units pull it in), \
                     so it cannot be disabled; mask it to keep it from running \
                     (systemctl mask {name}), or drop `enabled`",
                    s.enabled
                )));
            }
            (true, Enablement::Unknown) | (false, Enablement::Unknown) if known => {
                return Err(f.error(format!(
                    "unit {name}: systemctl is-enabled says {:?}, which rampart does not know \
                     how to change",
                    s.enabled
                )));
            }
            // Not known yet (a unit step writes it): enable when wanted.
            (want, Enablement::Unknown) => want,
            _ => true,
        };
        if change {
            c.push(Change::of(
                SystemdField::Enabled.into(),
                if known { shown(&s.enabled) } else { None },
                Some(if want { "enabled" } else { "disabled" }.into()),
            ));
        }
    }
    if let Some(want) = state {
        let ok = match want {
            RunState::Started => s.started() && known,
            RunState::Stopped => s.stopped() || !known,
        };
        if !ok {
            c.push(Change::of(
                SystemdField::State.into(),
                if known { shown(&s.active) } else { None },
                Some(
                    match want {
                        RunState::Started => "active",
                        RunState::Stopped => "inactive",
                    }
                    .into(),
                ),
            ));
        }
    }
    Ok(c)
}

/// A sentence part for an in-line unit: `enabled, active`, with notes for masked and static.
pub(super) fn systemd_sentence(s: &UnitState) -> String {
    let mut words = Vec::new();
    if !s.enabled.is_empty() {
        words.push(match s.enablement() {
            Enablement::Fixed => format!("{} (pulled in by other units)", s.enabled),
            _ => s.enabled.clone(),
        });
    }
    if !s.active.is_empty() {
        words.push(s.active.clone());
    }
    words.join(", ")
}

/// Shell text: `systemctl ACTION` of the unit in `$n`; on failure, systemd's own status lines
/// go to stderr and the script dies. `ACTION` is rampart's own word.
pub(super) fn systemctl(action: &str) -> Script {
    let shows_status = matches!(action, "start" | "restart" | "reload");
    let mut s = Script::new()
        .raw("systemctl ")
        .raw(action)
        .raw(" -- \"$n\" || {\n");
    if shows_status {
        s = s.raw("  systemctl status --no-pager --lines=15 -- \"$n\" >&2 || true\n");
    }
    s.raw("  die \"systemctl ")
        .raw(action)
        .raw(" $n failed\"\n}\n")
}

/// Shell text that makes the unit in `$n` enabled or disabled, idempotently.
pub(super) fn enable_script(want: bool) -> Script {
    if want {
        systemctl("enable")
    } else {
        // A runtime enablement lives in /run: `disable` alone leaves it.
        Script::new()
            .raw("if [ \"$(systemctl is-enabled -- \"$n\" 2>/dev/null)\" = enabled-runtime ]; then\n  systemctl disable --runtime -- \"$n\" || die \"systemctl disable --runtime $n failed\"\nfi\n")
            .then(systemctl("disable"))
    }
}
