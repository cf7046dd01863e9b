//! tunnel: `rampart tunnel HOST`, the operator's way to the agent (guide §1: the gateway
//! listens on the host's loopback only and the firewall never opens its port).
//!
//! Owns the local listener (127.0.0.1 only) and the copying of bytes between each local
//! connection and a direct-tcpip channel to the agent's loopback port, over ONE SSH
//! connection made like every other command's (fleet's logins, the inventory's jump host,
//! host keys checked). It prints the local URL on stdout and runs until Ctrl-C or SIGTERM
//! (exit 0) or until the SSH connection ends (exit 1). It runs nothing on the host.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::connector::connect_host;
use crate::exit::Outcome;
use crate::inventory::Host;
use crate::transport::ssh::ConnectOptions;

/// The agent's port on the host: `--agent-port`, else the inventory's `agent_port`, else the
/// port of its `agent_flavor` (OpenClaw's 18789, the guide's starter 18860), as
/// agent-gateway.yaml sets them.
pub fn agent_port(host: &Host, flag: Option<u16>) -> Result<u16, String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let var = |k: &str| {
        host.vars.get(k).and_then(|v| match &v.value {
            serde_json::Value::String(s) => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    if let Some(p) = var("agent_port") {
        return p.parse().map_err(|_| {
            format!(
                "{}: agent_port is {p:?}, not a port number\nhint: pass --agent-port PORT",
                host.name
            )
        });
    }
    Ok(match var("agent_flavor").as_deref() {
        Some("starter") => 18860,
        _ => 18789,
    })
}

/// Forwards `127.0.0.1:local` to the host's `127.0.0.1:remote` until interrupted.
pub async fn run(
    host: Host,
    options: ConnectOptions,
    local: u16,
    remote: u16,
) -> anyhow::Result<Outcome> {
    let connected = connect_host(&host, &options).await.map_err(|e| {
        let hint = e.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default();
        anyhow::anyhow!("{}: {e}{hint}", host.name)
    })?;
    let listener = TcpListener::bind(("127.0.0.1", local)).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on 127.0.0.1:{local}: {e}\nhint: choose another local port with --port (0 picks a free one)"
        )
    })?;
    let bound = listener.local_addr()?;
    let session = Arc::new(connected.session);
    if let Some(note) = &connected.note {
        eprintln!("note: {}: {note}", host.name);
    }
    println!("http://127.0.0.1:{}/", bound.port());
    eprintln!(
        "forwarding 127.0.0.1:{} to {}'s 127.0.0.1:{remote} over SSH as {}; Ctrl-C to stop",
        bound.port(),
        host.name,
        connected.login
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watch.tick() => {
                if session.is_closed() {
                    anyhow::bail!(
                        "{}: the SSH connection ended\nhint: run `rampart tunnel {}` again",
                        host.name, host.name
                    );
                }
            }
            accepted = listener.accept() => {
                let (socket, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        continue;
                    }
                };
                let session = session.clone();
                let name = host.name.clone();
                tokio::spawn(async move { relay(&session, socket, from, remote, &name).await });
            }
        }
    }
    eprintln!("tunnel closed");
    if let Ok(s) = Arc::try_unwrap(session) {
        s.close().await;
    }
    Ok(Outcome::Ok)
}

async fn relay(
    session: &crate::transport::ssh::SshSession,
    mut socket: tokio::net::TcpStream,
    from: SocketAddr,
    remote: u16,
    host: &str,
) {
    let _ = socket.set_nodelay(true);
    match session.forward("127.0.0.1", remote, from).await {
        Ok(mut channel) => {
            let _ = tokio::io::copy_bidirectional(&mut socket, &mut channel).await;
        }
        Err(e) => eprintln!(
            "{host}: cannot reach 127.0.0.1:{remote} on the host: {e}\nhint: is the agent running? `rampart drift` says (agent.down)"
        ),
    }
}
