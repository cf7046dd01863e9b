//! local: a [`Session`] that runs commands with `sh -c` on this machine. For unit tests of
//! probe scripts and parsers; never used to reach a host.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ExecError, ExecOutput, Session, Stats};

#[derive(Default)]
pub struct LocalSession {
    stats: Arc<Stats>,
}

impl LocalSession {
    async fn run(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        seen: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
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
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let data = stdin.to_vec();
        let writer = tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = input.write_all(&data).await;
        });
        // Both pipes at once: a command that fills one while the other stays open must not
        // stall.
        let out_side = async {
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(out);
                }
                if let Some(seen) = &seen {
                    let _ = seen.send(buf[..n].to_vec());
                }
                out.extend_from_slice(&buf[..n]);
            }
        };
        let err_side = async {
            let mut err = Vec::new();
            stderr.read_to_end(&mut err).await?;
            Ok::<_, std::io::Error>(err)
        };
        let reading = async {
            let (out, err) = tokio::join!(out_side, err_side);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((out?, err?, status))
        };
        let (out, err, status) = tokio::time::timeout(timeout, reading)
            .await
            .map_err(|_| ExecError::Timeout(timeout))??;
        let _ = writer.await;
        self.stats
            .record(command.len() + stdin.len(), out.len() + err.len());
        use std::os::unix::process::ExitStatusExt;
        Ok(ExecOutput {
            stdout: out,
            stderr: err,
            exit_status: status.code().map(|c| c as u32),
            exit_signal: status.signal().map(|s| s.to_string()),
        })
    }
}

impl Session for LocalSession {
    async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        self.run(command, stdin, timeout, None).await
    }

    async fn exec_watched(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        seen: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    ) -> Result<ExecOutput, ExecError> {
        self.run(command, stdin, timeout, Some(seen)).await
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
