//! connector: how a run opens a host's connections. The engine opens more than one per host
//! (the probe's, the NEW connection that confirms a risky change, the checks after a
//! rollback), always through a [`Connector`], so that one host's whole pipeline runs over SSH
//! in a run and over a local session in unit tests.
//!
//! [`connect_host`] is the SSH way: the host's admin login or, when that login is refused,
//! its bootstrap login.

use std::future::Future;

use crate::inventory::Host;
use crate::transport::Session;
use crate::transport::ssh::{self, ConnectError, ConnectOptions, SshSession};

/// An open session and the login it used.
pub struct Connected<S> {
    pub session: S,
    pub login: String,
    /// Set when the admin login was refused and the bootstrap login was used instead.
    pub note: Option<String>,
}

/// Opens (and closes) connections to hosts.
pub trait Connector: Send + Sync {
    type Session: Session + 'static;

    /// A new connection to `host`, as [`connect_host`] makes it.
    fn connect(
        &self,
        host: &Host,
    ) -> impl Future<Output = Result<Connected<Self::Session>, ConnectError>> + Send;

    /// Closes a session politely (SSH says goodbye; a local one has nothing to do).
    fn close(&self, session: Self::Session) -> impl Future<Output = ()> + Send;

    /// Where the host keeps rampart's backups, when not the default: a local session's
    /// "host" is a folder of the test, never this machine's `/var/lib/rampart`.
    fn backup_root(&self, _host: &Host) -> Option<String> {
        None
    }
}

/// Logs in as the host's `user`; only when that login is refused (not when the host is
/// unreachable or its key is wrong), as its `bootstrap_user`, and says so.
pub async fn connect_host(
    host: &Host,
    options: &ConnectOptions,
) -> Result<Connected<SshSession>, ConnectError> {
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
