//! resource: the registry of resource types and what every type provides.
//!
//! A resource is one piece of desired state with an identity (`file /etc/motd`,
//! `user moltbot`). Each type lives in its own file with four parts: a side-effect-free
//! **probe** (POSIX sh printing the current state), a pure **parse + diff** of that output
//! against the desired state, and an idempotent **apply** script. Types never run anything
//! themselves: the engine batches their probes into one round trip and their applies into one
//! more, and re-probes to verify.

pub mod command;
pub mod file;
pub mod user;

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
}

impl ApplyContext {
    /// Where backups go on a host.
    pub const BACKUP_ROOT: &'static str = "/var/lib/rampart/backups";

    /// A context for run `run_id`, with backups under [`ApplyContext::BACKUP_ROOT`].
    pub fn new(run_id: impl Into<String>) -> ApplyContext {
        ApplyContext {
            run_id: run_id.into(),
            backup_root: ApplyContext::BACKUP_ROOT.to_string(),
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

/// The probe printed something the parser does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read the probe's output: {message}\n---- probe output ----\n{output}\n----------------------"
)]
pub struct ProbeError {
    pub message: String,
    pub output: String,
}

impl ProbeError {
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
