//! resource: the registry of resource types and what every type provides.
//!
//! A resource is one piece of desired state with an identity (`file /etc/motd`,
//! `user moltbot`). Each type lives in its own file with four parts: a side-effect-free
//! **probe** (POSIX sh printing the current state), a pure **parse + diff** of that output
//! against the desired state, and an idempotent **apply** script. Types never run anything
//! themselves: the engine batches their probes into one round trip and their applies into one
//! more, and re-probes to verify.

mod after;
pub mod audit_rules;
pub mod command;
pub mod file;
pub mod fsfile;
pub mod json_config;
pub mod nftables;
pub mod package;
pub mod risky;
pub mod service;
pub mod sshd;
pub mod sysctl;
pub mod unit;
pub mod user;
pub mod wireguard;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::remote::Script;

/// Where an apply keeps what it replaces, and what run it belongs to.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// Unique per `rampart apply` run, e.g. `20261125T103000Z-4f2a`.
    pub run_id: String,
    /// The folder that holds every run's backups on the host: [`ApplyContext::BACKUP_ROOT`]
    /// unless a test points it into a temporary folder.
    pub backup_root: String,
    /// Seconds a risky change waits for confirmation before the host restores itself.
    pub deadman_seconds: u32,
    /// How many runs' backup folders the host keeps, this run's included (at least 1): the
    /// apply script removes the older ones when it ends.
    pub keep_backups: u32,
}

impl ApplyContext {
    /// Where backups go on a host.
    pub const BACKUP_ROOT: &'static str = "/var/lib/rampart/backups";

    /// A context for run `run_id`, with backups under [`ApplyContext::BACKUP_ROOT`].
    pub fn new(run_id: impl Into<String>) -> ApplyContext {
        ApplyContext {
            run_id: run_id.into(),
            backup_root: ApplyContext::BACKUP_ROOT.to_string(),
            deadman_seconds: DEADMAN_SECONDS,
            keep_backups: KEEP_BACKUPS,
        }
    }

    /// `/var/lib/rampart/backups/<run-id>`: previous contents of replaced or removed files
    /// are copied here, under their full path.
    pub fn backup_dir(&self) -> String {
        format!("{}/{}", self.backup_root.trim_end_matches('/'), self.run_id)
    }
}

/// One field that differs, shown as `field: before -> after`, or as a unified diff when
/// either side has several lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    /// `None`: absent.
    pub before: Option<String>,
    /// `None`: to be removed.
    pub after: Option<String>,
}

impl Change {
    pub fn new(field: &str, before: Option<String>, after: Option<String>) -> Change {
        Change {
            field: field.to_string(),
            before,
            after,
        }
    }

    /// Either side spans several lines: shown as a unified diff.
    pub fn is_text(&self) -> bool {
        let multi = |s: &Option<String>| s.as_deref().is_some_and(|t| t.contains('\n'));
        multi(&self.before) || multi(&self.after)
    }
}

/// What the diff found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do; the sentence says what was found (`file /etc/motd is in line`).
    InLine(String),
    /// The resource does not exist and will be created.
    Create(Vec<Change>),
    /// The resource exists and will be removed.
    Remove(Vec<Change>),
    /// The resource exists and these fields change.
    Modify(Vec<Change>),
}

impl Verdict {
    pub fn is_in_line(&self) -> bool {
        matches!(self, Verdict::InLine(_))
    }

    pub fn changes(&self) -> &[Change] {
        match self {
            Verdict::InLine(_) => &[],
            Verdict::Create(c) | Verdict::Remove(c) | Verdict::Modify(c) => c,
        }
    }

    /// `create`, `remove`, `modify`, or `in line`.
    pub fn action(&self) -> &'static str {
        match self {
            Verdict::InLine(_) => "in line",
            Verdict::Create(_) => "create",
            Verdict::Remove(_) => "remove",
            Verdict::Modify(_) => "modify",
        }
    }
}

/// The probe printed something the parser does not understand, or (with no output kept) a
/// refusal the probe itself reported, such as a symbolic link planted on the way to a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.shown())]
pub struct ProbeError {
    pub message: String,
    pub output: String,
}

impl ProbeError {
    fn shown(&self) -> String {
        if self.output.is_empty() {
            return self.message.clone();
        }
        format!(
            "cannot read the probe's output: {}\n---- probe output ----\n{}\n----------------------",
            self.message, self.output
        )
    }

    pub fn new(message: impl Into<String>, output: &str) -> ProbeError {
        ProbeError {
            message: message.into(),
            output: output.chars().take(2000).collect(),
        }
    }
}

/// Parameters that cannot describe a resource (after templating).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// What every resource type provides. See the module doc.
pub trait Resource: fmt::Debug + Send + Sync {
    /// `file /etc/motd`: the type and the identity.
    fn id(&self) -> String;
    /// POSIX sh, free of side effects, printing the current state on stdout.
    fn probe(&self) -> Script;
    /// Parses the probe's output and compares it with the desired state. Pure.
    fn diff(&self, probe_output: &str) -> Result<Verdict, ProbeError>;
    /// POSIX sh that makes the changes of `verdict`; idempotent and safe to rerun. It exits
    /// non-zero on failure, with the reason on stderr.
    fn apply(&self, verdict: &Verdict, ctx: &ApplyContext) -> Script;

    /// The change can cut the controller off (firewall, sshd): its apply arms the dead-man
    /// switch ([`deadman_arm`]) before changing anything, and the engine confirms over a NEW
    /// connection afterwards, which disarms it ([`deadman_disarm`]).
    fn risky(&self) -> bool {
        false
    }

    /// Its values are secret whatever the playbook says (a file of mode 0600 or stricter):
    /// reports show them as size and sha256.
    fn sensitive(&self) -> bool {
        false
    }

    /// Changes whose values say how the thing is kept, never what it holds (a file's owner,
    /// group and mode): readable even when the step is sensitive.
    fn plain_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// The path this step writes as a file or folder, if any: `drift` checks the way to it
    /// for symbolic links planted where root must not follow them (`fs.symlink`).
    fn fs_path(&self) -> Option<&str> {
        None
    }

    /// POSIX sh that puts back the state this run's apply replaced, for a step marked
    /// `risky: true` in a playbook (its dead-man switch runs it). `None`: this type cannot.
    fn restore(&self, _ctx: &ApplyContext) -> Option<Script> {
        None
    }

    /// What this step's probe will print once `verdict` (made from `probe_output`) is
    /// applied. The engine plans a later step of the run whose probe is the same script (a
    /// second `lines` on one file) against it, so the two compose in one apply. `None`: this
    /// type cannot tell; a later step on the same thing is then planned on the probe.
    fn probed_after(&self, _probe_output: &str, _verdict: &Verdict) -> Option<String> {
        None
    }

    /// The verdict when [`Resource::diff`] refused because the step's subject does not exist,
    /// and an earlier step of the run changes something that may create it (a `package` step
    /// installs the unit a `service` step starts): planned as "will exist". Its apply then
    /// fails plainly if the subject still does not exist. `None`: the refusal stands.
    fn diff_will_exist(&self, _probe_output: &str) -> Option<Verdict> {
        None
    }
}

/// How long a host waits for the controller's confirmation before it restores itself.
pub const DEADMAN_SECONDS: u32 = 60;

/// How many runs' backups a host keeps unless told otherwise: old backups hold old secrets.
pub const KEEP_BACKUPS: u32 = 10;

/// The folder of this run's dead-man switches on the host.
pub fn deadman_dir(ctx: &ApplyContext) -> String {
    let root = ctx.backup_root.trim_end_matches('/');
    let state = root
        .rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("/var/lib/rampart");
    format!("{state}/deadman/{}", ctx.run_id)
}

/// Arms the dead-man switch for one change: `restore` (POSIX sh that puts the previous state
/// back, e.g. reloads the saved firewall ruleset) runs after `ctx.deadman_seconds` unless
/// [`deadman_disarm`] ran first. Call it in an apply script BEFORE the change, after saving
/// what `restore` needs. `key` names this switch within the run (`nftables`, `sshd`).
///
/// A systemd timer (`systemd-run --on-active`) when systemd runs, else a detached `sleep`:
/// either way the restore script first checks that it is still armed, so disarming is
/// removing one file.
pub fn deadman_arm(ctx: &ApplyContext, key: &str, restore: Script) -> Script {
    let dir = deadman_dir(ctx);
    let armed = format!("{dir}/{key}.armed");
    let script = format!("{dir}/{key}.sh");
    let unit = format!("rampart-deadman-{}-{key}", ctx.run_id);
    let body = Script::new()
        .raw("#!/bin/sh\n# Claims the switch: whoever removes the armed file first (this or the disarm) wins.\nrm ")
        .arg(&armed)
        .raw(" 2>/dev/null || exit 0\n: >")
        .arg(&format!("{dir}/{key}.fired"))
        .raw("\nlogger -t rampart \"dead-man switch: no confirmation, restoring ")
        .raw(key)
        .raw("\" 2>/dev/null || true\n")
        .then(restore)
        .raw("\nrm -f ")
        .arg(&script)
        .raw("\n");
    let text = body.render().unwrap_or_default();
    Script::new()
        .raw("mkdir -p ")
        .arg(&dir)
        .raw(" && chmod 700 ")
        .arg(&dir)
        .raw("\nbase64 -d >")
        .arg(&script)
        .raw(" ")
        .payload(text.as_bytes())
        .raw(": >")
        .arg(&armed)
        .raw("\nif [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then\n  systemd-run --quiet --collect --unit=")
        .arg(&unit)
        .raw(&format!(
            " --timer-property=AccuracySec=1s --on-active={} /bin/sh ",
            ctx.deadman_seconds
        ))
        .arg(&script)
        .raw("\nelse\n  (setsid sh -c 'sleep \"$1\"; sh \"$2\"' rampart-deadman ")
        .raw(&ctx.deadman_seconds.to_string())
        .raw(" ")
        .arg(&script)
        .raw(" </dev/null >/dev/null 2>&1 &)\nfi\n")
}

/// Disarms every dead-man switch of this run on the host (and stops their timers).
pub fn deadman_disarm(ctx: &ApplyContext) -> Script {
    let dir = deadman_dir(ctx);
    // Prints `disarmed`, or `too late: KEY...` for switches whose restore already claimed them.
    Script::new()
        .raw("d=")
        .arg(&dir)
        .raw("\nlate=\nfor f in \"$d\"/*.sh \"$d\"/*.fired; do\n  [ -e \"$f\" ] || continue\n  k=${f%.*}\n  if [ -e \"$k.armed\" ] && rm \"$k.armed\" 2>/dev/null; then :; else late=\"$late ${k##*/}\"; fi\ndone\nif command -v systemctl >/dev/null 2>&1; then\n  for u in $(systemctl list-units --all --plain --no-legend ")
        .arg(&format!("rampart-deadman-{}-*", ctx.run_id))
        .raw(" 2>/dev/null | awk '{print $1}'); do systemctl stop \"$u\" 2>/dev/null || true; done\nfi\nif [ -n \"$late\" ]; then\n  printf 'too late:%s\\n' \"$late\" | awk '{ for (i = 1; i <= NF; i++) if (!seen[$i]++) printf \"%s%s\", (i > 1 ? \" \" : \"\"), $i; print \"\" }'\nelse\n  rm -rf \"$d\"\n  echo disarmed\nfi\n")
}

/// A resource type: its name in playbooks, its parameter names (for "unknown key" errors at
/// load time) and how to build it from rendered parameters.
pub struct TypeInfo {
    pub name: &'static str,
    /// Every parameter the type accepts.
    pub params: &'static [&'static str],
    /// Builds the resource from rendered parameters (JSON after templating).
    pub build: fn(Value) -> Result<Box<dyn Resource>, ParamError>,
}

impl fmt::Debug for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeInfo({})", self.name)
    }
}

/// Every resource type, in the order the docs list them.
pub const TYPES: &[TypeInfo] = &[
    file::FILE,
    file::DIRECTORY,
    file::ABSENT,
    file::LINES,
    user::USER,
    user::GROUP,
    command::COMMAND,
    package::PACKAGE,
    service::SERVICE,
    unit::UNIT,
    sysctl::SYSCTL,
    sshd::SSHD,
    nftables::NFTABLES,
    audit_rules::AUDIT_RULES,
    json_config::JSON_CONFIG,
    wireguard::WIREGUARD,
];

pub fn lookup(name: &str) -> Option<&'static TypeInfo> {
    TYPES.iter().find(|t| t.name == name)
}

/// Deserializes rendered parameters into a type's `Params`, with serde's message as the error
/// (unknown keys were already refused, with their location, at load time).
pub fn params<T: DeserializeOwned>(value: Value) -> Result<T, ParamError> {
    serde_json::from_value(value).map_err(|e| ParamError(e.to_string()))
}

/// Runs one resource's probe, diff, apply and verify through any [`Session`]: what the engine
/// does for a whole host, for one resource. For tests of resource types (on a local session
/// in a temporary folder, or on a testbed host).
///
/// Returns the verdict before the apply and the verdict after it.
///
/// [`Session`]: crate::transport::Session
pub async fn converge_one<S: crate::transport::Session>(
    session: &S,
    resource: &dyn Resource,
    ctx: &ApplyContext,
) -> Result<(Verdict, Verdict), String> {
    use std::time::Duration;
    let timeout = Duration::from_secs(60);
    let run = |script: Script| async move {
        let text = script.render().map_err(|e| e.to_string())?;
        let out = session
            .exec(
                &crate::remote::exec_command(false),
                text.as_bytes(),
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "script ended with {}\n{}\n---- script ----\n{script}",
                out.status_text(),
                out.stderr_block()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let before = resource
        .diff(&run(resource.probe()).await?)
        .map_err(|e| e.to_string())?;
    if !before.is_in_line() {
        run(resource.apply(&before, ctx)).await?;
    }
    let after = resource
        .diff(&run(resource.probe()).await?)
        .map_err(|e| e.to_string())?;
    Ok((before, after))
}

/// `text` in base64 on one line, as probes print a file's content (for tests that write a
/// probe's output).
#[cfg(test)]
fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Runs `script` on this machine as the engine runs one on a host (for tests).
#[cfg(test)]
async fn run_local(script: Script) -> crate::transport::ExecOutput {
    use crate::transport::Session;
    crate::transport::local::LocalSession::default()
        .exec(
            &crate::remote::exec_command(false),
            script.render().unwrap().as_bytes(),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
}

/// [`run_local`], which must succeed: its stdout.
#[cfg(test)]
async fn run_local_ok(script: Script) -> String {
    let out = run_local(script).await;
    assert!(out.success(), "{}", out.stderr_block());
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_unconfirmed_deadman_restores_and_a_confirmed_one_does_not() {
        // This machine runs no systemd: the detached-sleep path. Hosts take the timer path,
        // tested on testbed hosts.
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = ApplyContext::new("t1");
        ctx.backup_root = dir.path().join("state/backups").display().to_string();
        ctx.deadman_seconds = 1;
        let restored = dir.path().join("restored");
        let restore = Script::new()
            .raw("echo restored > ")
            .arg(restored.to_str().unwrap());
        run_local_ok(deadman_arm(&ctx, "fw", restore.clone())).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(std::fs::read_to_string(&restored).unwrap(), "restored\n");
        // A confirmation that comes after the restore says so.
        assert_eq!(run_local_ok(deadman_disarm(&ctx)).await, "too late: fw\n");

        std::fs::remove_file(&restored).unwrap();
        let mut ctx2 = ctx.clone();
        ctx2.run_id = "t2".into();
        run_local_ok(deadman_arm(&ctx2, "fw", restore)).await;
        assert_eq!(run_local_ok(deadman_disarm(&ctx2)).await, "disarmed\n");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!restored.exists(), "a disarmed switch restores nothing");
        assert!(!std::path::Path::new(&deadman_dir(&ctx2)).exists());
    }
}
