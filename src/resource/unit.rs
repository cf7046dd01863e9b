//! unit: a systemd unit file written whole by rampart (`agent.service`), and the unit's
//! enablement and state.
//!
//! Owns the `unit` type. The unit file is a config file written whole with the kit's helpers
//! ([`kit`](super::kit): [`config_probe`], [`config_changes`], [`write_config`]). Enablement and state are the kit's too
//! ([`systemd_changes`]), so `unit` and `service` mean the same by `enabled` and `state`.
//!
//! The file goes to `path`, by default `/etc/systemd/system/NAME`; the file name of `path`
//! must be `NAME`. When the file changes the apply runs `systemctl daemon-reload`, then
//! enables or disables as asked, then, for `state: started`, **restarts** the unit (a
//! restart starts a stopped unit), so the new definition runs; `state: stopped` stops it.
//! Without `state` a changed unit is reloaded into systemd but not restarted. A unit file in
//! line whose unit systemd still holds in an older version (`NeedDaemonReload=yes`, say after
//! a hand edit) is a change of its own (`loaded: stale -> current`): daemon-reload, and a
//! restart for `state: started`.
//!
//! A symbolic link at `path` to `/dev/null` is a mask: the step refuses to replace it
//! (`systemctl unmask NAME` first). Another symbolic link there is replaced by the file (the
//! link is backed up, its target left alone); a folder or special file there is an error.
//!
//! ## Probe output
//!
//! The config-file lines, then the kit's systemd lines:
//!
//! ```text
//! rampart-unit 1
//! file=file                 # none | file | other | link <base64 of the target>
//! content=<base64 of the whole file, one line>     (file=file only)
//! systemd=yes
//! load=loaded
//! enabled=enabled
//! active=active
//! reload=no
//! end
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::fsfile::{apply_script, backup_path};
use super::kit::{ConfigFile, FILE_KEYS, Fields, FileField, check_config_path, config_changes, config_probe, parse_config, write_config, RunState, SYSTEMD_KEYS, SYSTEMD_PROBE, SystemdField, UnitState, enable_script, parse_systemd, systemctl, systemd_changes, systemd_sentence};
use super::service::{check_unit_name};
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
use crate::remote::Script;

pub const UNIT: TypeInfo = TypeInfo {
    name: "unit",
    params: &["name", "content", "enabled", "state", "path"],
    build,
};

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(Unit::try_from(params::<UnitParams>(value)?)?))
}

// ---------------------------------------------------------------------------------------------
// The unit type.

/// The `unit` step as written (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitParams {
    /// The unit's full name, with its suffix: `agent.service`.
    pub name: String,
    /// The unit file's whole text.
    pub content: String,
    pub enabled: Option<bool>,
    pub state: Option<RunState>,
    /// Default `/etc/systemd/system/NAME`.
    pub path: Option<String>,
}

const SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "target",
    "mount",
    "automount",
    "swap",
    "slice",
];

/// What the `unit` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub content: String,
    pub enabled: Option<bool>,
    pub state: Option<RunState>,
    pub path: String,
}

impl TryFrom<UnitParams> for Unit {
    type Error = ParamError;
    fn try_from(p: UnitParams) -> Result<Unit, ParamError> {
        check_unit_name("unit", &p.name)?;
        let name = &p.name;
        let suffix = name.rsplit_once('.').map(|(_, s)| s).unwrap_or("");
        if !SUFFIXES.contains(&suffix) {
            return Err(ParamError(format!(
                "unit: {name:?} has no unit type suffix; name the file, e.g. {name}.service \
                 (suffixes: {})",
                SUFFIXES.join(", ")
            )));
        }
        if name.contains("@.") && (p.enabled.is_some() || p.state.is_some()) {
            return Err(ParamError(format!(
                "unit {name}: a template unit cannot be enabled or started itself; add a \
                 service step for an instance (e.g. {})",
                name.replacen("@.", "@main.", 1)
            )));
        }
        let path = p
            .path
            .unwrap_or_else(|| format!("/etc/systemd/system/{name}"));
        check_config_path("unit", &path)?;
        if path.rsplit_once('/').map(|(_, f)| f) != Some(name.as_str()) {
            return Err(ParamError(format!(
                "unit {name}: path {path:?} must end in /{name}: systemd finds a unit by its \
                 file name"
            )));
        }
        Ok(Unit {
            name: p.name,
            content: p.content,
            enabled: p.enabled,
            state: p.state,
            path,
        })
    }
}

const UNIT_PROBE_HEADER: &str = "rampart-unit 1";

impl Unit {
    fn probe_script(&self) -> Script {
        Script::new()
            .raw("(\nprintf '")
            .raw(UNIT_PROBE_HEADER)
            .raw("\\n'\nn=")
            .arg(&self.name)
            .raw("\n")
            .then(config_probe(&self.path))
            .raw(SYSTEMD_PROBE)
            .raw("printf 'end\\n'\n)\n")
    }
}

crate::fields! {
    /// The fields of a `unit` step.
    pub enum UnitField {
        Content = "content",
        /// A symbolic link at the path, replaced by the file.
        Type = "type",
        /// systemd holds an older version of the file.
        Loaded = "loaded",
        Enabled = "enabled",
        State = "state",
    }
}

impl From<FileField> for UnitField {
    fn from(f: FileField) -> UnitField {
        match f {
            FileField::Content => UnitField::Content,
            FileField::Type => UnitField::Type,
        }
    }
}

impl From<SystemdField> for UnitField {
    fn from(f: SystemdField) -> UnitField {
        match f {
            SystemdField::Enabled => UnitField::Enabled,
            SystemdField::State => UnitField::State,
        }
    }
}

/// What a unit's probe found.
pub struct UnitObserved<'a> {
    f: Fields<'a>,
    file: ConfigFile,
    state: UnitState,
}

impl Typed for Unit {
    type Observed<'a> = UnitObserved<'a>;
    type Field = UnitField;

    fn parse<'a>(&self, out: &'a str) -> Result<UnitObserved<'a>, ProbeError> {
        let keys: Vec<&str> = FILE_KEYS.iter().chain(SYSTEMD_KEYS).copied().collect();
        let f = Fields::read(out, UNIT_PROBE_HEADER, &keys)?;
        let file = parse_config(&f)?;
        let Some(state) = parse_systemd(&f)? else {
            return Err(f.error(format!(
                "unit {}: this host runs no systemd (/run/systemd/system is missing)",
                self.name
            )));
        };
        Ok(UnitObserved { f, file, state })
    }

    fn compare(&self, o: &UnitObserved<'_>) -> Result<Verdict<UnitField>, ProbeError> {
        let (f, file, s) = (&o.f, &o.file, &o.state);
        if *file == ConfigFile::Link("/dev/null".into()) {
            return Err(f.error(format!(
                "unit {}: {} is a symlink to /dev/null: the unit is masked; a unit step does \
                 not unmask (systemctl unmask {} first, if it should run)",
                self.name, self.path, self.name
            )));
        }
        let mut c = config_changes(&self.path, file, &self.content, f)?;
        let writes = !c.is_empty();
        if !writes && s.needs_reload {
            c.push(Change::of(
                UnitField::Loaded,
                Some("stale (the file changed since systemd read it)".into()),
                Some("current".into()),
            ));
        }
        c.extend(systemd_changes(
            &self.name,
            s,
            self.enabled,
            self.state,
            writes,
            f,
        )?);
        Ok(if c.is_empty() {
            let mut sentence = format!("{} is in line: {} as given", self.id(), self.path);
            if self.enabled.is_some() || self.state.is_some() {
                sentence.push_str(&format!("; {}", systemd_sentence(s)));
            }
            Verdict::InLine(sentence)
        } else if *file == ConfigFile::Absent {
            Verdict::Create(c)
        } else {
            Verdict::Modify(c)
        })
    }

    /// Notified as a handler: everything, idempotently.
    fn converge(&self, work: Work<'_, UnitField>, ctx: &ApplyContext) -> Script {
        if let Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) = work {
            return Script::new();
        }
        let all = work.is_notified() || work.changes().is_empty();
        let has = |f: UnitField| all || work.has(&f);
        let writes = has(UnitField::Content) || has(UnitField::Type);
        let reload = writes || has(UnitField::Loaded);
        let mut s = Script::new().raw("n=").arg(&self.name).raw("\n");
        if writes {
            let backup = backup_path(ctx, &self.path);
            s = s.then(write_config(&self.path, self.content.as_bytes(), &backup, 0o644));
        }
        if reload {
            s = s.raw("systemctl daemon-reload || die \"systemctl daemon-reload failed\"\n");
        }
        if let Some(want) = self.enabled
            && has(UnitField::Enabled)
        {
            s = s.then(enable_script(want));
        }
        match self.state {
            Some(RunState::Started) if reload => s = s.then(systemctl("restart")),
            Some(RunState::Started) if has(UnitField::State) => s = s.then(systemctl("start")),
            Some(RunState::Stopped) if has(UnitField::State) => s = s.then(systemctl("stop")),
            _ => {}
        }
        apply_script(s)
    }
}

impl Resource for Unit {
    fn id(&self) -> String {
        format!("unit {}", self.name)
    }

    fn probe(&self) -> Script {
        self.probe_script()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::{b64, run_local_ok};
    use serde_json::json;

    const TEXT: &str =
        "[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";

    fn unit(p: Value) -> Unit {
        Unit::try_from(params::<UnitParams>(p).unwrap()).unwrap()
    }

    fn err(p: Value) -> String {
        match params::<UnitParams>(p) {
            Err(e) => e.0,
            Ok(p) => Unit::try_from(p).unwrap_err().0,
        }
    }

    /// A probe output: the file lines, then systemd's.
    fn out(file: &str, load: &str, enabled: &str, active: &str, reload: &str) -> String {
        format!(
            "rampart-unit 1\n{file}systemd=yes\nload={load}\nenabled={enabled}\nactive={active}\n\
             reload={reload}\nend\n"
        )
    }

    fn file(text: &str) -> String {
        format!("file=file\ncontent={}\n", b64(text))
    }

    fn agent() -> Unit {
        unit(
            json!({"name": "agent.service", "content": TEXT, "enabled": true,
                    "state": "started"}),
        )
    }

    fn change(field: &str, before: Option<&str>, after: &str) -> Change {
        Change::new(field, before.map(String::from), Some(after.into()))
    }

    #[test]
    fn every_declared_param_is_accepted_and_the_path_defaults() {
        let p = json!({"name": "a.service", "content": "x", "enabled": true, "state": "stopped",
                       "path": "/usr/local/lib/systemd/system/a.service"});
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, UNIT.params);
        assert!((UNIT.build)(p).is_ok());
        assert_eq!(agent().path, "/etc/systemd/system/agent.service");
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        assert!(err(json!({"name": "agent", "content": ""})).contains("no unit type suffix"));
        assert!(
            err(json!({"name": "a.service", "content": "", "path": "/etc/b.service"}))
                .contains("must end in /a.service")
        );
        assert!(
            err(json!({"name": "a.service", "content": "", "path": "etc/a.service"}))
                .contains("is not absolute")
        );
        assert!(
            err(json!({"name": "a@.service", "content": "", "state": "started"}))
                .contains("a@main.service")
        );
        assert!(err(json!({"name": "-a.service", "content": ""})).contains("not a systemd unit"));
        assert!(err(json!({"name": "a.service"})).contains("missing field `content`"));
    }

    #[test]
    fn a_missing_unit_is_created_enabled_and_started() {
        let v = agent()
            .diff(&out("file=none\n", "not-found", "", "inactive", ""))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Create(vec![
                Change::new("content", None, Some(TEXT.into())),
                Change::new("enabled", None, Some("enabled".into())),
                Change::new("state", None, Some("active".into())),
            ])
        );
    }

    #[test]
    fn in_line_and_changed_units() {
        let a = agent();
        assert_eq!(
            a.diff(&out(&file(TEXT), "loaded", "enabled", "active", "no"))
                .unwrap(),
            Verdict::InLine(
                "unit agent.service is in line: /etc/systemd/system/agent.service as given; \
                 enabled, active"
                    .into()
            )
        );
        let old = TEXT.replace("infinity", "1000");
        assert_eq!(
            a.diff(&out(&file(&old), "loaded", "enabled", "active", "yes"))
                .unwrap(),
            Verdict::Modify(vec![Change::new(
                "content",
                Some(old.clone()),
                Some(TEXT.into())
            )])
        );
        // In line on disk, but systemd holds an older version.
        assert_eq!(
            a.diff(&out(&file(TEXT), "loaded", "enabled", "active", "yes"))
                .unwrap(),
            Verdict::Modify(vec![Change::new(
                "loaded",
                Some("stale (the file changed since systemd read it)".into()),
                Some("current".into())
            )])
        );
        assert_eq!(
            a.diff(&out(&file(TEXT), "loaded", "disabled", "failed", "no"))
                .unwrap(),
            Verdict::Modify(vec![
                change("enabled", Some("disabled"), "enabled"),
                change("state", Some("failed"), "active"),
            ])
        );
        let link = format!("file=link {}\n", b64("/lib/systemd/system/agent.service\n"));
        assert_eq!(
            a.diff(&out(&link, "loaded", "enabled", "active", "no"))
                .unwrap()
                .changes()[0],
            change(
                "type",
                Some("a symlink to /lib/systemd/system/agent.service"),
                "a file"
            )
        );
    }

    #[test]
    fn masks_folders_and_junk_are_errors() {
        let a = agent();
        let masked = format!("file=link {}\n", b64("/dev/null\n"));
        let e = a
            .diff(&out(&masked, "masked", "masked", "inactive", "no"))
            .unwrap_err();
        assert!(e.message.contains("the unit is masked"), "{e}");
        let e = a
            .diff(&out("file=other\n", "loaded", "enabled", "active", "no"))
            .unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        for junk in [
            "",
            "junk\n",
            "rampart-unit 1\nfile=file\nsystemd=yes\nend\n",
            "rampart-unit 1\nfile=none\ncontent=AA==\nsystemd=no\nend\n",
            "rampart-unit 1\nfile=file\ncontent=%%%\nsystemd=no\nend\n",
            "rampart-unit 1\nfile=weird\nsystemd=no\nend\n",
            "rampart-unit 1\nfile=none\nsystemd=yes\nload=loaded\n",
        ] {
            assert!(a.diff(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn apply_writes_reloads_then_restarts_only_when_the_file_changed() {
        let a = agent();
        let ctx = ApplyContext::new("r1");
        let v = Verdict::Modify(vec![change("content", Some("old"), TEXT)]);
        let text = a.apply(&v, &ctx).render().unwrap();
        let order: Vec<usize> = [
            "base64 -d",
            "systemctl daemon-reload",
            "systemctl restart -- \"$n\"",
        ]
        .iter()
        .map(|w| text.find(w).unwrap_or_else(|| panic!("{w} in {text}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("/var/lib/rampart/backups/r1/etc/systemd/system/agent.service"));
        let v = Verdict::Modify(vec![change("state", Some("inactive"), "active")]);
        let text = a.apply(&v, &ctx).render().unwrap();
        assert!(text.contains("systemctl start -- \"$n\""), "{text}");
        assert!(
            !text.contains("daemon-reload") && !text.contains("base64"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn write_config_replaces_atomically_with_a_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/it's $(x).conf");
        let p = path.to_str().unwrap();
        let backup = format!("{}/backups{p}", tmp.path().display());
        let run = |content: &str| {
            run_local_ok(apply_script(write_config(p, content.as_bytes(), &backup, 0o644)))
        };
        run("one\n").await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert!(
            !std::path::Path::new(&backup).exists(),
            "nothing to back up"
        );
        run("two\n").await;
        run("three\n").await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one\n");
        let names = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(names, 1, "no temporary file left");
    }
}
