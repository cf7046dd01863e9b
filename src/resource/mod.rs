//! resource: the registry of resource types and what every type provides.
//!
//! A resource is one piece of desired state with an identity (`file /etc/motd`,
//! `user moltbot`). Each type lives in its own file with four parts: a side-effect-free
//! **probe** (POSIX sh printing the current state), a pure **parse + diff** of that output
//! against the desired state, and an idempotent **apply** script. Types never run anything
//! themselves: the engine batches their probes into one round trip and their applies into one
//! more, and re-probes to verify.
//!
//! ## The legs of a type
//!
//! Each type implements [`Resource`] (its identity, probe, and what the engine asks of it:
//! risky, sensitive, plain fields, the path it writes, restore) and [`Typed`]:
//!
//! - `parse(&str) -> Observed`: the probe's output read into the type's own `Observed`
//!   state; output cut short or garbled is an error, never an empty state;
//! - `compare(&Observed) -> Verdict<Field>`: pure, the desired state (`self`) against what
//!   was found, each change naming one of the type's fields (an enum per type, made with
//!   [`fields!`](crate::fields) when the set is fixed);
//! - `converge(Work<Field>, ctx) -> Script`: the apply, picking its work by typed fields
//!   (`work.has(&Field::Content)`), and saying what it does as a notified handler
//!   ([`Work::Notified`]).
//!
//! The engine sees only [`Resource`] and [`Converge`] (`diff`, `apply`, `notify`), which every
//! [`Typed`] type gets for free: verdicts reach it with field names as text.
//!
//! What several types share lives in [`kit`] (probe output reader, `die`, config files
//! written whole), [`fsfile`] (paths, owner/group/mode, atomic writes that follow no link)
//! and [`risky`] (what nftables and sshd share). Shell text only through [`Script`].
//!
//! ## Adding a type
//!
//! Write `src/resource/NAME.rs` with its `TypeInfo` constant(s) (name, parameters, build), its
//! `Resource` and `Typed` impls and its field enum, then add ONE line to the registry below
//! (`NAME: [ITS_TYPEINFO],`). Add its fixture cases under `tests/fixtures/<type>/`
//! (tests/fixtures.rs says how to record them): the fixture harness fails for a registered
//! type without one.

mod after;
pub mod fsfile;
pub mod kit;
pub mod risky;

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
/// either side has several lines. `F` is the type's field enum ([`Field`]) inside a type;
/// the engine and reports see the field's name (`Change<String>`, the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<F = String> {
    pub field: F,
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
}

impl<F> Change<F> {
    /// A change of the typed field `field`.
    pub fn of(field: F, before: Option<String>, after: Option<String>) -> Change<F> {
        Change {
            field,
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

/// What the diff found. `F` as for [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<F = String> {
    /// Nothing to do; the sentence says what was found (`file /etc/motd is in line`).
    InLine(String),
    /// The resource does not exist and will be created.
    Create(Vec<Change<F>>),
    /// The resource exists and will be removed.
    Remove(Vec<Change<F>>),
    /// The resource exists and these fields change.
    Modify(Vec<Change<F>>),
}

impl<F> Verdict<F> {
    pub fn is_in_line(&self) -> bool {
        matches!(self, Verdict::InLine(_))
    }

    pub fn changes(&self) -> &[Change<F>] {
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

    /// The same verdict with each field mapped by `f`.
    pub fn map<G>(self, mut f: impl FnMut(F) -> Option<G>) -> Verdict<G> {
        let mut all = |c: Vec<Change<F>>| -> Vec<Change<G>> {
            c.into_iter()
                .filter_map(|c| {
                    Some(Change {
                        field: f(c.field)?,
                        before: c.before,
                        after: c.after,
                    })
                })
                .collect()
        };
        match self {
            Verdict::InLine(s) => Verdict::InLine(s),
            Verdict::Create(c) => Verdict::Create(all(c)),
            Verdict::Remove(c) => Verdict::Remove(all(c)),
            Verdict::Modify(c) => Verdict::Modify(all(c)),
        }
    }
}

impl<F: PartialEq> Verdict<F> {
    /// `field` changes.
    pub fn has(&self, field: &F) -> bool {
        self.changes().iter().any(|c| &c.field == field)
    }
}

/// One type's fields (an enum per type, made with [`fields!`](crate::fields) for a fixed
/// set): what its apply picks its work by, and the name reports show.
pub trait Field: Clone + PartialEq + fmt::Debug + Send + Sync {
    /// The name reports show (`content`, `gateway.auth.token`).
    fn name(&self) -> String;
    /// The field shown as `name`: the inverse of [`Field::name`].
    fn of(name: &str) -> Option<Self>;
}

/// Declares a type's field enum with a fixed name for each variant and its [`Field`] impl.
#[macro_export]
macro_rules! fields {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $text:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// The name reports show.
            #[allow(dead_code)]
            pub const fn text(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }
        }

        impl $crate::resource::Field for $name {
            fn name(&self) -> String {
                self.text().to_string()
            }
            fn of(name: &str) -> Option<$name> {
                [$($name::$var),+].into_iter().find(|f| f.text() == name)
            }
        }
    };
}

/// What an apply is asked to do: converge the fields of a verdict, or act as a notified
/// handler (no probe ran; the type runs its handler actions, such as `restarted: true`).
#[derive(Debug, Clone, Copy)]
pub enum Work<'a, F> {
    Converge(&'a Verdict<F>),
    Notified,
}

impl<F: PartialEq> Work<'_, F> {
    /// The changes to make (none for a notified handler).
    pub fn changes(&self) -> &[Change<F>] {
        match self {
            Work::Converge(v) => v.changes(),
            Work::Notified => &[],
        }
    }

    /// `field` changes.
    pub fn has(&self, field: &F) -> bool {
        self.changes().iter().any(|c| &c.field == field)
    }

    pub fn is_notified(&self) -> bool {
        matches!(self, Work::Notified)
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

/// What every resource type provides. See the module doc. `diff`, `apply` and `notify`
/// come from [`Typed`] (the [`Converge`] supertrait, implemented for every [`Typed`] type).
pub trait Resource: fmt::Debug + Send + Sync + Converge {
    /// `file /etc/motd`: the type and the identity.
    fn id(&self) -> String;
    /// POSIX sh, free of side effects, printing the current state on stdout.
    fn probe(&self) -> Script;

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

/// A type's typed legs: probe output -> [`Typed::parse`] -> `Observed` -> pure
/// [`Typed::compare`] with the desired state (`self`) -> `Verdict<Field>` -> [`Typed::converge`].
pub trait Typed {
    /// What the probe found, parsed. May borrow the probe's output (for errors that quote it).
    type Observed<'a>;
    /// The fields this type's verdicts change.
    type Field: Field;
    /// Reads the probe's output; an output it does not understand (cut short, garbled) is an
    /// error, never an empty state. Pure.
    fn parse<'a>(&self, probe_output: &'a str) -> Result<Self::Observed<'a>, ProbeError>;
    /// Compares the desired state (`self`) with what was found. Pure. An error names a wish
    /// the host cannot grant (a masked unit, a folder where a file should be).
    fn compare(&self, observed: &Self::Observed<'_>) -> Result<Verdict<Self::Field>, ProbeError>;
    /// POSIX sh that does `work`; idempotent and safe to rerun. It exits non-zero on failure,
    /// with the reason on stderr.
    fn converge(&self, work: Work<'_, Self::Field>, ctx: &ApplyContext) -> Script;
}

/// What the engine calls on a resource between probe and verify, with verdicts whose fields
/// are names (text). Implemented for every [`Typed`] type; never implement it by hand.
pub trait Converge {
    /// Parses the probe's output and compares it with the desired state. Pure.
    fn diff(&self, probe_output: &str) -> Result<Verdict, ProbeError>;
    /// POSIX sh that makes the changes of `verdict`; idempotent and safe to rerun. It exits
    /// non-zero on failure, with the reason on stderr. An empty [`Verdict::Modify`] is a
    /// notified handler's run (what the engine sends): the same as [`Converge::notify`].
    fn apply(&self, verdict: &Verdict, ctx: &ApplyContext) -> Script;
    /// POSIX sh for a notified handler (no probe ran).
    fn notify(&self, ctx: &ApplyContext) -> Script;
}

impl<T: Typed> Converge for T {
    fn diff(&self, probe_output: &str) -> Result<Verdict, ProbeError> {
        let observed = self.parse(probe_output)?;
        Ok(self.compare(&observed)?.map(|f| Some(f.name())))
    }

    fn apply(&self, verdict: &Verdict, ctx: &ApplyContext) -> Script {
        if matches!(verdict, Verdict::Modify(c) if c.is_empty()) {
            return self.notify(ctx);
        }
        // The verdict came from this type's `diff`: every name is one of its fields.
        let typed = verdict.clone().map(|name| T::Field::of(&name));
        debug_assert_eq!(typed.changes().len(), verdict.changes().len());
        self.converge(Work::Converge(&typed), ctx)
    }

    fn notify(&self, ctx: &ApplyContext) -> Script {
        self.converge(Work::Notified, ctx)
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
        .raw(" --timer-property=AccuracySec=1s --on-active=")
        .raw(&ctx.deadman_seconds.to_string())
        .raw(" /bin/sh ")
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

/// Declares each type's module and lists its `TypeInfo`s in [`TYPES`].
macro_rules! registry {
    ($($module:ident: [$($info:ident),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every resource type, in the order the docs list them.
        pub const TYPES: &[TypeInfo] = &[$($($module::$info),+),+];
    };
}

// The registry: one line per type's module (see "Adding a type" in the module doc).
registry! {
    file: [FILE, DIRECTORY, ABSENT, LINES],
    user: [USER, GROUP],
    command: [COMMAND],
    package: [PACKAGE],
    service: [SERVICE],
    unit: [UNIT],
    sysctl: [SYSCTL],
    sshd: [SSHD],
    nftables: [NFTABLES],
    audit_rules: [AUDIT_RULES],
    json_config: [JSON_CONFIG],
    wireguard: [WIREGUARD],
}

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

    /// Every field a verdict names comes back as the same typed field in the apply.
    #[test]
    fn field_names_round_trip() {
        fn back<F: Field>(fields: &[F]) {
            for f in fields {
                assert_eq!(F::of(&f.name()).as_ref(), Some(f), "{}", f.name());
            }
        }
        use file::FsField;
        back(&[
            FsField::Content,
            FsField::Type,
            FsField::Owner,
            FsField::Group,
            FsField::Mode,
        ]);
        use sysctl::SysctlField;
        back(&[
            SysctlField::Content,
            SysctlField::Type,
            SysctlField::Live("net.ipv4.ip_forward".into()),
        ]);
        assert_eq!(
            SysctlField::Live("kernel.kptr_restrict".into()).name(),
            "kernel.kptr_restrict (live)"
        );
        use sshd::SshdField;
        back(&[
            SshdField::Content,
            SshdField::Effective("passwordauthentication".into()),
        ]);
        use fsfile::PermField;
        use json_config::JsonField;
        back(&[
            JsonField::Key("gateway.auth.token".into()),
            JsonField::Key("a[0].b".into()),
            JsonField::File(PermField::Mode),
            JsonField::File(PermField::Owner),
        ]);
        assert_eq!(JsonField::File(PermField::Mode).name(), "file mode");
        back(&[package::PackageName("openssh-server".into())]);
        use wireguard::WgField;
        back(&[
            WgField::Key,
            WgField::ConfMode,
            WgField::Dropin,
            WgField::State,
        ]);
        assert_eq!(WgField::of("no such field"), None);
    }

    /// A verdict with field names the type does not have never reaches its apply as fields
    /// (and a notified handler is its own kind of work, not a verdict).
    #[test]
    fn work_says_what_changes_and_whether_notified() {
        let v: Verdict<wireguard::WgField> = Verdict::Modify(vec![Change::of(
            wireguard::WgField::Enabled,
            Some("disabled".into()),
            Some("enabled".into()),
        )]);
        let w = Work::Converge(&v);
        assert!(w.has(&wireguard::WgField::Enabled));
        assert!(!w.has(&wireguard::WgField::State));
        assert!(!w.is_notified());
        let n: Work<'_, wireguard::WgField> = Work::Notified;
        assert!(n.is_notified() && n.changes().is_empty());
        let named = v.clone().map(|f| Some(f.name()));
        assert_eq!(
            named,
            Verdict::Modify(vec![Change::new(
                "enabled",
                Some("disabled".into()),
                Some("enabled".into())
            )])
        );
        assert_eq!(named.map(|n| wireguard::WgField::of(&n)), v);
    }

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
