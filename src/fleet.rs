//! fleet: many hosts at once. Owns `--forks` (how many hosts run concurrently), connecting
//! each host with its admin login or, when that is refused, its bootstrap login, and keeping
//! each host's fate so that one failure never stops the others.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::inventory::Host;
use crate::transport::ssh::{self, ConnectError, ConnectOptions, SshSession};

/// Runs `work` for every host, at most `forks` at once, and returns the results in the
/// order of `hosts`.
pub async fn for_each_host<T, F, Fut>(hosts: &[Host], forks: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Host) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(forks.max(1)));
    let mut tasks = Vec::with_capacity(hosts.len());
    for host in hosts {
        let permits = permits.clone();
        let job = work(host.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            job.await
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            // A panic in one host's task is a bug; surface it rather than hide the host.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results
}

/// An open session and the login it used.
pub struct Connected {
    pub session: SshSession,
    pub login: String,
    /// Set when the admin login was refused and the bootstrap login was used instead.
    pub note: Option<String>,
}

/// Logs in as the host's `user`; only when that login is refused (not when the host is
/// unreachable or its key is wrong), as its `bootstrap_user`, and says so.
pub async fn connect_host(
    host: &Host,
    options: &ConnectOptions,
) -> Result<Connected, ConnectError> {
    match ssh::connect(&host.target(&host.user), options).await {
        Ok(session) => Ok(Connected {
            session,
            login: host.user.clone(),
            note: None,
        }),
        Err(ConnectError::AuthRefused { login, tried }) => match &host.bootstrap_user {
            Some(boot) if boot != &host.user => {
                let session = ssh::connect(&host.target(boot), options).await?;
                Ok(Connected {
                    session,
                    login: boot.clone(),
                    note: Some(format!(
                        "login as {} refused; logged in as bootstrap user {boot}",
                        host.user
                    )),
                })
            }
            _ => Err(ConnectError::AuthRefused { login, tried }),
        },
        Err(e) => Err(e),
    }
}
