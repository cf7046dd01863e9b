//! transport: how rampart reaches a host and runs a command on it.
//!
//! Owns the [`Session`] trait (exec with stdin in, stdout/stderr/exit status out), its SSH
//! implementation ([`ssh`]), host key checking ([`known_hosts`]), and a local implementation
//! ([`local`]) that unit tests use to run probe scripts without SSH. It does not know what the
//! scripts mean: building them is `remote`'s job, deciding what to run is the engine's.

pub mod known_hosts;
pub mod local;
pub mod ssh;
pub mod ssh_config;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one remote command gave back.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit status; `None` when the command was ended by a signal (see `exit_signal`).
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// stderr between dividers, or `<stderr is empty>`, for error messages: cut to
    /// [`crate::untrusted::ERROR_TEXT_LIMIT`], control characters escaped (it is the host's).
    pub fn stderr_block(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let text = text.trim_end();
        if text.is_empty() {
            "<stderr is empty>".to_string()
        } else {
            format!(
                "---- stderr ----\n{}\n----------------",
                crate::untrusted::for_error(text)
            )
        }
    }

    /// How the command ended, as a short phrase: `exit status 3`, `signal KILL`.
    pub fn status_text(&self) -> String {
        match (&self.exit_status, &self.exit_signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "no exit status (channel closed)".to_string(),
        }
    }
}

/// Round trips and bytes on one session, so that the one-round-trip claim can be shown.
#[derive(Debug, Default)]
pub struct Stats {
    pub execs: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Exec round trips (one per remote command).
    pub round_trips: u64,
    /// Bytes sent to the host (command text and stdin).
    pub bytes_sent: u64,
    /// Bytes received (stdout and stderr).
    pub bytes_received: u64,
}

impl Stats {
    pub fn record(&self, sent: usize, received: usize) {
        self.execs.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(received as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            round_trips: self.execs.load(Ordering::Relaxed),
            bytes_sent: self.bytes_out.load(Ordering::Relaxed),
            bytes_received: self.bytes_in.load(Ordering::Relaxed),
        }
    }
}

/// Why a command could not be run (not: why it failed; a non-zero exit is an [`ExecOutput`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("the connection failed while running a command: {0}")]
    Channel(String),
    #[error("could not run the command locally: {0}")]
    Local(#[from] std::io::Error),
    /// The host sent more than the transport keeps for one command: reading stopped and the
    /// channel was closed (a huge file printed, or a hostile host).
    #[error(
        "{host} sent more than {} of output for one command; rampart stopped reading and closed the channel\nhint: look on {host} for what prints so much (a huge file under a path the playbook or the scan reads, a command step's output)",
        size_text(*.limit)
    )]
    OutputTooLarge { host: String, limit: u64 },
}

/// How much output one remote command may send (stdout and stderr together) unless the
/// connection options say otherwise.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;

/// `64 MiB`, `512 KiB`, `100 bytes`.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// One open connection to one host.
pub trait Session: Send + Sync {
    /// Runs `command` through the login shell, feeds it `stdin`, then closes stdin, and waits
    /// at most `timeout` for it to end.
    fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, ExecError>> + Send;

    /// [`Session::exec`] that also hands each piece of stdout to `seen` as it arrives, for
    /// scripts that need the controller midway (a risky change waits for its confirmation over
    /// a new connection).
    fn exec_watched(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        seen: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) -> impl Future<Output = Result<ExecOutput, ExecError>> + Send;

    /// Round trips and bytes so far.
    fn stats(&self) -> Arc<Stats>;
}
