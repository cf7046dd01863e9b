//! service: a systemd unit's enablement at boot and whether it runs, and the actions a handler
//! takes when notified (`restarted: true`, `reloaded: true`).
//!
//! Owns the `service` type. What it shares with `unit` and `wireguard` lives in
//! [`kit`](super::kit): the side-effect free probe of a unit's state ([`SYSTEMD_PROBE`]:
//! `systemctl is-enabled`, `is-active` and `show -p LoadState -p NeedDaemonReload`), its
//! parse, the pure diff of `enabled` and `state` ([`systemd_changes`]) and the systemctl
//! actions. Never writes unit files (unit.rs does).
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
//! A notified handler is applied without a probe, as [`Work::Notified`] (what the engine's
//! empty [`Verdict::Modify`] means). Notified, the apply converges every given field idempotently (`systemctl enable`,
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

pub use super::kit::RunState;
use super::kit::{
    DIE, Fields, SYSTEMD_KEYS, SYSTEMD_PROBE, SystemdField, UnitState, parse_systemd, systemctl,
    systemd_changes, systemd_sentence, enable_script,
};
use super::{
    ApplyContext, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
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
}

impl Typed for Service {
    type Observed<'a> = (Fields<'a>, UnitState);
    type Field = SystemdField;

    fn parse<'a>(&self, out: &'a str) -> Result<(Fields<'a>, UnitState), ProbeError> {
        let f = Fields::read(out, SERVICE_PROBE_HEADER, SYSTEMD_KEYS)?;
        let Some(s) = parse_systemd(&f)? else {
            return Err(f.error(format!(
                "service {}: this host runs no systemd (/run/systemd/system is missing); \
                 the service type manages systemd units only",
                self.name
            )));
        };
        Ok((f, s))
    }

    fn compare(
        &self,
        (f, s): &(Fields<'_>, UnitState),
    ) -> Result<Verdict<SystemdField>, ProbeError> {
        let c = systemd_changes(&self.name, s, self.enabled, self.state, false, f)?;
        if !c.is_empty() {
            return Ok(Verdict::Modify(c));
        }
        let mut sentence = format!("{} is in line", self.id());
        if self.enabled.is_some() || self.state.is_some() {
            sentence.push_str(&format!(": {}", systemd_sentence(s)));
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

    /// Converges the changed fields; notified, converges every given field (each systemctl
    /// action is a no-op when already so) and then restarts or reloads.
    fn converge(&self, work: Work<'_, SystemdField>, _ctx: &ApplyContext) -> Script {
        if let Work::Converge(v) = work
            && !matches!(v, Verdict::Modify(_))
        {
            return Script::new();
        }
        let all = work.is_notified();
        let has = |f: SystemdField| all || work.has(&f);
        let mut s = Script::new()
            .raw("(\n")
            .raw(DIE)
            .raw("n=")
            .arg(&self.name)
            .raw("\n");
        if let Some(want) = self.enabled
            && has(SystemdField::Enabled)
        {
            s = s.then(enable_script(want));
        }
        let restart = all && self.restarted;
        let reload = all && self.reloaded;
        let state = has(SystemdField::State);
        if restart || reload || (self.state == Some(RunState::Started) && state) {
            s = s.raw(RELOAD_IF_STALE);
        }
        match self.state {
            Some(RunState::Started) if state && !restart => {
                s = s.then(systemctl("start"));
            }
            Some(RunState::Stopped) if state => s = s.then(systemctl("stop")),
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

    fn diff_will_exist(&self, probe_output: &str) -> Option<Verdict> {
        let (f, s) = self.parse(probe_output).ok()?;
        if s.found() || s.masked() {
            return None;
        }
        let c: Vec<super::Change<SystemdField>> =
            systemd_changes(&self.name, &s, self.enabled, self.state, true, &f).ok()?;
        (!c.is_empty()).then(|| Verdict::Modify(c).map(|field| Some(super::Field::name(&field))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Change;
    use crate::resource::Converge as _;
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
            s.diff(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::InLine("service ssh is in line: enabled, active".into())
        );
        let j = service(json!({"name": "systemd-journald", "enabled": true, "state": "started"}));
        assert_eq!(
            j.diff(&out("loaded", "static", "active")).unwrap(),
            Verdict::InLine(
                "service systemd-journald is in line: static (pulled in by other units), active"
                    .into()
            )
        );
        let h = service(json!({"name": "agent.service", "restarted": true}));
        assert_eq!(
            h.diff(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::InLine("service agent.service is in line (restarted when notified)".into())
        );
        // A failed unit is stopped.
        let stopped = service(json!({"name": "x", "state": "stopped"}));
        assert!(
            stopped
                .diff(&out("loaded", "disabled", "failed"))
                .unwrap()
                .is_in_line()
        );
    }

    #[test]
    fn enabled_and_state_changes() {
        let s = service(json!({"name": "nftables", "enabled": true, "state": "started"}));
        assert_eq!(
            s.diff(&out("loaded", "disabled", "inactive")).unwrap(),
            Verdict::Modify(vec![
                change("enabled", Some("disabled"), "enabled"),
                change("state", Some("inactive"), "active"),
            ])
        );
        let off = service(json!({"name": "auditd", "enabled": false, "state": "stopped"}));
        assert_eq!(
            off.diff(&out("loaded", "enabled", "active")).unwrap(),
            Verdict::Modify(vec![
                change("enabled", Some("enabled"), "disabled"),
                change("state", Some("active"), "inactive"),
            ])
        );
        assert_eq!(
            off.diff(&out("loaded", "enabled-runtime", "deactivating"))
                .unwrap()
                .changes()
                .len(),
            2
        );
        let on = service(json!({"name": "x", "enabled": true}));
        assert_eq!(
            on.diff(&out("loaded", "enabled-runtime", "active"))
                .unwrap(),
            Verdict::Modify(vec![change("enabled", Some("enabled-runtime"), "enabled")])
        );
    }

    #[test]
    fn masked_units_are_clear() {
        // Masked counts as disabled and stopped...
        let off = service(json!({"name": "getty@tty1", "enabled": false, "state": "stopped"}));
        assert!(
            off.diff(&out("masked", "masked", "inactive"))
                .unwrap()
                .is_in_line()
        );
        // ... and cannot be enabled or started.
        let on = service(json!({"name": "getty@tty1", "state": "started"}));
        let e = on.diff(&out("masked", "masked", "inactive")).unwrap_err();
        assert!(e.message.contains("unit getty@tty1 is masked"), "{e}");
        assert!(e.message.contains("systemctl unmask getty@tty1"), "{e}");
    }

    #[test]
    fn static_unknown_and_systemd_less_hosts_are_errors() {
        let off = service(json!({"name": "dbus", "enabled": false}));
        let e = off.diff(&out("loaded", "static", "active")).unwrap_err();
        assert!(e.message.contains("cannot be disabled"), "{e}");
        let s = service(json!({"name": "nosuch", "state": "started"}));
        let e = s.diff(&out("not-found", "", "inactive")).unwrap_err();
        assert!(e.message.contains("systemd has no unit nosuch"), "{e}");
        let e = s.diff("rampart-service 1\nsystemd=no\nend\n").unwrap_err();
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
            assert!(s.diff(junk).is_err(), "{junk:?}");
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
