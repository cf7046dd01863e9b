//! local: a [`Session`] that runs commands with `sh -c` on this machine. For unit tests of
//! probe scripts and parsers; never used to reach a host.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{ExecError, ExecOutput, Session, Stats};

#[derive(Default)]
pub struct LocalSession {
    stats: Arc<Stats>,
}

impl Session for LocalSession {
    async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut input = child.stdin.take().expect("stdin is piped");
        let data = stdin.to_vec();
        let writer = tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = input.write_all(&data).await;
        });
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| ExecError::Timeout(timeout))??;
        let _ = writer.await;
        self.stats.record(
            command.len() + stdin.len(),
            out.stdout.len() + out.stderr.len(),
        );
        use std::os::unix::process::ExitStatusExt;
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_status: out.status.code().map(|c| c as u32),
            exit_signal: out.status.signal().map(|s| s.to_string()),
        })
    }

    fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdin_reaches_the_command_and_status_comes_back() {
        let s = LocalSession::default();
        let out = s
            .exec(
                "cat; echo err >&2; exit 3",
                b"hello",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.exit_status, Some(3));
        assert_eq!(s.stats().snapshot().round_trips, 1);
    }

    #[tokio::test]
    async fn timeout_is_reported() {
        let s = LocalSession::default();
        let err = s
            .exec("sleep 5", b"", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout(_)), "{err}");
    }
}
