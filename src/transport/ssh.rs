//! ssh: the russh client. Connects (directly or through a jump host), checks the host key
//! against known_hosts with rampart's own matcher, authenticates, and runs commands.
//!
//! Owns the SSH protocol side only: it never decides what to run and never prints. Errors carry
//! what the operator needs to act ([`ConnectError::hint`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::{Certificate, HashAlg, PrivateKey, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

use super::known_hosts::{self, HostKeyStatus, KnownHosts, KnownHostsFile, RecordedKey};
use super::{ExecError, ExecOutput, Session, Stats};

/// The environment variable that holds the passphrase of an encrypted identity file.
pub const PASSPHRASE_ENV: &str = "RAMPART_KEY_PASSPHRASE";

/// One SSH login: where, as whom, with which key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The inventory name, for messages.
    pub name: String,
    /// What to connect to, and the name looked up in known_hosts.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// An identity file; `None` means the agent, then `~/.ssh/id_{ed25519,ecdsa,rsa}`.
    pub identity: Option<PathBuf>,
    /// What the operator's ssh config adds.
    pub ssh: FromConfig,
}

/// What an endpoint takes from the operator's OpenSSH config (`~/.ssh/config`, `-F`) beyond
/// address, port, login and the inventory's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FromConfig {
    /// `IdentityFile`s, offered after `identity` (OpenSSH offers the agent's keys and then
    /// these).
    pub identities: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: only the configured files (and the agent's copies of them).
    pub identities_only: bool,
    /// `UserKnownHostsFile`, when `--known-hosts` does not say.
    pub known_hosts: Option<PathBuf>,
    /// `StrictHostKeyChecking accept-new` (or `no`): record unknown keys, as `--accept-new`.
    pub accept_new: Option<bool>,
    /// `ProxyCommand` (tokens expanded): run locally with `sh -c`, its stdin and stdout carry
    /// the connection.
    pub proxy_command: Option<String>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
}

impl Endpoint {
    /// `user@address:port`, as shown in messages.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// A host to reach, maybe through bastions (like OpenSSH's ProxyJump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    /// Jump hosts, the first one reached first; empty for a direct connection. A run opens ONE
    /// connection to each bastion (per chain that leads to it), shared by every target behind it.
    pub jump: Vec<Endpoint>,
}

/// How to connect: shared by every connection of a run.
pub struct ConnectOptions {
    pub known_hosts: PathBuf,
    /// Record unknown host keys (hashed) instead of refusing them, like OpenSSH's
    /// `StrictHostKeyChecking=accept-new`. A changed key is refused all the same.
    pub accept_new: bool,
    /// TCP connect, key exchange and authentication together.
    pub connect_timeout: Duration,
    /// The most output (stdout and stderr together) one remote command may send; past it the
    /// command's channel is closed and the exec fails ([`ExecError::OutputTooLarge`]).
    pub max_output: u64,
    keys: KeyCache,
    jumps: JumpPool,
}

impl ConnectOptions {
    pub fn new(known_hosts: PathBuf, accept_new: bool, connect_timeout: Duration) -> Self {
        ConnectOptions {
            known_hosts,
            accept_new,
            connect_timeout,
            max_output: super::DEFAULT_MAX_OUTPUT,
            keys: KeyCache::default(),
            jumps: JumpPool::default(),
        }
    }
}

/// Identity files read once per run: an encrypted key asks for its passphrase once, not once
/// per host.
#[derive(Default)]
struct KeyCache {
    loaded: tokio::sync::Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
}

impl KeyCache {
    async fn load(&self, path: &Path) -> Result<Arc<PrivateKey>, ConnectError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(key) = loaded.get(path) {
            return Ok(key.clone());
        }
        let key = Arc::new(read_identity(path)?);
        loaded.insert(path.to_path_buf(), key.clone());
        Ok(key)
    }
}

/// Reads an OpenSSH private key, decrypting it with [`PASSPHRASE_ENV`] or a prompt on the
/// terminal.
fn read_identity(path: &Path) -> Result<PrivateKey, ConnectError> {
    let key_error = |message: String| ConnectError::Identity {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    let key = PrivateKey::from_openssh(text.trim()).map_err(|e| key_error(e.to_string()))?;
    if !key.is_encrypted() {
        return Ok(key);
    }
    let passphrase = match std::env::var(PASSPHRASE_ENV) {
        Ok(p) => p,
        Err(_) => {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                return Err(key_error(format!(
                    "the key is encrypted and {PASSPHRASE_ENV} is not set (and there is no terminal to ask on)"
                )));
            }
            rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
                .map_err(|e| key_error(e.to_string()))?
        }
    };
    key.decrypt(passphrase.as_bytes())
        .map_err(|_| key_error("wrong passphrase".to_string()))
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("host key of {host} is not known ({fingerprint}); refusing to connect")]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error("{}", changed_message(.host, .presented, .recorded, .known_hosts))]
    HostKeyChanged {
        host: String,
        presented: String,
        recorded: Vec<RecordedKey>,
        known_hosts: PathBuf,
    },
    #[error("host key of {host} ({fingerprint}) is REVOKED in {}:{line}; refusing to connect", .known_hosts.display())]
    RevokedHostKey {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("{host} is trusted only through a @cert-authority line ({}:{line}); host certificates are not supported", .known_hosts.display())]
    CertAuthorityOnly {
        host: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("{host} presented a host certificate; host certificates are not supported")]
    HostCertificate { host: String },
    #[error("cannot use known_hosts: {0}")]
    KnownHosts(#[from] known_hosts::KnownHostsError),
    #[error("cannot use identity {}: {message}", .path.display())]
    Identity { path: PathBuf, message: String },
    #[error("{login} refused every key offered (tried: {})", if .tried.is_empty() { "none found".to_string() } else { .tried.join(", ") })]
    AuthRefused { login: String, tried: Vec<String> },
    #[error("ssh error with {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("through jump host {jump}: {source}")]
    Jump {
        jump: String,
        #[source]
        source: Box<ConnectError>,
    },
    /// A failure shared by every target behind one bastion.
    #[error(transparent)]
    Shared(Arc<ConnectError>),
    /// rampart's own bug (a panic) while connecting or gathering facts.
    #[error("{message}")]
    Bug { message: String },
}

fn changed_message(
    host: &str,
    presented: &str,
    recorded: &[RecordedKey],
    known_hosts: &Path,
) -> String {
    let mut text =
        format!("HOST KEY OF {host} HAS CHANGED; refusing to connect\n  presented: {presented}");
    for r in recorded {
        text.push_str(&format!(
            "\n  recorded:  {} {} ({}:{})",
            r.algorithm,
            r.fingerprint,
            known_hosts.display(),
            r.line
        ));
    }
    text
}

impl ConnectError {
    /// What the operator can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConnectError::UnknownHostKey { host, .. } => Some(format!(
                "check the fingerprint out of band (on the host: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then rerun with --accept-new to record {host}"
            )),
            ConnectError::HostKeyChanged {
                host, known_hosts, ..
            } => Some(format!(
                "if {host} was rebuilt, remove the old key with `ssh-keygen -R {host} -f {}` and connect again; otherwise someone may be intercepting the connection",
                known_hosts.display()
            )),
            ConnectError::AuthRefused { .. } => Some(
                "set the inventory's `identity` (ansible_ssh_private_key_file) or load the key into ssh-agent; for a fresh host check `bootstrap_user`".to_string(),
            ),
            ConnectError::Unreachable { .. } | ConnectError::Timeout { .. } => {
                Some("check the address and port in the inventory and that sshd runs".to_string())
            }
            ConnectError::Identity { .. } => Some(format!(
                "for an encrypted key set {PASSPHRASE_ENV} or run from a terminal, or load it into ssh-agent"
            )),
            ConnectError::Jump { source, .. } => source.hint(),
            ConnectError::Shared(inner) => inner.hint(),
            ConnectError::Bug { .. } => Some(crate::untrusted::PANIC_HINT.to_string()),
            _ => None,
        }
    }

    /// A short label for summaries: `unreachable`, `host key`, `auth`, `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Unreachable { .. } | ConnectError::Timeout { .. } => "unreachable",
            ConnectError::UnknownHostKey { .. }
            | ConnectError::HostKeyChanged { .. }
            | ConnectError::RevokedHostKey { .. }
            | ConnectError::CertAuthorityOnly { .. }
            | ConnectError::HostCertificate { .. } => "host key",
            ConnectError::AuthRefused { .. } | ConnectError::Identity { .. } => "auth",
            ConnectError::Jump { source, .. } => source.kind(),
            ConnectError::Shared(inner) => inner.kind(),
            _ => "error",
        }
    }
}

/// Serialises appends to known_hosts within this process (one line per accepted host).
static KNOWN_HOSTS_APPEND: Mutex<()> = Mutex::new(());

/// The russh handler: checks the server's key and keeps the verdict for the error message.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_new: bool,
    refusal: Arc<Mutex<Option<ConnectError>>>,
    /// The SHA256 fingerprint of the host key that passed the check.
    verified: Arc<Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn verdict(&self, key: &PublicKey) -> Result<(), ConnectError> {
        // The user's file, then the system's for hosts the user's does not name (OpenSSH).
        let files = KnownHosts::load(
            &self.known_hosts,
            Path::new(known_hosts::GLOBAL_KNOWN_HOSTS),
        )?;
        let fingerprint = known_hosts::fingerprint(key);
        let (status, said_by) = files.check(&self.host, self.port, key);
        match status {
            HostKeyStatus::Trusted => Ok(()),
            HostKeyStatus::Unknown if self.accept_new => {
                let _guard = KNOWN_HOSTS_APPEND.lock().unwrap_or_else(|e| e.into_inner());
                // Another connection of this run may have recorded it meanwhile.
                let again = KnownHostsFile::load(&self.known_hosts)?;
                match again.check(&self.host, self.port, key) {
                    HostKeyStatus::Trusted => Ok(()),
                    HostKeyStatus::Unknown => {
                        KnownHostsFile::append_hashed(
                            &self.known_hosts,
                            &self.host,
                            self.port,
                            key,
                        )?;
                        tracing::info!(host = %self.host, %fingerprint, "recorded new host key");
                        Ok(())
                    }
                    other => Err(self.refusal_for(other, fingerprint, &self.known_hosts)),
                }
            }
            other => Err(self.refusal_for(other, fingerprint, said_by)),
        }
    }

    /// `known_hosts`: the file whose lines say so (named in the message and the hint).
    fn refusal_for(
        &self,
        status: HostKeyStatus,
        fingerprint: String,
        known_hosts: &Path,
    ) -> ConnectError {
        let host = self.lookup_name();
        let known_hosts = known_hosts.to_path_buf();
        match status {
            HostKeyStatus::Trusted => unreachable!("a trusted key is not refused"),
            HostKeyStatus::Unknown => ConnectError::UnknownHostKey {
                host,
                fingerprint,
                known_hosts,
            },
            HostKeyStatus::Changed { recorded } => ConnectError::HostKeyChanged {
                host,
                presented: fingerprint,
                recorded,
                known_hosts,
            },
            HostKeyStatus::Revoked { line } => ConnectError::RevokedHostKey {
                host,
                fingerprint,
                known_hosts,
                line,
            },
            HostKeyStatus::CertAuthorityOnly { line } => ConnectError::CertAuthorityOnly {
                host,
                known_hosts,
                line,
            },
        }
    }

    fn lookup_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let outcome = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.verdict(key),
            PublicKeyOrCertificate::Certificate(_) => Err(ConnectError::HostCertificate {
                host: self.lookup_name(),
            }),
        };
        match outcome {
            Ok(()) => {
                if let PublicKeyOrCertificate::PublicKey { key, .. } = server_key {
                    *self.verified.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(known_hosts::fingerprint(key));
                }
                Ok(true)
            }
            Err(refusal) => {
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
                Ok(false)
            }
        }
    }
}

/// Key exchanges offered, best first: the post-quantum hybrid ML-KEM-768 + X25519 (OpenSSH
/// 9.9+, Debian 13's default) first, so that a recorded session cannot be decrypted later by a
/// quantum computer; then X25519 for older servers. Pinned here rather than left to russh's
/// default order, which may change between versions.
const KEX_ORDER: &[russh::kex::Name] = &[
    russh::kex::MLKEM768X25519_SHA256,
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::DH_GEX_SHA256,
    russh::kex::DH_G18_SHA512,
    russh::kex::DH_G17_SHA512,
    russh::kex::DH_G16_SHA512,
    russh::kex::DH_G15_SHA512,
    russh::kex::DH_G14_SHA256,
    russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // Without TCP_NODELAY every small request waits for a delayed ACK: ~40 ms each.
        nodelay: true,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        preferred: russh::Preferred {
            kex: std::borrow::Cow::Borrowed(KEX_ORDER),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// An authenticated connection to one host.
pub struct SshSession {
    handle: Handle<HostKeyCheck>,
    /// Kept open for as long as the target connection runs through it (shared with the
    /// other targets behind the same bastion).
    _jump: Option<SharedHandle>,
    stats: Arc<Stats>,
    /// The identity that was accepted, e.g. `agent: key comment` or a file path.
    pub authenticated_with: String,
    /// The inventory name, for errors.
    host: String,
    /// [`ConnectOptions::max_output`].
    max_output: u64,
    /// The SHA256 fingerprint of the target's host key that rampart verified.
    pub host_key_fingerprint: String,
}

/// A byte stream an SSH connection runs over: TCP, a channel of a jump host, or a
/// ProxyCommand's stdin and stdout.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type SharedHandle = Arc<Handle<HostKeyCheck>>;
type Cell = Arc<tokio::sync::OnceCell<Result<SharedHandle, Arc<ConnectError>>>>;

/// The run's connections to jump hosts, one per chain of hops: every target behind a bastion
/// shares its one connection (64 targets at once must not hit the bastion's MaxStartups). A
/// bastion that could not be reached is not tried again in the same run; one whose connection
/// has since ended is.
#[derive(Default)]
struct JumpPool {
    cells: Mutex<HashMap<Vec<Endpoint>, Cell>>,
}

impl JumpPool {
    fn cell(&self, chain: &[Endpoint]) -> Cell {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        let cell = cells.entry(chain.to_vec()).or_default();
        if let Some(Ok(handle)) = cell.get()
            && handle.is_closed()
        {
            *cell = Cell::default();
        }
        cell.clone()
    }

    /// The connection to the last hop of `chain`, made through the ones before it.
    fn bastion<'a>(
        &'a self,
        chain: &'a [Endpoint],
        options: &'a ConnectOptions,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SharedHandle, ConnectError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let cell = self.cell(chain);
            let result = cell
                .get_or_init(|| async {
                    let Some((last, before)) = chain.split_last() else {
                        return Err(Arc::new(ConnectError::Bug {
                            message: "a jump chain with no hop".to_string(),
                        }));
                    };
                    let wrap = |source: ConnectError| {
                        Arc::new(ConnectError::Jump {
                            jump: last.display(),
                            source: Box::new(source),
                        })
                    };
                    let stream: Box<dyn Io> = if before.is_empty() {
                        open_stream(last).await.map_err(wrap)?
                    } else {
                        let prev = self.bastion(before, options).await.map_err(Arc::new)?;
                        through(&prev, last).await.map_err(wrap)?
                    };
                    let (handle, used, _) = handshake(stream, last, options).await.map_err(wrap)?;
                    tracing::debug!(jump = %last.display(), %used, "connected to jump host");
                    Ok(Arc::new(handle))
                })
                .await;
            match result {
                Ok(handle) => Ok(handle.clone()),
                Err(e) => Err(ConnectError::Shared(e.clone())),
            }
        })
    }
}

/// A direct-tcpip channel from `via` to `ep`.
async fn through(via: &SharedHandle, ep: &Endpoint) -> Result<Box<dyn Io>, ConnectError> {
    let channel = via
        .channel_open_direct_tcpip(ep.address.clone(), u32::from(ep.port), "127.0.0.1", 0)
        .await
        .map_err(|e| ConnectError::Protocol {
            addr: format!("{}:{}", ep.address, ep.port),
            message: format!("the jump host could not open a connection: {e}"),
        })?;
    Ok(Box::new(channel.into_stream()))
}

/// TCP to the endpoint, or its ProxyCommand.
async fn open_stream(ep: &Endpoint) -> Result<Box<dyn Io>, ConnectError> {
    match ep.ssh.proxy_command.as_deref() {
        Some(command) if !command.is_empty() => {
            let addr = format!("{}:{}", ep.address, ep.port);
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| ConnectError::Unreachable {
                    addr: addr.clone(),
                    source,
                })?;
            let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                return Err(ConnectError::Bug {
                    message: "ProxyCommand without pipes".to_string(),
                });
            };
            Ok(Box::new(ProxyStream {
                io: tokio::io::join(stdout, stdin),
                _child: child,
            }))
        }
        _ => Ok(Box::new(tcp_connect(&ep.address, ep.port).await?)),
    }
}

/// A ProxyCommand's pipes; the command is killed when the connection is dropped.
struct ProxyStream {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl tokio::io::AsyncRead for ProxyStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ProxyStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Connects to `target`, through its jump hosts if it has any (sharing the run's one
/// connection to each bastion).
pub async fn connect(
    target: &Target,
    options: &ConnectOptions,
) -> Result<SshSession, ConnectError> {
    let ep = &target.endpoint;
    let after = ep.ssh.connect_timeout.unwrap_or(options.connect_timeout);
    let work = async {
        let (stream, jump) = if target.jump.is_empty() {
            (open_stream(ep).await?, None)
        } else {
            let bastion = options.jumps.bastion(&target.jump, options).await?;
            let stream = through(&bastion, ep)
                .await
                .map_err(|source| ConnectError::Jump {
                    jump: target
                        .jump
                        .last()
                        .map(Endpoint::display)
                        .unwrap_or_default(),
                    source: Box::new(source),
                })?;
            (stream, Some(bastion))
        };
        let (handle, used, fp) = handshake(stream, ep, options).await?;
        Ok(SshSession {
            host_key_fingerprint: fp,
            handle,
            _jump: jump,
            stats: Arc::default(),
            authenticated_with: used,
            host: ep.name.clone(),
            max_output: options.max_output,
        })
    };
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: format!("{}:{}", ep.address, ep.port),
            after,
        })?
}

async fn tcp_connect(address: &str, port: u16) -> Result<tokio::net::TcpStream, ConnectError> {
    let stream = tokio::net::TcpStream::connect((address, port))
        .await
        .map_err(|source| ConnectError::Unreachable {
            addr: format!("{address}:{port}"),
            source,
        })?;
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Unreachable {
            addr: format!("{address}:{port}"),
            source,
        })?;
    Ok(stream)
}

/// Key exchange (with the host key check) and authentication over an open stream.
async fn handshake<S>(
    stream: S,
    ep: &Endpoint,
    options: &ConnectOptions,
) -> Result<(Handle<HostKeyCheck>, String, String), ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let refusal = Arc::new(Mutex::new(None));
    let verified = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        verified: verified.clone(),
        host: ep.address.clone(),
        port: ep.port,
        known_hosts: ep
            .ssh
            .known_hosts
            .clone()
            .unwrap_or_else(|| options.known_hosts.clone()),
        accept_new: options.accept_new || ep.ssh.accept_new == Some(true),
        refusal: refusal.clone(),
    };
    let addr = format!("{}:{}", ep.address, ep.port);
    let mut handle = match client::connect_stream(client_config(), stream, check).await {
        Ok(handle) => handle,
        Err(e) => {
            if let Some(refused) = refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(refused);
            }
            return Err(ConnectError::Protocol {
                addr,
                message: e.to_string(),
            });
        }
    };
    let used = authenticate(&mut handle, ep, options).await?;
    let fingerprint = verified
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    Ok((handle, used, fingerprint))
}

/// Offers keys the way OpenSSH does: the configured identity (through the agent when the
/// agent holds it), or else every agent key and then the default key files.
async fn authenticate(
    handle: &mut Handle<HostKeyCheck>,
    ep: &Endpoint,
    options: &ConnectOptions,
) -> Result<String, ConnectError> {
    let addr = format!("{}:{}", ep.address, ep.port);
    let protocol = |e: russh::Error| ConnectError::Protocol {
        addr: addr.clone(),
        message: e.to_string(),
    };
    // RSA signs with SHA-2 unless the server says otherwise: OpenSSH 8.8+ refuses SHA-1.
    let rsa_hash = match handle.best_supported_rsa_hash().await.map_err(protocol)? {
        Some(Some(hash)) => Some(hash),
        Some(None) => None,
        None => Some(HashAlg::Sha256),
    };
    let mut tried = Vec::new();
    let mut agent = match std::env::var_os("SSH_AUTH_SOCK") {
        Some(_) => AgentClient::connect_env().await.ok(),
        None => None,
    };
    let mut agent_keys: Vec<(PublicKey, String)> = Vec::new();
    let mut agent_certs: Vec<(Certificate, String)> = Vec::new();
    if let Some(agent) = agent.as_mut() {
        for id in agent.request_identities().await.unwrap_or_default() {
            match id {
                AgentIdentity::PublicKey { key, comment } => agent_keys.push((key, comment)),
                AgentIdentity::Certificate {
                    certificate,
                    comment,
                } => agent_certs.push((certificate, comment)),
            }
        }
    }

    // The inventory's identity, then the ssh config's IdentityFiles; with none (and without
    // IdentitiesOnly) the default key files.
    let mut files: Vec<PathBuf> = ep.identity.iter().cloned().collect();
    for f in &ep.ssh.identities {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    let configured = !files.is_empty();
    // The inventory's own `identity` is the only key offered (rampart has always done so:
    // a fleet key must not be preceded by every agent key up to sshd's MaxAuthTries), as
    // `IdentitiesOnly yes` is for the ssh config's.
    let only = ep.ssh.identities_only || ep.identity.is_some();
    if !configured && !only {
        files = default_identities();
    }
    let publics: Vec<Option<PublicKey>> = files.iter().map(|f| public_half(f)).collect();
    let wanted = |key: &PublicKey| {
        publics
            .iter()
            .flatten()
            .any(|p| p.key_data() == key.key_data())
    };
    // Agent keys: the configured ones first (signed by the agent, no passphrase), then, unless
    // IdentitiesOnly, every other agent key. Certificates the agent holds go with their key.
    let mut agent_offers: Vec<Offer> = Vec::new();
    for (cert, comment) in &agent_certs {
        let key = PublicKey::new(cert.public_key().clone(), "");
        if wanted(&key) || !only {
            agent_offers.push(Offer::AgentCert(Box::new(cert.clone()), comment.clone()));
        }
    }
    for (key, comment) in &agent_keys {
        if wanted(key) {
            agent_offers.push(Offer::AgentKey(key.clone(), comment.clone()));
        }
    }
    if !only {
        for (key, comment) in &agent_keys {
            if !wanted(key) {
                agent_offers.push(Offer::AgentKey(key.clone(), comment.clone()));
            }
        }
    }
    let held = |p: &Option<PublicKey>| {
        p.as_ref()
            .is_some_and(|p| agent_keys.iter().any(|(k, _)| k.key_data() == p.key_data()))
    };
    let file_offers: Vec<PathBuf> = files
        .iter()
        .zip(&publics)
        .filter(|(_, p)| !held(p))
        .map(|(f, _)| f.clone())
        .collect();

    let hash_for = |alg: russh::keys::Algorithm| if alg.is_rsa() { rsa_hash } else { None };
    for offer in agent_offers {
        let Some(agent) = agent.as_mut() else { break };
        let (label, outcome) = match offer {
            Offer::AgentKey(key, comment) => {
                let hash = hash_for(key.algorithm());
                (
                    format!("agent key {comment}"),
                    handle
                        .authenticate_publickey_with(ep.user.clone(), key, hash, agent)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Offer::AgentCert(cert, comment) => {
                let hash = hash_for(cert.algorithm());
                (
                    format!("agent certificate {comment}"),
                    handle
                        .authenticate_certificate_with(ep.user.clone(), *cert, hash, agent)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
        };
        tried.push(label.clone());
        match outcome {
            Ok(result) if result.success() => return Ok(label),
            Ok(_) => {}
            Err(e) => tracing::debug!("agent could not sign: {e}"),
        }
    }
    for path in file_offers {
        if !path.exists() && ep.identity.as_ref() != Some(&path) {
            // OpenSSH skips a missing IdentityFile from the config (it warns); the inventory's
            // own `identity` must exist.
            tracing::debug!("identity file {} does not exist", path.display());
            continue;
        }
        let key = options.keys.load(&path).await?;
        // `KEY-cert.pub` beside the key: the certificate is offered first, as OpenSSH does.
        let mut cert_path = path.as_os_str().to_owned();
        cert_path.push("-cert.pub");
        if let Ok(text) = std::fs::read_to_string(PathBuf::from(&cert_path))
            && let Ok(cert) = Certificate::from_openssh(text.trim())
        {
            tried.push(format!("{} (certificate)", path.display()));
            let result = handle
                .authenticate_openssh_cert(ep.user.clone(), key.clone(), cert)
                .await
                .map_err(protocol)?;
            if result.success() {
                return Ok(format!("{} (certificate)", path.display()));
            }
        }
        tried.push(path.display().to_string());
        let hash = hash_for(key.algorithm());
        let result = handle
            .authenticate_publickey(ep.user.clone(), PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(protocol)?;
        if result.success() {
            return Ok(path.display().to_string());
        }
    }
    Err(ConnectError::AuthRefused {
        login: format!("{}@{}", ep.user, addr),
        tried,
    })
}

/// What one authentication attempt offers.
enum Offer {
    AgentKey(PublicKey, String),
    AgentCert(Box<Certificate>, String),
}

fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let ssh = PathBuf::from(home).join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| ssh.join(name))
        .collect()
}

/// The public half of an identity file, from `PATH.pub` or the unencrypted header of the key.
pub fn public_half(path: &Path) -> Option<PublicKey> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(text) = std::fs::read_to_string(PathBuf::from(pub_path))
        && let Ok(key) = PublicKey::from_openssh(text.trim())
    {
        return Some(key);
    }
    let text = std::fs::read_to_string(path).ok()?;
    PrivateKey::from_openssh(text.trim())
        .ok()
        .map(|k| k.public_key().clone())
}

impl SshSession {
    /// Opens a direct-tcpip channel (what `ssh -L` uses): a TCP connection that the host's
    /// sshd makes to `host:port` on the host's side, as a byte stream. `from` is the local
    /// end that asked for it, for sshd's logs.
    pub async fn forward(
        &self,
        host: &str,
        port: u16,
        from: std::net::SocketAddr,
    ) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + use<>, String>
    {
        let channel = self
            .handle
            .channel_open_direct_tcpip(
                host.to_string(),
                u32::from(port),
                from.ip().to_string(),
                u32::from(from.port()),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(channel.into_stream())
    }

    /// Whether the connection has ended (the host went away, or closed it).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    async fn run(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        seen: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    ) -> Result<ExecOutput, ExecError> {
        let channel_error = |e: russh::Error| ExecError::Channel(e.to_string());
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(channel_error)?;
        channel.exec(true, command).await.map_err(channel_error)?;
        let (mut read, write) = channel.split();

        let writer = async {
            if !stdin.is_empty() {
                write
                    .data_bytes(stdin.to_vec())
                    .await
                    .map_err(channel_error)?;
            }
            write.eof().await.map_err(channel_error)
        };
        // The host's output is bounded: past `max_output` bytes reading stops (and the channel
        // is closed below) before the buffer grows any further.
        let limit = self.max_output;
        let fits = |out: &ExecOutput, more: usize| {
            (out.stdout.len() + out.stderr.len() + more) as u64 <= limit
        };
        let reader = async {
            let mut out = ExecOutput::default();
            let mut too_large = false;
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } if !fits(&out, data.len()) => {
                        too_large = true;
                        break;
                    }
                    ChannelMsg::ExtendedData { data, .. } if !fits(&out, data.len()) => {
                        too_large = true;
                        break;
                    }
                    ChannelMsg::Data { data } => {
                        if let Some(seen) = &seen {
                            let _ = seen.send(data.to_vec());
                        }
                        out.stdout.extend_from_slice(&data)
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.exit_signal = Some(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            (out, too_large)
        };
        let both = async { tokio::join!(writer, reader) };
        match tokio::time::timeout(timeout, both).await {
            Ok((_, (out, true))) => {
                // Closing the channel makes sshd hang up on the command.
                let _ = write.close().await;
                self.stats.record(
                    command.len() + stdin.len(),
                    out.stdout.len() + out.stderr.len(),
                );
                Err(ExecError::OutputTooLarge {
                    host: self.host.clone(),
                    limit,
                })
            }
            Ok((written, (out, false))) => {
                // A command that exits without reading its stdin is not an error.
                if let Err(e) = written
                    && out.exit_status.is_none()
                {
                    return Err(e);
                }
                self.stats.record(
                    command.len() + stdin.len(),
                    out.stdout.len() + out.stderr.len(),
                );
                Ok(out)
            }
            Err(_) => {
                // Closing the channel makes sshd hang up on the command.
                let _ = write.close().await;
                self.stats.record(command.len() + stdin.len(), 0);
                Err(ExecError::Timeout(timeout))
            }
        }
    }
}

impl Session for SshSession {
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
mod kex_tests {
    use super::*;

    #[test]
    fn the_post_quantum_hybrid_is_offered_first_and_x25519_next() {
        let config = client_config();
        let kex = &config.preferred.kex;
        assert_eq!(kex[0], russh::kex::MLKEM768X25519_SHA256);
        assert_eq!(kex[1], russh::kex::CURVE25519);
        // Only the client's strict-kex marker: a server's would be meaningless from us.
        assert!(kex.contains(&russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT));
        assert!(!kex.contains(&russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER));
    }
}
