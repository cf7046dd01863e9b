//! service: a systemd unit's enablement at boot and whether it runs, and the actions a handler
//! takes when notified (`restarted: true`, `reloaded: true`).
//!
//! Owns the `service` type and what the `unit` type (unit.rs) shares with it: the side-effect
//! free probe of a unit's state ([`systemd_probe`]: `systemctl is-enabled`, `is-active` and
//! `show -p LoadState -p NeedDaemonReload`), its parse, the pure diff of `enabled` and `state`
//! ([`systemd_changes`]) and the `key=value` reader of probe outputs ([`Fields`]) that
//! package.rs, sysctl.rs and unit.rs use too. Never writes unit files (unit.rs does).
//! systemd only: a host without a running systemd (`/run/systemd/system` missing) is an error
//! that says so.
//!
//! ## What counts as enabled, started, masked
//!
//! `systemctl is-enabled` answers with a word, read as:
//!
//! | word | `enabled: true` | `enabled: false` |
//! |---|---|---|
//! | `enabled`, `alias` | in line | `systemctl disable` |
//! | `enabled-runtime` (only until reboot) | `systemctl enable` | `systemctl disable --runtime` |
//! | `disabled`, `linked`, `linked-runtime` | `systemctl enable` | in line |
//! | `static`, `indirect`, `generated`, `transient` (no `[Install]`: pulled in by other units) | in line | error: cannot be disabled, mask it |
//! | `masked`, `masked-runtime` | error: unmask it first | in line |
//!
//! `is-active`: `active`, `reloading`, `activating` and `refreshing` count as started;
//! `inactive` and `failed` as stopped; anything else (`deactivating`) as neither. A masked unit
//! cannot be started: `state: started` on one is an error that names `systemctl unmask`. A
//! unit systemd does not know (`LoadState=not-found`) is an error when `enabled` or `state` is
//! given. A oneshot service without `RemainAfterExit=yes` is inactive once it has run, so
//! `state: started` never holds for it: leave `state` out for such units.
//!
//! ## Handlers
//!
//! The engine applies a notified handler with an empty [`Verdict::Modify`], without a probe.
//! Given that verdict, the apply converges every given field idempotently (`systemctl enable`,
//! `start`, … are no-ops when already so), then `restarted: true` runs `systemctl restart`
//! (which starts a stopped unit) and `reloaded: true` runs `systemctl reload` when the unit is
//! active (a stopped unit has nothing to reload: it is left stopped, and the apply says so).
//! As a plain step, `restarted` and `reloaded` do nothing: they are actions, not state. A
//! restart or reload first runs `systemctl daemon-reload` when systemd says the unit's files
//! changed on disk (`NeedDaemonReload=yes`), so the new definition is the one restarted.
//!
//! ## Probe output
//!
//! ```text
//! rampart-service 1
//! systemd=yes            # no: /run/systemd/system is missing (and nothing else follows)
//! load=loaded            # systemctl show -p LoadState: loaded, not-found, masked, error, …
//! enabled=enabled        # systemctl is-enabled (empty when it prints nothing)
//! active=active          # systemctl is-active
//! reload=no              # systemctl show -p NeedDaemonReload
//! end
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::{ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Verdict, params};
use crate::remote::Script;

pub const SERVICE: TypeInfo = TypeInfo {
    name: "service",
    params: &["name", "enabled", "state", "restarted", "reloaded"],
    build,
};

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(Service::try_from(params::<ServiceParams>(
        value,
    )?)?))
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// `started` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Started,
    Stopped,
}

/// The `service` step as written (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    /// A unit name; without a suffix, systemd reads it as `NAME.service`.
    pub name: String,
    /// Started at boot. Omitted: not managed.
    pub enabled: Option<bool>,
    /// Omitted: not managed.
    pub state: Option<RunState>,
    /// As a handler: `systemctl restart` when notified.
    #[serde(default)]
    pub restarted: bool,
    /// As a handler: `systemctl reload` when notified (and the unit is active).
    #[serde(default)]
    pub reloaded: bool,
}

/// A systemd unit name: 1 to 255 characters of `A-Z a-z 0-9 : _ . @ - \`, not starting with
/// `-` or `.` (never read as an option).
pub(super) fn check_unit_name(ty: &str, name: &str) -> Result<(), ParamError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(ParamError(format!(
            "{ty}: {name:?} is not a systemd unit name: use A-Z a-z 0-9 and : _ . @ - \\, \
             not starting with - or ."
        )))
    }
}

/// What the `service` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub enabled: Option<bool>,
    pub state: Option<RunState>,
    pub restarted: bool,
    pub reloaded: bool,
}

impl TryFrom<ServiceParams> for Service {
    type Error = ParamError;
    fn try_from(p: ServiceParams) -> Result<Service, ParamError> {
        check_unit_name("service", &p.name)?;
        let name = &p.name;
        if p.enabled.is_none() && p.state.is_none() && !p.restarted && !p.reloaded {
            return Err(ParamError(format!(
                "service {name}: give at least one of enabled, state, restarted, reloaded"
            )));
        }
        if p.restarted && p.reloaded {
            return Err(ParamError(format!(
                "service {name}: restarted and reloaded both given; a restart includes a reload, \
                 keep one"
            )));
        }
        if p.state == Some(RunState::Stopped) && (p.restarted || p.reloaded) {
            return Err(ParamError(format!(
                "service {name}: state: stopped contradicts restarted/reloaded"
            )));
        }
        Ok(Service {
            name: p.name,
            enabled: p.enabled,
            state: p.state,
            restarted: p.restarted,
            reloaded: p.reloaded,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Probe output reader, shared by the system resource types.

/// The `key=value` lines of a probe's output, between its header and `end`, so that a cut
/// short or garbled output is an error, never an empty state. A line `error=TEXT` makes the
/// read fail with TEXT.
pub(super) struct Fields<'a> {
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
// systemd state: probe, parse, diff.

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
pub(super) struct UnitState {
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

pub(super) const F_ENABLED: &str = "enabled";
pub(super) const F_STATE: &str = "state";

fn shown(word: &str) -> Option<String> {
    (!word.is_empty()).then(|| word.to_string())
}

/// The `enabled` and `state` changes for unit `name` in state `s`, or an error that explains a
/// wish systemd cannot grant (masked, static, unknown unit). `will_exist`: a unit step is
/// about to write the unit's file, so a unit systemd does not know yet is no error.
pub(super) fn systemd_changes(
    name: &str,
    s: &UnitState,
    enabled: Option<bool>,
    state: Option<RunState>,
    will_exist: bool,
    f: &Fields,
) -> Result<Vec<Change>, ProbeError> {
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
            c.push(Change::new(
                F_ENABLED,
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
            c.push(Change::new(
                F_STATE,
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

/// `die` for apply scripts: the message on stderr, prefixed, and exit 1.
pub(super) const DIE: &str = "die() { printf 'rampart: %s\\n' \"$*\" >&2; exit 1; }\n";

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

/// Runs `systemctl daemon-reload` when systemd says the unit's files changed on disk.
const RELOAD_IF_STALE: &str = "if [ \"$(systemctl show -p NeedDaemonReload --value -- \"$n\" 2>/dev/null)\" = yes ]; then\n  systemctl daemon-reload || die \"systemctl daemon-reload failed\"\nfi\n";

// ---------------------------------------------------------------------------------------------
// The service resource.

const SERVICE_PROBE_HEADER: &str = "rampart-service 1";

impl Service {
    fn probe_script(&self) -> Script {
        Script::new()
            .raw("(\nprintf '")
            .raw(SERVICE_PROBE_HEADER)
            .raw("\\n'\nn=")
            .arg(&self.name)
            .raw("\n")
            .raw(SYSTEMD_PROBE)
            .raw("printf 'end\\n'\n)\n")
    }

    /// Pure: the verdict for the probe's output.
    pub fn verdict(&self, out: &str) -> Result<Verdict, ProbeError> {
        let f = Fields::read(out, SERVICE_PROBE_HEADER, SYSTEMD_KEYS)?;
        let Some(s) = parse_systemd(&f)? else {
            return Err(f.error(format!(
                "service {}: this host runs no systemd (/run/systemd/system is missing); \
                 the service type manages systemd units only",
                self.name
            )));
        };
        let c = systemd_changes(&self.name, &s, self.enabled, self.state, false, &f)?;
        if !c.is_empty() {
            return Ok(Verdict::Modify(c));
        }
        let mut sentence = format!("{} is in line", self.id());
        if self.enabled.is_some() || self.state.is_some() {
            sentence.push_str(&format!(": {}", systemd_sentence(&s)));
        }
        if self.restarted || self.reloaded {
            let action = if self.restarted {
                "restarted"
            } else {
                "reloaded"
            };
            sentence.push_str(&format!(" ({action} when notified)"));
        }
        Ok(Verdict::InLine(sentence))
    }

    fn apply_script(&self, v: &Verdict) -> Script {
        let changes = match v {
            Verdict::Modify(c) => c,
            Verdict::InLine(_) | Verdict::Create(_) | Verdict::Remove(_) => return Script::new(),
        };
        // An empty Modify: notified as a handler; every given field, then the action.
        let all = changes.is_empty();
        let has = |f: &str| all || changes.iter().any(|c| c.field == f);
        let mut s = Script::new()
            .raw("(\n")
            .raw(DIE)
            .raw("n=")
            .arg(&self.name)
            .raw("\n");
        if let Some(want) = self.enabled
            && has(F_ENABLED)
        {
            s = s.then(enable_script(want));
        }
        let restart = all && self.restarted;
        let reload = all && self.reloaded;
        if restart || reload || (self.state == Some(RunState::Started) && has(F_STATE)) {
            s = s.raw(RELOAD_IF_STALE);
        }
        match self.state {
            Some(RunState::Started) if has(F_STATE) && !restart => {
                s = s.then(systemctl("start"));
            }
            Some(RunState::Stopped) if has(F_STATE) => s = s.then(systemctl("stop")),
            _ => {}
        }
        if restart {
            s = s.then(systemctl("restart"));
        }
        if reload {
            s = s
                .raw("if systemctl is-active --quiet -- \"$n\"; then\n")
                .then(systemctl("reload"))
                .raw("else\n  echo \"rampart: $n is not active: nothing to reload\"\nfi\n");
        }
        s.raw(") || exit 1\n")
    }
}

impl Resource for Service {
    fn id(&self) -> String {
        format!("service {}", self.name)
    }

    fn probe(&self) -> Script {
        self.probe_script()
    }

    fn diff(&self, probe_output: &str) -> Result<Verdict, ProbeError> {
        self.verdict(probe_output)
    }

    fn diff_will_exist(&self, probe_output: &str) -> Option<Verdict> {
        let f = Fields::read(probe_output, SERVICE_PROBE_HEADER, SYSTEMD_KEYS).ok()?;
        let s = parse_systemd(&f).ok()??;
        if s.found() || s.masked() {
            return None;
        }
        let c = systemd_changes(&self.name, &s, self.enabled, self.state, true, &f).ok()?;
        (!c.is_empty()).then_some(Verdict::Modify(c))
    }

    fn apply(&self, verdict: &Verdict, _ctx: &ApplyContext) -> Script {
        self.apply_script(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(p: Value) -> Service {
        Service::try_from(params::<ServiceParams>(p).unwrap()).unwrap()
    }

    fn err(p: Value) -> String {
        match params::<ServiceParams>(p) {
            Err(e) => e.0,
            Ok(p) => Service::try_from(p).unwrap_err().0,
        }
    }

    fn out(load: &str, enabled: &str, active: &str) -> String {
        format!(
            "rampart-service 1\nsystemd=yes\nload={load}\nenabled={enabled}\nactive={active}\n\
             reload=no\nend\n"
        )
    }

    fn change(field: &str, before: Option<&str>, after: &str) -> Change {
        Change::new(field, before.map(String::from), Some(after.into()))
    }

    #[test]
    fn every_declared_param_is_accepted() {
        let p = json!({"name": "ssh", "enabled": true, "state": "started", "restarted": true,
                       "reloaded": false});
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, SERVICE.params);
        assert!((SERVICE.build)(p).is_ok());
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        assert!(err(json!({"name": "x", "colour": 1})).contains("unknown field `colour`"));
        assert!(err(json!({"name": "x", "state": "running"})).contains("unknown variant"));
        assert_eq!(
            err(json!({"name": "x"})),
            "service x: give at least one of enabled, state, restarted, reloaded"
        );
        assert!(
            err(json!({"name": "x", "restarted": true, "reloaded": true})).contains("keep one")
        );
        assert!(
            err(json!({"name": "x", "state": "stopped", "restarted": true}))
                .contains("contradicts")
        );
        for bad in ["", "-x", ".x", "a b", "x;id", "$(id)", "a\nb"] {
            assert!(
                err(json!({"name": bad, "enabled": true})).contains("is not a systemd unit name"),
                "{bad:?}"
            );
        }
        assert!((SERVICE.build)(json!({"name": "getty@tty1.service", "enabled": false})).is_ok());
    }

    #[test]
    fn in_line_units_say_what_they_are() {
        let s = service(json!({"name": "ssh", "enabled": true, "state": "started"}));
        assert_eq!(
            s.verdict(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::InLine("service ssh is in line: enabled, active".into())
        );
        let j = service(json!({"name": "systemd-journald", "enabled": true, "state": "started"}));
        assert_eq!(
            j.verdict(&out("loaded", "static", "active")).unwrap(),
            Verdict::InLine(
                "service systemd-journald is in line: static (pulled in by other units), active"
                    .into()
            )
        );
        let h = service(json!({"name": "agent.service", "restarted": true}));
        assert_eq!(
            h.verdict(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::InLine("service agent.service is in line (restarted when notified)".into())
        );
        // A failed unit is stopped.
        let stopped = service(json!({"name": "x", "state": "stopped"}));
        assert!(
            stopped
                .verdict(&out("loaded", "disabled", "failed"))
                .unwrap()
                .is_in_line()
        );
    }

    #[test]
    fn enabled_and_state_changes() {
        let s = service(json!({"name": "nftables", "enabled": true, "state": "started"}));
        assert_eq!(
            s.verdict(&out("loaded", "disabled", "inactive")).unwrap(),
            Verdict::Modify(vec![
                change("enabled", Some("disabled"), "enabled"),
                change("state", Some("inactive"), "active"),
            ])
        );
        let off = service(json!({"name": "auditd", "enabled": false, "state": "stopped"}));
        assert_eq!(
            off.verdict(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::Modify(vec![
                change("enabled", Some("enabled"), "disabled"),
                change("state", Some("active"), "inactive"),
            ])
        );
        assert_eq!(
            off.verdict(&out("loaded", "enabled-runtime", "deactivating"))
                .unwrap()
                .changes()
                .len(),
            2
        );
        let on = service(json!({"name": "x", "enabled": true}));
        assert_eq!(
            on.verdict(&out("loaded", "enabled-runtime", "active"))
                .unwrap(),
            Verdict::Modify(vec![change("enabled", Some("enabled-runtime"), "enabled")])
        );
    }

    #[test]
    fn masked_units_are_clear() {
        // Masked counts as disabled and stopped...
        let off = service(json!({"name": "getty@tty1", "enabled": false, "state": "stopped"}));
        assert!(
            off.verdict(&out("masked", "masked", "inactive"))
                .unwrap()
                .is_in_line()
        );
        // ... and cannot be enabled or started.
        let on = service(json!({"name": "getty@tty1", "state": "started"}));
        let e = on
            .verdict(&out("masked", "masked", "inactive"))
            .unwrap_err();
        assert!(e.message.contains("unit getty@tty1 is masked"), "{e}");
        assert!(e.message.contains("systemctl unmask getty@tty1"), "{e}");
    }

    #[test]
    fn static_unknown_and_systemd_less_hosts_are_errors() {
        let off = service(json!({"name": "dbus", "enabled": false}));
        let e = off.verdict(&out("loaded", "static", "active")).unwrap_err();
        assert!(e.message.contains("cannot be disabled"), "{e}");
        let s = service(json!({"name": "nosuch", "state": "started"}));
        let e = s.verdict(&out("not-found", "", "inactive")).unwrap_err();
        assert!(e.message.contains("systemd has no unit nosuch"), "{e}");
        let e = s
            .verdict("rampart-service 1\nsystemd=no\nend\n")
            .unwrap_err();
        assert!(e.message.contains("runs no systemd"), "{e}");
    }

    #[test]
    fn junk_and_cut_short_probe_outputs_are_probe_errors() {
        let s = service(json!({"name": "ssh", "enabled": true}));
        for junk in [
            "",
            "garbage\n",
            "rampart-service 1\nsystemd=yes\nload=loaded\n",
            "rampart-service 1\nsystemd=maybe\nend\n",
            "rampart-service 1\nsystemd=yes\nload=loaded\nenabled=enabled\nactive=active\nreload=no\nbogus=1\nend\n",
            "rampart-service 1\nsystemd=yes\nload=loaded\nenabled=enabled\nactive=active\nend\n",
            "rampart-service 1\nerror=boom\nend\n",
        ] {
            assert!(s.verdict(junk).is_err(), "{junk:?}");
        }
    }

    fn rendered(s: &Service, v: &Verdict) -> String {
        s.apply(v, &ApplyContext::new("t")).render().unwrap()
    }

    #[test]
    fn apply_does_only_the_changes_and_handlers_do_their_action() {
        let s = service(
            json!({"name": "x.service", "enabled": true, "state": "started",
                               "restarted": true}),
        );
        let v = Verdict::Modify(vec![change("state", Some("inactive"), "active")]);
        let text = rendered(&s, &v);
        assert!(text.contains("systemctl start -- \"$n\""), "{text}");
        assert!(!text.contains("systemctl enable"), "{text}");
        assert!(!text.contains("systemctl restart"), "{text}");
        // As a handler: enable, then restart (which starts), no separate start.
        let text = rendered(&s, &Verdict::Modify(vec![]));
        assert!(text.contains("systemctl enable -- \"$n\""), "{text}");
        assert!(text.contains("systemctl restart -- \"$n\""), "{text}");
        assert!(!text.contains("systemctl start"), "{text}");
        assert!(text.contains("NeedDaemonReload"), "{text}");
        let r = service(json!({"name": "ssh", "reloaded": true}));
        let text = rendered(&r, &Verdict::Modify(vec![]));
        assert!(text.contains("systemctl reload -- \"$n\""), "{text}");
        assert!(text.contains("nothing to reload"), "{text}");
        assert_eq!(rendered(&r, &Verdict::InLine("x".into())), "");
    }

    #[test]
    fn the_probe_runs_under_sh_and_parses() {
        // This machine runs no systemd: the probe says so, and the diff says what it means.
        let s = service(json!({"name": "rampart-nosuch@x.service", "enabled": true}));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.probe().render().unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let f = Fields::read(&text, SERVICE_PROBE_HEADER, SYSTEMD_KEYS).unwrap();
        assert!(f.one("systemd").unwrap().is_some());
    }
}
