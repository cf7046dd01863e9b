//! findings: unmanaged drift, from what the scan saw. Each finding has a stable id, a severity
//! and evidence that names what was seen, never a secret's value.

use std::collections::BTreeSet;

use serde_json::Value;

use super::scan::{Listener, Observations, ScanParams, clean};
use super::{Finding, Severity};

/// Listeners on an address other than loopback.
pub fn public_listeners(obs: &Observations) -> impl Iterator<Item = &Listener> {
    obs.listeners.iter().filter(|l| !l.addr.is_loopback())
}

fn listener_evidence(l: &Listener) -> String {
    let state = if l.proto == "tcp" { "LISTEN" } else { "UNCONN" };
    match &l.process {
        Some(p) => format!("{} {state} {} by {p}", l.proto, l.endpoint()),
        None => format!("{} {state} {}", l.proto, l.endpoint()),
    }
}

/// One finding's subject and evidence; the table gives its id, severity and title.
pub type Hit = (String, Vec<String>);

/// What every finding function looks at: the scan and the host's parameters, with the
/// agent's config and live state read once for all of them.
pub struct Seen<'a> {
    pub obs: &'a Observations,
    pub params: &'a ScanParams,
    /// The agent's config as the scan read it (`None`: missing or not JSON).
    pub config: Option<AgentConfig>,
    /// The live look at the agent (`None`: the playbook has no agent).
    pub agent: Option<AgentState>,
}

impl<'a> Seen<'a> {
    pub fn new(obs: &'a Observations, params: &'a ScanParams) -> Self {
        Seen {
            obs,
            params,
            config: AgentConfig::read(obs),
            agent: agent_state(obs, params),
        }
    }
}

/// One kind of finding: its stable id, how bad it is, its sentence for people, and the
/// function that finds each instance (subject and evidence).
pub struct FindingDef {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub find: fn(&Seen) -> Vec<Hit>,
}

const fn def(
    id: &'static str,
    severity: Severity,
    title: &'static str,
    find: fn(&Seen) -> Vec<Hit>,
) -> FindingDef {
    FindingDef {
        id,
        severity,
        title,
        find,
    }
}

use Severity::{Critical, High, Medium};

/// Every kind of unmanaged drift. A new one is one function below and one line here. Two
/// entries share `agent.auth`: the config sets no authentication, or the live gateway takes
/// requests without the token.
#[rustfmt::skip]
pub const FINDINGS: &[FindingDef] = &[
    def("listener.agent_port", Critical, "the agent gateway's port listens on an address other than loopback", agent_port_listeners),
    def("listener.unexpected", High, "a port the inventory does not allow listens on an address other than loopback", unexpected_listeners),
    def("user.uid0", Critical, "an account other than root has uid 0", uid0_users),
    def("sudo.member", High, "an account the inventory does not name may use sudo", sudo_members),
    def("ssh.unknown_key", High, "an authorized SSH key the inventory does not know", unknown_keys),
    def("ssh.malformed_key", Medium, "an authorized_keys line sshd cannot use (junk or damaged key data)", malformed_keys),
    def("scan.file_too_large", Medium, "a file is larger than the scan reads: only its beginning was looked at", truncated_files),
    def("fs.odd_name", Medium, "names with a newline in the agent's folders: the scan does not read them", odd_names),
    def("secret.plaintext", Critical, "a secret-looking string in a file, outside the env file", plaintext_secrets),
    def("secret.readable", High, "a secrets file is readable by its group or by everyone", readable_secrets),
    def("skill.unpinned", Medium, "a skill the inventory does not pin", unpinned_skills),
    def("agent.bind", Critical, "the agent's config binds the gateway off loopback", config_bind),
    def("agent.auth", Critical, "the agent's gateway has no authentication", config_auth),
    def("secret.in_config", High, "the agent's config holds a secret itself, not a ${VAR} reference", config_secrets),
    def("fs.symlink", Critical, "a symbolic link planted where rampart writes as root: steps through it are refused", planted_links),
    def("agent.down", Critical, "the agent gateway is not running, or does not answer", agent_down),
    def("agent.auth", Critical, "the agent's gateway takes requests without the token", agent_open),
    def("agent.token_refused", High, "the agent's gateway refuses the token of its env file", token_refused),
    def("agent.unit_dropin", High, "a drop-in loosens the agent unit's sandbox", unit_dropins),
];

/// Every finding on one host, most severe first.
pub fn findings(obs: &Observations, params: &ScanParams) -> Vec<Finding> {
    let seen = Seen::new(obs, params);
    let mut out: Vec<Finding> = FINDINGS
        .iter()
        .flat_map(|d| {
            (d.find)(&seen)
                .into_iter()
                .map(|(subject, evidence)| Finding {
                    id: d.id.into(),
                    severity: d.severity,
                    subject,
                    title: d.title.into(),
                    evidence,
                })
        })
        .collect();
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
    out
}

/// A listener on the agent's port (tcp) off loopback.
fn agent_port_listeners(s: &Seen) -> Vec<Hit> {
    public_listeners(s.obs)
        .filter(|l| s.params.agent_port == Some(l.port) && l.proto == "tcp")
        .map(|l| {
            (
                format!("{} {}", l.proto, l.endpoint()),
                vec![listener_evidence(l)],
            )
        })
        .collect()
}

/// A listener off loopback on a port the inventory does not allow (the agent's port is
/// `listener.agent_port`'s).
fn unexpected_listeners(s: &Seen) -> Vec<Hit> {
    let p = s.params;
    public_listeners(s.obs)
        .filter(|l| !(p.agent_port == Some(l.port) && l.proto == "tcp"))
        .filter_map(|l| {
            let allowed = match l.proto {
                "tcp" => &p.allowed_tcp,
                _ => &p.allowed_udp,
            };
            (!allowed.contains(&l.port)).then(|| {
                (
                    format!("{} {}", l.proto, l.endpoint()),
                    vec![
                        listener_evidence(l),
                        format!(
                            "allowed {}: {} (listen_allow_{} adds more)",
                            l.proto,
                            join_ports(allowed),
                            l.proto
                        ),
                    ],
                )
            })
        })
        .collect()
}

/// An account other than root with uid 0.
fn uid0_users(s: &Seen) -> Vec<Hit> {
    s.obs
        .users
        .iter()
        .filter(|(name, uid, _, _)| *uid == 0 && name != "root")
        .map(|(name, _, home, shell)| {
            (
                format!("user {name}"),
                vec![format!(
                    "/etc/passwd: {name} uid 0, home {home}, shell {shell}"
                )],
            )
        })
        .collect()
}

/// A member of sudo/wheel/admin that the inventory does not name (root aside).
fn sudo_members(s: &Seen) -> Vec<Hit> {
    let expected = if s.params.sudo_users.is_empty() {
        "nobody".to_string()
    } else {
        s.params.sudo_users.join(", ")
    };
    let mut out = Vec::new();
    for (group, members) in &s.obs.admin_groups {
        for m in members {
            if !s.params.sudo_users.contains(m) && m != "root" {
                out.push((
                    format!("{group}: {m}"),
                    vec![format!(
                        "/etc/group: {m} is in {group}; expected: {expected} (sudo_allow adds more)"
                    )],
                ));
            }
        }
    }
    out
}

/// An authorized key whose data none of the inventory's keys has (only when it names keys).
fn unknown_keys(s: &Seen) -> Vec<Hit> {
    let Some(known) = &s.params.known_keys else {
        return Vec::new();
    };
    let blobs: BTreeSet<String> = known
        .iter()
        .filter_map(|k| super::scan::authorized_key(k))
        .map(|k| k.blob)
        .collect();
    s.obs
        .keys
        .iter()
        .filter(|k| !blobs.contains(&k.blob))
        .map(|k| {
            (
                format!("{}:{}", k.file, k.line),
                vec![format!(
                    "{} may log in as {} with {} {}{}",
                    k.file,
                    k.user,
                    k.key_type,
                    short_blob(&k.blob),
                    if k.comment.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", k.comment)
                    }
                )],
            )
        })
        .collect()
}

/// An authorized_keys line that is not a key.
fn malformed_keys(s: &Seen) -> Vec<Hit> {
    s.obs
        .malformed_keys
        .iter()
        .map(|k| {
            (
                format!("{}:{}", k.file, k.line),
                vec![format!(
                    "{}:{} ({}): {}; the line starts {:?}",
                    k.file, k.line, k.user, k.problem, k.start
                )],
            )
        })
        .collect()
}

/// A file the scan read only the beginning of.
fn truncated_files(s: &Seen) -> Vec<Hit> {
    s.obs
        .truncated
        .iter()
        .map(|t| {
            (
                t.path.clone(),
                vec![format!(
                    "{} is {} bytes; the scan reads {} bytes of it (for {})",
                    t.path,
                    t.size,
                    super::scan::FILE_LIMIT,
                    t.section
                )],
            )
        })
        .collect()
}

/// Names with a newline in the agent's folders (left out of the secret search).
fn odd_names(s: &Seen) -> Vec<Hit> {
    if s.obs.odd_names == 0 {
        return Vec::new();
    }
    let folders = s.params.agent_folders.join(" ");
    vec![(
        folders.clone(),
        vec![format!(
            "{} file or folder names hold a newline (they could read as other names, so the \
             secret search leaves them out); look at them by hand: \
             find {folders} -name \"*$(printf '\\n')*\"",
            s.obs.odd_names,
        )],
    )]
}

/// A secret-looking string outside the env files: one finding per file, a line per hit.
fn plaintext_secrets(s: &Seen) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    for hit in &s.obs.secret_hits {
        let line = format!("line {}: {}", hit.lines, hit.kind);
        match out.iter_mut().find(|(path, _)| *path == hit.path) {
            Some((_, evidence)) => evidence.push(line),
            None => out.push((hit.path.clone(), vec![line])),
        }
    }
    out
}

/// A secrets file its group or everyone may read (each path once).
fn readable_secrets(s: &Seen) -> Vec<Hit> {
    let mut seen = BTreeSet::new();
    s.obs
        .loose
        .iter()
        .chain(&s.obs.modes)
        .filter(|m| m.mode & 0o044 != 0 && seen.insert(m.path.clone()))
        .map(|m| (m.path.clone(), vec![m.shown()]))
        .collect()
}

/// An installed skill the inventory does not pin.
fn unpinned_skills(s: &Seen) -> Vec<Hit> {
    let pinned = if s.params.pinned_skills.is_empty() {
        "none".to_string()
    } else {
        s.params.pinned_skills.join(", ")
    };
    let mut out = Vec::new();
    for (folder, entries) in &s.obs.skills {
        for e in entries {
            if !s.params.pinned_skills.contains(e) {
                out.push((
                    format!("{folder}/{e}"),
                    vec![format!("{folder}/{e}; pinned: {pinned}")],
                ));
            }
        }
    }
    out
}

/// The config binds the gateway off loopback.
fn config_bind(s: &Seen) -> Vec<Hit> {
    match &s.config {
        Some(cfg) if cfg.loopback == Some(false) => vec![(
            cfg.path.clone(),
            vec![format!("{}: {}", cfg.path, cfg.bind)],
        )],
        _ => Vec::new(),
    }
}

/// The config sets no authentication for the gateway.
fn config_auth(s: &Seen) -> Vec<Hit> {
    match &s.config {
        Some(cfg) => match &cfg.auth {
            Auth::Missing(why) => vec![(cfg.path.clone(), vec![format!("{}: {why}", cfg.path)])],
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// A secret written into the config, not a `${VAR}` reference (never its value).
fn config_secrets(s: &Seen) -> Vec<Hit> {
    let Some(cfg) = &s.config else {
        return Vec::new();
    };
    cfg.literal_secrets
        .iter()
        .map(|field| {
            (
                format!("{} {field}", cfg.path),
                vec![format!("{}: {field} is a literal value", cfg.path)],
            )
        })
        .collect()
}

/// A symbolic link on the way to a path a step writes as root (each link once).
fn planted_links(s: &Seen) -> Vec<Hit> {
    use crate::untrusted::escape_name;
    let mut out: Vec<Hit> = Vec::new();
    for l in &s.obs.planted_links {
        let subject = escape_name(&l.link).into_owned();
        if out.iter().any(|(seen, _)| *seen == subject) {
            continue;
        }
        out.push((
            subject,
            vec![
                format!(
                    "{} -> {} (on the way to {}, which a step writes)",
                    escape_name(&l.link),
                    escape_name(&l.target),
                    escape_name(&l.path)
                ),
                escape_name(&l.why).into_owned(),
            ],
        ));
    }
    out
}

/// The live look found the gateway not running, not listening or not answering.
fn agent_down(s: &Seen) -> Vec<Hit> {
    match &s.agent {
        Some(a) if !a.down.is_empty() => {
            let mut evidence = vec![format!("down: {}", a.down.join("; "))];
            evidence.extend(a.evidence.iter().cloned());
            vec![(a.unit.clone(), evidence)]
        }
        _ => Vec::new(),
    }
}

/// The live gateway took a request without the token.
fn agent_open(s: &Seen) -> Vec<Hit> {
    match &s.agent {
        Some(a) if matches!(a.auth, AuthProbe::Open(_)) => vec![(
            format!("http 127.0.0.1:{}", a.port),
            vec![a.auth.evidence(a.port)],
        )],
        _ => Vec::new(),
    }
}

/// The live gateway refused the token of its env file.
fn token_refused(s: &Seen) -> Vec<Hit> {
    match &s.agent {
        Some(a) if matches!(a.auth, AuthProbe::TokenRefused { .. }) => vec![(
            format!("http 127.0.0.1:{}", a.port),
            vec![a.auth.evidence(a.port)],
        )],
        _ => Vec::new(),
    }
}

/// Whether an HTTP answer shows the request got past the gateway's authentication.
fn accepted(status: &str) -> bool {
    status.len() == 3
        && status.chars().all(|c| c.is_ascii_digit())
        && !["401", "403"].contains(&status)
}

/// What the live look at the agent saw: is it running, not restarting, listening where it
/// should, answering `/health`; and does it refuse a request without the token and take one
/// with it. `None` when the playbook has no agent.
pub fn agent_state(obs: &Observations, params: &ScanParams) -> Option<AgentState> {
    let unit = params.agent_service.clone()?;
    let port = params.agent_port?;
    let mut look = Look::default();
    let state = unit_state(obs, &unit, &mut look);
    look.evidence.push(state);
    listening(obs, &unit, port, &mut look);
    let (health, auth) = live_http(obs, params, port, &mut look);
    if !look.down.is_empty() && !obs.agent_journal.is_empty() {
        look.evidence
            .push(format!("journalctl -u {unit}, last lines:"));
        look.evidence
            .extend(obs.agent_journal.iter().map(|l| format!("  {l}")));
    }
    Some(AgentState {
        unit,
        port,
        down: look.down,
        evidence: look.evidence,
        health,
        auth,
    })
}

/// Why the agent is down, and what was seen, as the live look goes along.
#[derive(Default)]
struct Look {
    down: Vec<String>,
    evidence: Vec<String>,
}

/// A `systemctl show` property of the agent's unit; empty when not shown.
fn svc<'a>(obs: &'a Observations, key: &str) -> &'a str {
    obs.service.get(key).map(String::as_str).unwrap_or("")
}

/// The unit: installed, running, not crash-looping; its state line for the evidence.
fn unit_state(obs: &Observations, unit: &str, look: &mut Look) -> String {
    let svc = |k: &str| svc(obs, k);
    let (load, active, sub) = (svc("LoadState"), svc("ActiveState"), svc("SubState"));
    let restarts: u64 = svc("NRestarts").parse().unwrap_or(0);
    let age = match (
        svc("Uptime").parse::<f64>(),
        svc("ExecMainStartTimestampMonotonic").parse::<f64>(),
    ) {
        (Ok(up), Ok(start)) if start > 0.0 => Some((up - start / 1e6).max(0.0)),
        _ => None,
    };
    let mut state = format!("{unit}: {active} ({sub})");
    if load != "loaded" {
        state = format!("{unit}: LoadState={load}");
        look.down.push("the unit is not installed".to_string());
    } else if restarts > 0 && (sub == "auto-restart" || active == "failed") {
        look.down.push(format!(
            "it is crash-looping: {active} ({sub}), restarted {restarts} times by systemd"
        ));
    } else if active != "active" || sub != "running" {
        look.down
            .push(format!("the unit is {active} ({sub}), not running"));
    }
    // systemd does not reset NRestarts on every manual restart: a count alone, with the
    // gateway up and answering, is history, not a crash loop.
    if restarts > 0 {
        state.push_str(&format!(", restarted {restarts} times by systemd"));
    }
    if let Some(a) = age
        && active == "active"
    {
        state.push_str(&format!(", main process up {} s", a as u64));
    }
    match (svc("ExecMainCode"), svc("ExecMainStatus")) {
        (_, "" | "0") => {}
        (code, status) => state.push_str(&format!(
            ", last exit: {} {status}",
            match code {
                "1" => "status",
                "2" => "killed by signal",
                "3" => "dumped core, signal",
                _ => "code",
            }
        )),
    }
    state
}

/// The agent's port: listened on, on loopback, by a process of the unit.
fn listening(obs: &Observations, unit: &str, port: u16, look: &mut Look) {
    let on_port: Vec<&super::scan::Listener> = obs
        .listeners
        .iter()
        .filter(|l| l.proto == "tcp" && l.port == port)
        .collect();
    // 0.0.0.0 and :: take loopback too (off loopback they are listener.agent_port's finding).
    let loopback = on_port
        .iter()
        .any(|l| l.addr.is_loopback() || l.addr.is_unspecified());
    // The listeners were read at the start of the scan; a gateway that was still starting
    // then and answered /health after the wait does listen.
    let answered = obs.agent_http.get("health").is_some_and(|h| h == "200");
    if on_port.is_empty() && !answered {
        look.down.push(format!("nothing listens on port {port}"));
        look.evidence
            .push(format!("nothing listens on tcp port {port}"));
    } else if on_port.is_empty() {
        look.evidence.push(format!(
            "tcp port {port}: not listening yet when the scan began"
        ));
    } else {
        for l in &on_port {
            look.evidence.push(listener_evidence(l));
        }
        if !loopback {
            look.down
                .push(format!("nothing listens on loopback port {port}"));
        }
    }
    let cgroup = svc(obs, "ControlGroup");
    if let Some((pid, held_by)) = &obs.agent_listener
        && !cgroup.is_empty()
        && !held_by.is_empty()
        && !held_by.starts_with(cgroup)
    {
        look.down
            .push(format!("port {port} is held by a process outside the unit"));
        look.evidence.push(format!(
            "port {port} is held by pid {pid} in {held_by}, not in {unit} ({cgroup})"
        ));
    }
}

/// `GET /health` and the two requests to `/tools/invoke` (without the token, with it), as
/// the scan's bash made them: the answer to /health and what the gateway did with the token.
fn live_http(
    obs: &Observations,
    params: &ScanParams,
    port: u16,
    look: &mut Look,
) -> (Option<String>, AuthProbe) {
    let http = |k: &str| obs.agent_http.get(k).map(String::as_str);
    let mut health = None;
    let mut auth = AuthProbe::Unknown("the live check did not run".to_string());
    match http("client") {
        Some("bash") => {
            let h = http("health").unwrap_or("no answer");
            if h != "200" {
                look.down.push(format!("GET /health: {h}"));
            }
            let waited = http("waited").unwrap_or("0");
            look.evidence.push(if waited == "0" {
                format!("GET http://127.0.0.1:{port}/health: {h}")
            } else {
                format!(
                    "GET http://127.0.0.1:{port}/health: {h} (after {waited} s: it was starting)"
                )
            });
            health = Some(h.to_string());
            let noauth = http("noauth").unwrap_or("no answer").to_string();
            auth = match (http("token"), http("auth")) {
                _ if h != "200" => AuthProbe::Unknown(format!(
                    "the gateway does not answer (GET /health: {h}): its authentication cannot be tried"
                )),
                _ if accepted(&noauth) => AuthProbe::Open(noauth),
                (Some("found"), Some(with)) if accepted(with) => AuthProbe::Enforced {
                    without: noauth,
                    with: with.to_string(),
                },
                // No HTTP answer (a busy gateway, a dropped connection) says nothing about the
                // token: only a 401 or 403 is a refusal.
                (Some("found"), Some(with)) if !["401", "403"].contains(&with) => {
                    AuthProbe::Unknown(format!(
                        "the gateway gave no HTTP answer to a request with the token ({with}): \
                         whether it takes the token is unknown"
                    ))
                }
                (Some("found"), Some(with)) => AuthProbe::TokenRefused {
                    without: noauth,
                    with: with.to_string(),
                },
                _ => AuthProbe::Unknown(format!(
                    "{} is set in none of {}: the token cannot be tried (without it: {noauth})",
                    params.agent_token_var,
                    params.secret_files.join(", ")
                )),
            };
        }
        Some(_) => look
            .evidence
            .push("no bash on the host: GET /health and the token cannot be tried".to_string()),
        None => {}
    }
    (health, auth)
}

/// The agent as the live look saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    pub unit: String,
    pub port: u16,
    /// Why it is not up; empty when it is.
    pub down: Vec<String>,
    /// What was seen, the journal's last lines when it is down.
    pub evidence: Vec<String>,
    /// `GET /health`'s answer, when it was tried.
    pub health: Option<String>,
    pub auth: AuthProbe,
}

/// What the gateway did with a request without the token and one with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthProbe {
    /// Without: refused (this status); with: accepted (this status).
    Enforced {
        without: String,
        with: String,
    },
    /// A request without the token was accepted: this status.
    Open(String),
    /// The token rampart's env file holds is refused too.
    TokenRefused {
        without: String,
        with: String,
    },
    Unknown(String),
}

impl AuthProbe {
    pub fn evidence(&self, port: u16) -> String {
        let url = format!("POST http://127.0.0.1:{port}/tools/invoke");
        match self {
            AuthProbe::Enforced { without, with } => {
                format!("{url}: {without} without the token, {with} with it")
            }
            AuthProbe::Open(status) => {
                format!("{url} without the token: {status}, accepted")
            }
            AuthProbe::TokenRefused { without, with } => format!(
                "{url}: {without} without the token, {with} with the env file's token: it is refused"
            ),
            AuthProbe::Unknown(why) => why.clone(),
        }
    }
}

/// Why a drop-in's `key=value` loosens the agent's sandbox, if it does. The managed unit
/// (templates/agent/gateway.service.j2) sets every one of these to its strict value.
pub fn weakens(key: &str, value: &str, agent_user: Option<&str>) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    let off = matches!(v.as_str(), "no" | "false" | "off" | "0" | "");
    let why = |s: &str| Some(format!("{key}={value}: {s}"));
    match key {
        "User" | "Group" if matches!(v.as_str(), "" | "root" | "0") => {
            why("the agent would run as root")
        }
        "User" | "Group" if Some(value.trim()) != agent_user => {
            why("another account than the agent's")
        }
        "SupplementaryGroups" if !v.is_empty() => why("adds groups"),
        "ProtectSystem" if v != "strict" => why("the system is writable beyond strict"),
        "ProtectHome" if off => why("home folders are writable"),
        "ReadWritePaths" if !v.is_empty() => why("adds writable paths"),
        "CapabilityBoundingSet" | "AmbientCapabilities" if !v.is_empty() => {
            why("grants capabilities")
        }
        "RestrictAddressFamilies" if v.is_empty() || v.starts_with('~') => {
            why("any address family")
        }
        "RestrictAddressFamilies"
            if v.split_whitespace()
                .any(|f| !["af_inet", "af_inet6", "af_unix"].contains(&f)) =>
        {
            why("more address families")
        }
        "SystemCallFilter" | "SystemCallArchitectures" if v.is_empty() => {
            why("the system call filter is reset")
        }
        "UMask" if v != "0077" && v != "077" => why("a looser umask"),
        "NoNewPrivileges"
        | "PrivateTmp"
        | "PrivateDevices"
        | "RestrictNamespaces"
        | "RestrictSUIDSGID"
        | "RestrictRealtime"
        | "LockPersonality"
        | "ProtectKernelTunables"
        | "ProtectKernelModules"
        | "ProtectKernelLogs"
        | "ProtectControlGroups"
        | "ProtectClock"
        | "ProtectHostname"
            if off =>
        {
            why("turned off")
        }
        "ExecStart" | "ExecStartPre" | "ExecStartPost" | "Environment" | "EnvironmentFile"
        | "UnsetEnvironment" | "PassEnvironment" => Some(format!(
            "{key}=…: changes what the agent runs or its environment"
        )),
        _ => None,
    }
}

/// A drop-in of the agent's unit that loosens its sandbox.
fn unit_dropins(s: &Seen) -> Vec<Hit> {
    let (obs, params) = (s.obs, s.params);
    let Some(unit) = &params.agent_service else {
        return Vec::new();
    };
    let loaded: Vec<&str> = obs
        .service
        .get("DropInPaths")
        .map(|p| p.split_whitespace().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for d in &obs.dropins {
        let weak: Vec<String> = d
            .settings
            .iter()
            .filter_map(|(k, v)| weakens(k, v, params.agent_user.as_deref()))
            .collect();
        if weak.is_empty() {
            continue;
        }
        let mut evidence: Vec<String> = weak.iter().map(|w| clean(w, 200)).collect();
        let keys: BTreeSet<&str> = d
            .settings
            .iter()
            .filter(|(k, v)| weakens(k, v, params.agent_user.as_deref()).is_some())
            .map(|(k, _)| k.as_str())
            .collect();
        let effective: Vec<String> = keys
            .iter()
            .filter_map(|k| obs.service.get(*k).map(|v| format!("{k}={}", clean(v, 80))))
            .collect();
        if !effective.is_empty() {
            evidence.push(format!(
                "effective now (systemctl show): {}",
                effective.join(", ")
            ));
        }
        evidence.push(if loaded.contains(&d.path.as_str()) {
            format!("{} is loaded by systemd for {unit}", d.path)
        } else {
            format!(
                "{} is not loaded yet: it takes effect at the next daemon-reload",
                d.path
            )
        });
        out.push((d.path.clone(), evidence));
    }
    out
}

/// A key's base64 data shortened for evidence: its first 12 and last 8 characters. Counted
/// in characters: the data comes from the host and may hold any text.
fn short_blob(blob: &str) -> String {
    if blob.chars().count() > 24 {
        format!(
            "{}…{}",
            crate::untrusted::first_chars(blob, 12),
            crate::untrusted::last_chars(blob, 8)
        )
    } else {
        blob.to_string()
    }
}

fn join_ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The gateway's authentication, as the config sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A `${VAR}` reference to an env variable.
    Env(String),
    /// A literal value of this many characters.
    Literal(usize),
    /// None, and why.
    Missing(String),
}

/// What the agent's config says, for findings and checks. Never holds a secret's value.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub path: String,
    /// `gateway.bind is "loopback"`, for evidence.
    pub bind: String,
    pub loopback: Option<bool>,
    pub auth: Auth,
    /// `exec.security` (starter) or `tools.exec.security` (OpenClaw).
    pub exec_security: Option<String>,
    /// Fields holding a literal secret.
    pub literal_secrets: Vec<String>,
}

impl AgentConfig {
    pub fn read(obs: &Observations) -> Option<AgentConfig> {
        let text = obs.config.as_ref()?;
        let path = obs.config_path.clone().unwrap_or_default();
        let json: Value = serde_json::from_str(text).ok()?;
        let gw = &json["gateway"];
        let (bind, loopback) = if let Some(b) = gw["bind"].as_str() {
            let host = gw["customBindHost"].as_str().unwrap_or("");
            let ok = b == "loopback" || (b == "custom" && is_loopback_name(host));
            (format!("gateway.bind is {b:?}"), Some(ok))
        } else if let Some(h) = gw["host"].as_str() {
            (format!("gateway.host is {h:?}"), Some(is_loopback_name(h)))
        } else {
            ("gateway.bind/host not set".to_string(), None)
        };
        let token = |v: &Value| -> Auth {
            match v.as_str() {
                None | Some("") => Auth::Missing("no token".into()),
                Some(s) => match env_reference(s) {
                    Some(var) => Auth::Env(var),
                    None => Auth::Literal(s.chars().count()),
                },
            }
        };
        let (auth, field) = if gw.get("auth").is_some() {
            let mode = gw["auth"]["mode"].as_str().unwrap_or("");
            match mode {
                "token" => (token(&gw["auth"]["token"]), "gateway.auth.token"),
                "password" => (token(&gw["auth"]["password"]), "gateway.auth.password"),
                "" => (
                    Auth::Missing("gateway.auth.mode is not set".into()),
                    "gateway.auth",
                ),
                other => (
                    Auth::Missing(format!("gateway.auth.mode is {other:?}")),
                    "gateway.auth",
                ),
            }
        } else if gw.get("authToken").is_some() {
            (token(&gw["authToken"]), "gateway.authToken")
        } else {
            (
                Auth::Missing("neither gateway.auth nor gateway.authToken is set".into()),
                "gateway",
            )
        };
        let mut literal_secrets = Vec::new();
        if let Auth::Literal(_) = auth {
            literal_secrets.push(field.to_string());
        }
        for key in ["apiKey", "api_key", "token", "password"] {
            collect_literals(&json, key, "", &mut literal_secrets, field);
        }
        let exec_security = json["tools"]["exec"]["security"]
            .as_str()
            .or(json["exec"]["security"].as_str())
            .map(String::from);
        Some(AgentConfig {
            path,
            bind,
            loopback,
            auth,
            exec_security,
            literal_secrets,
        })
    }
}

/// `${NAME}` -> `NAME`.
fn env_reference(s: &str) -> Option<String> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| inner.to_string())
}

fn is_loopback_name(h: &str) -> bool {
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Fields named `key` anywhere in the config with a literal (non-`${VAR}`) string value.
fn collect_literals(v: &Value, key: &str, at: &str, out: &mut Vec<String>, skip: &str) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if k == key
                    && path != skip
                    && let Some(s) = child.as_str()
                    && !s.is_empty()
                    && env_reference(s).is_none()
                    && !out.contains(&path)
                {
                    out.push(path.clone());
                }
                collect_literals(child, key, &path, out, skip);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_literals(child, key, &format!("{at}[{i}]"), out, skip);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::inspect::scan::{AuthorizedKey, DropIn, FileMode, SecretHit};
    use std::collections::BTreeMap;

    /// `systemctl show` of a gateway up for an hour (as the scan's service section reads it).
    pub(crate) fn running_service() -> BTreeMap<String, String> {
        [
            ("LoadState", "loaded"),
            ("ActiveState", "active"),
            ("SubState", "running"),
            ("User", "openclaw"),
            ("ProcessUser", "openclaw"),
            ("NRestarts", "0"),
            ("ExecMainStartTimestampMonotonic", "1000000000"),
            ("Uptime", "4600.5"),
            ("ExecMainCode", "0"),
            ("ExecMainStatus", "0"),
            ("ControlGroup", "/system.slice/openclaw-gateway.service"),
            ("ProtectSystem", "strict"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The live checks of a healthy gateway that enforces its token.
    pub(crate) fn healthy_http() -> BTreeMap<String, String> {
        [
            ("token", "found"),
            ("client", "bash"),
            ("waited", "0"),
            ("health", "200"),
            ("noauth", "401"),
            ("auth", "400"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn params() -> ScanParams {
        let vars = serde_json::json!({
            "agent_user": "openclaw", "agent_port": "18789", "ssh_port": 22,
            "wireguard_port": 51820, "admin_user": "admin",
            "admin_keys": ["ssh-ed25519 AAAAgood admin@laptop"],
            "agent_skills": {"weather": {"version": "1.2.0"}},
        });
        ScanParams::from_vars(vars.as_object().unwrap()).unwrap()
    }

    fn listener(proto: &'static str, addr: &str, port: u16) -> Listener {
        Listener {
            proto,
            addr: addr.parse().unwrap(),
            port,
            process: Some("python3 (pid 9)".into()),
        }
    }

    fn ids(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter()
            .map(|f| (f.id.as_str(), f.subject.as_str()))
            .collect()
    }

    #[test]
    fn evidence_of_a_key_counts_characters_not_bytes() {
        // Byte 12 falls inside 'é': slicing bytes there panicked and lost every host's report.
        let blob = "AAAAAAAAAAAé€€€€€€€€€€€€€€€€€€";
        assert_eq!(short_blob(blob), "AAAAAAAAAAAé…€€€€€€€€");
        let obs = Observations {
            keys: vec![AuthorizedKey {
                user: "root".into(),
                file: "/root/.ssh/authorized_keys".into(),
                line: 1,
                key_type: "ssh-ed25519".into(),
                blob: blob.into(),
                comment: String::new(),
            }],
            ..Observations::default()
        };
        // (The observations hold no agent: that it is down is another finding.)
        let f: Vec<Finding> = findings(&obs, &params())
            .into_iter()
            .filter(|f| f.id.starts_with("ssh."))
            .collect();
        assert_eq!(f[0].id, "ssh.unknown_key");
        assert!(f[0].evidence[0].contains("AAAAAAAAAAAé…"), "{f:?}");
    }

    #[test]
    fn a_hardened_host_has_no_findings() {
        assert_eq!(findings(&clean(), &params()), vec![]);
    }

    /// What the scan sees on a host without drift (the agent up and answering).
    fn clean() -> Observations {
        Observations {
            listeners: vec![
                listener("tcp", "0.0.0.0", 22),
                listener("tcp", "::", 22),
                listener("udp", "0.0.0.0", 51820),
                listener("tcp", "127.0.0.1", 18789),
            ],
            users: vec![("root".into(), 0, "/root".into(), "/bin/bash".into())],
            admin_groups: [("sudo".to_string(), vec!["admin".to_string()])].into(),
            keys: vec![AuthorizedKey {
                user: "admin".into(),
                file: "/home/admin/.ssh/authorized_keys".into(),
                line: 1,
                key_type: "ssh-ed25519".into(),
                blob: "AAAAgood".into(),
                comment: String::new(),
            }],
            config: Some(
                r#"{"gateway": {"bind": "loopback", "auth": {"mode": "token", "token": "${AGENT_AUTH_TOKEN}"}}}"#
                    .into(),
            ),
            config_path: Some("/home/openclaw/.openclaw/openclaw.json".into()),
            service: running_service(),
            agent_http: healthy_http(),
            skills: [(
                "/home/openclaw/.openclaw/skills".to_string(),
                vec!["weather".to_string()],
            )]
            .into(),
            modes: vec![FileMode {
                mode: 0o600,
                owner: "root".into(),
                group: "root".into(),
                path: "/etc/openclaw/agent.env".into(),
            }],
            ..Observations::default()
        }
    }

    #[test]
    fn each_kind_of_unmanaged_drift_is_named_with_evidence() {
        let obs = Observations {
            listeners: vec![
                listener("tcp", "0.0.0.0", 18789),
                listener("tcp", "10.0.0.5", 8080),
                listener("udp", "0.0.0.0", 5353),
            ],
            users: vec![
                ("root".into(), 0, "/root".into(), "/bin/bash".into()),
                ("toor".into(), 0, "/root".into(), "/bin/sh".into()),
            ],
            admin_groups: [("sudo".to_string(), vec!["admin".into(), "eve".into()])].into(),
            keys: vec![AuthorizedKey {
                user: "root".into(),
                file: "/root/.ssh/authorized_keys".into(),
                line: 2,
                key_type: "ssh-rsa".into(),
                blob: "AAAAB3NzaC1yc2EAAAADAQABAAABAQDevil".into(),
                comment: "eve".into(),
            }],
            secret_hits: vec![SecretHit {
                kind: "Anthropic API key".into(),
                lines: "1".into(),
                path: "/home/openclaw/.openclaw/workspace/key.txt".into(),
            }],
            loose: vec![FileMode {
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                path: "/etc/openclaw/agent.env".into(),
            }],
            skills: [(
                "/home/openclaw/.openclaw/skills".to_string(),
                vec!["weather".to_string(), "crypto-wallet".to_string()],
            )]
            .into(),
            config: Some(
                r#"{"gateway": {"bind": "lan", "auth": {"mode": "none"}}, "llm": {"apiKey": "sk-ant-literal"}}"#
                    .into(),
            ),
            config_path: Some("/home/openclaw/.openclaw/openclaw.json".into()),
            ..Observations::default()
        };
        let f = findings(&obs, &params());
        let cfg = "/home/openclaw/.openclaw/openclaw.json";
        let llm = format!("{cfg} llm.apiKey");
        let mut got = ids(&f);
        got.sort();
        let mut want = vec![
            ("agent.auth", cfg),
            ("agent.bind", cfg),
            ("agent.down", "openclaw-gateway.service"),
            ("listener.agent_port", "tcp 0.0.0.0:18789"),
            ("listener.unexpected", "tcp 10.0.0.5:8080"),
            ("listener.unexpected", "udp 0.0.0.0:5353"),
            ("secret.in_config", llm.as_str()),
            (
                "secret.plaintext",
                "/home/openclaw/.openclaw/workspace/key.txt",
            ),
            ("secret.readable", "/etc/openclaw/agent.env"),
            (
                "skill.unpinned",
                "/home/openclaw/.openclaw/skills/crypto-wallet",
            ),
            ("ssh.unknown_key", "/root/.ssh/authorized_keys:2"),
            ("sudo.member", "sudo: eve"),
            ("user.uid0", "user toor"),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(f[0].severity, Severity::Critical);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("sk-ant-literal"), "{text}");
        assert!(text.contains("python3 (pid 9)"), "{text}");
    }

    fn healthy() -> Observations {
        Observations {
            listeners: vec![listener("tcp", "127.0.0.1", 18789)],
            service: running_service(),
            agent_http: healthy_http(),
            agent_journal: vec!["systemd[1]: Started openclaw-gateway.service".into()],
            ..Observations::default()
        }
    }

    fn agent_ids(obs: &Observations) -> Vec<String> {
        findings(obs, &params())
            .into_iter()
            .filter(|f| f.id.starts_with("agent."))
            .map(|f| f.id)
            .collect()
    }

    #[test]
    fn a_healthy_gateway_that_enforces_its_token_is_no_finding() {
        assert_eq!(agent_ids(&healthy()), Vec::<String>::new());
        let a = agent_state(&healthy(), &params()).unwrap();
        assert_eq!(
            a.auth.evidence(18789),
            "POST http://127.0.0.1:18789/tools/invoke: 401 without the token, 400 with it"
        );
    }

    #[test]
    fn a_stopped_gateway_is_down_with_the_journal_as_evidence() {
        let mut obs = healthy();
        obs.service.insert("ActiveState".into(), "inactive".into());
        obs.service.insert("SubState".into(), "dead".into());
        obs.listeners.clear();
        obs.agent_http.insert("health".into(), "refused".into());
        let f = findings(&obs, &params());
        assert_eq!(f[0].id, "agent.down");
        assert_eq!(
            f[0].evidence[0],
            "down: the unit is inactive (dead), not running; nothing listens on port 18789; GET /health: refused"
        );
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.contains("Started openclaw-gateway"))
        );
        // Its authentication cannot be tried: unknown, never a pass.
        assert!(matches!(
            agent_state(&obs, &params()).unwrap().auth,
            AuthProbe::Unknown(_)
        ));
    }

    #[test]
    fn a_gateway_that_systemd_keeps_restarting_is_crash_looping() {
        let mut obs = healthy();
        obs.service.insert("NRestarts".into(), "4".into());
        obs.service
            .insert("ActiveState".into(), "activating".into());
        obs.service.insert("SubState".into(), "auto-restart".into());
        obs.service.insert("ExecMainCode".into(), "1".into());
        obs.service.insert("ExecMainStatus".into(), "1".into());
        obs.listeners.clear();
        obs.agent_http.insert("health".into(), "refused".into());
        assert_eq!(agent_ids(&obs), vec!["agent.down"]);
        let f = findings(&obs, &params());
        assert!(
            f[0].evidence[0].starts_with(
                "down: it is crash-looping: activating (auto-restart), restarted 4 times by systemd"
            ),
            "{f:?}"
        );
        assert!(f[0].evidence[1].ends_with("last exit: status 1"), "{f:?}");
        // Restarted before, up and answering now: up (the count stays in the evidence).
        let mut obs = healthy();
        obs.service.insert("NRestarts".into(), "4".into());
        assert_eq!(agent_ids(&obs), Vec::<String>::new());
        let a = agent_state(&obs, &params()).unwrap();
        assert!(a.evidence[0].contains("restarted 4 times"), "{a:?}");
    }

    #[test]
    fn a_gateway_without_auth_or_refusing_its_token_is_named() {
        let mut obs = healthy();
        obs.agent_http.insert("noauth".into(), "200".into());
        assert_eq!(agent_ids(&obs), vec!["agent.auth"]);
        let mut obs = healthy();
        obs.agent_http.insert("auth".into(), "401".into());
        assert_eq!(agent_ids(&obs), vec!["agent.token_refused"]);
        // A busy gateway that gives no answer in time has not refused the token (seen in CI:
        // the real OpenClaw under load): unknown, no claim.
        for silence in ["no-answer", "timeout", "refused", "not-http"] {
            let mut obs = healthy();
            obs.agent_http.insert("auth".into(), silence.into());
            assert_eq!(agent_ids(&obs), Vec::<String>::new(), "{silence}");
            assert!(matches!(
                agent_state(&obs, &params()).unwrap().auth,
                AuthProbe::Unknown(_)
            ));
        }
        // No token in the env files: it cannot be tried, so no claim either way.
        let mut obs = healthy();
        obs.agent_http.insert("token".into(), "none".into());
        obs.agent_http.remove("auth");
        assert_eq!(agent_ids(&obs), Vec::<String>::new());
        assert!(matches!(
            agent_state(&obs, &params()).unwrap().auth,
            AuthProbe::Unknown(_)
        ));
    }

    #[test]
    fn a_port_held_outside_the_unit_is_not_the_agent() {
        let mut obs = healthy();
        obs.agent_listener = Some((4242, "/user.slice/user-1001.slice/session-3.scope".into()));
        let f = findings(&obs, &params());
        assert_eq!(f[0].id, "agent.down");
        assert!(
            f[0].evidence.iter().any(|e| e.contains("held by pid 4242")),
            "{f:?}"
        );
        obs.agent_listener = Some((4242, "/system.slice/openclaw-gateway.service".into()));
        assert_eq!(agent_ids(&obs), Vec::<String>::new());
    }

    #[test]
    fn drop_ins_that_loosen_the_sandbox_are_named_others_are_not() {
        let mut obs = healthy();
        let dropin = |path: &str, settings: &[(&str, &str)]| DropIn {
            path: path.into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        obs.dropins = vec![
            dropin(
                "/etc/systemd/system/openclaw-gateway.service.d/override.conf",
                &[("ProtectSystem", "no"), ("Nice", "5")],
            ),
            dropin(
                "/etc/systemd/system/openclaw-gateway.service.d/limits.conf",
                &[
                    ("MemoryMax", "1G"),
                    ("User", "openclaw"),
                    ("PrivateTmp", "yes"),
                ],
            ),
            dropin(
                "/run/systemd/system/openclaw-gateway.service.d/x.conf",
                &[
                    ("User", "root"),
                    ("Environment", "NODE_OPTIONS=--require /tmp/x.js"),
                ],
            ),
        ];
        obs.service.insert(
            "DropInPaths".into(),
            "/etc/systemd/system/openclaw-gateway.service.d/override.conf".into(),
        );
        obs.service.insert("ProtectSystem".into(), "no".into());
        let f: Vec<Finding> = findings(&obs, &params())
            .into_iter()
            .filter(|f| f.id == "agent.unit_dropin")
            .collect();
        let subjects: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec![
                "/etc/systemd/system/openclaw-gateway.service.d/override.conf",
                "/run/systemd/system/openclaw-gateway.service.d/x.conf"
            ]
        );
        assert_eq!(
            f[0].evidence,
            vec![
                "ProtectSystem=no: the system is writable beyond strict",
                "effective now (systemctl show): ProtectSystem=no",
                "/etc/systemd/system/openclaw-gateway.service.d/override.conf is loaded by systemd for openclaw-gateway.service",
            ]
        );
        // Values of environment settings may be secrets: never shown.
        let text = format!("{:?}", f[1]);
        assert!(
            text.contains("User=root: the agent would run as root"),
            "{text}"
        );
        assert!(!text.contains("NODE_OPTIONS"), "{text}");
        assert!(text.contains("not loaded yet"), "{text}");
    }
    #[test]
    fn a_planted_link_is_a_critical_finding_whatever_its_name_holds() {
        use crate::inspect::scan::{PlantedLink, parse};
        use base64::Engine as _;
        let b = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let text = format!(
            "@@m fslink {} {} {} {}\n@@m fslink {} {} {} {}\n",
            b("/home/openclaw/.openclaw/workspace/SOUL.md"),
            b("/home/openclaw/.openclaw/workspace"),
            b("/etc"),
            b("refusing to follow /home/openclaw/.openclaw/workspace: ..."),
            b("/home/openclaw/.openclaw/x\n/y"),
            b("/home/openclaw/.openclaw/x\n"),
            b("/etc/systemd/system"),
            b("why"),
        );
        let obs = parse("@@m", &text);
        assert_eq!(
            obs.planted_links[0],
            PlantedLink {
                path: "/home/openclaw/.openclaw/workspace/SOUL.md".into(),
                link: "/home/openclaw/.openclaw/workspace".into(),
                target: "/etc".into(),
                why: "refusing to follow /home/openclaw/.openclaw/workspace: ...".into(),
            }
        );
        let f: Vec<Finding> = findings(&obs, &params())
            .into_iter()
            .filter(|f| f.id == "fs.symlink")
            .collect();
        assert_eq!(
            ids(&f),
            vec![
                ("fs.symlink", "/home/openclaw/.openclaw/workspace"),
                ("fs.symlink", "/home/openclaw/.openclaw/x\\n"),
            ]
        );
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(
            f[1].evidence[0],
            "/home/openclaw/.openclaw/x\\n -> /etc/systemd/system (on the way to \
             /home/openclaw/.openclaw/x\\n/y, which a step writes)"
        );
    }

    /// One case of one kind of finding: the clean host changed by `given`, and every
    /// finding of that id, as (subject, first line of evidence), exactly.
    struct Case {
        id: &'static str,
        given: fn(&mut Observations, &mut ScanParams),
        want: &'static [(&'static str, &'static str)],
    }

    fn case(
        id: &'static str,
        given: fn(&mut Observations, &mut ScanParams),
        want: &'static [(&'static str, &'static str)],
    ) -> Case {
        Case { id, given, want }
    }

    fn key(user: &str, line: usize, blob: &str, comment: &str) -> AuthorizedKey {
        AuthorizedKey {
            user: user.into(),
            file: format!("/home/{user}/.ssh/authorized_keys"),
            line,
            key_type: "ssh-ed25519".into(),
            blob: blob.into(),
            comment: comment.into(),
        }
    }

    fn mode(mode: u32, path: &str) -> FileMode {
        FileMode {
            mode,
            owner: "root".into(),
            group: "root".into(),
            path: path.into(),
        }
    }

    fn cfg(o: &mut Observations, json: &str) {
        o.config = Some(json.into());
    }

    /// Every finding function's cases, each as data: one that finds, and near misses that
    /// must not.
    fn cases() -> Vec<Case> {
        vec![
            // listener.agent_port
            case(
                "listener.agent_port",
                |o, _| o.listeners[3] = listener("tcp", "0.0.0.0", 18789),
                &[(
                    "tcp 0.0.0.0:18789",
                    "tcp LISTEN 0.0.0.0:18789 by python3 (pid 9)",
                )],
            ),
            case(
                "listener.agent_port",
                |o, _| o.listeners.push(listener("tcp", "fe80::1", 18789)),
                &[(
                    "tcp [fe80::1]:18789",
                    "tcp LISTEN [fe80::1]:18789 by python3 (pid 9)",
                )],
            ),
            // The same port over udp is not the gateway (it is unexpected instead).
            case(
                "listener.agent_port",
                |o, _| o.listeners.push(listener("udp", "0.0.0.0", 18789)),
                &[],
            ),
            case(
                "listener.agent_port",
                |o, _| o.listeners.push(listener("tcp", "::1", 18789)),
                &[],
            ),
            // listener.unexpected
            case(
                "listener.unexpected",
                |o, _| o.listeners.push(listener("tcp", "10.0.0.5", 8080)),
                &[(
                    "tcp 10.0.0.5:8080",
                    "tcp LISTEN 10.0.0.5:8080 by python3 (pid 9)",
                )],
            ),
            case(
                "listener.unexpected",
                |o, _| o.listeners.push(listener("udp", "0.0.0.0", 18789)),
                &[(
                    "udp 0.0.0.0:18789",
                    "udp UNCONN 0.0.0.0:18789 by python3 (pid 9)",
                )],
            ),
            case(
                "listener.unexpected",
                |o, p| {
                    o.listeners.push(listener("tcp", "0.0.0.0", 8080));
                    p.allowed_tcp.push(8080);
                },
                &[],
            ),
            case(
                "listener.unexpected",
                |o, _| o.listeners.push(listener("tcp", "127.0.0.53", 53)),
                &[],
            ),
            case(
                "listener.unexpected",
                |o, _| o.listeners[3] = listener("tcp", "0.0.0.0", 18789),
                &[],
            ),
            // user.uid0
            case(
                "user.uid0",
                |o, _| {
                    o.users
                        .push(("toor".into(), 0, "/root".into(), "/bin/sh".into()))
                },
                &[(
                    "user toor",
                    "/etc/passwd: toor uid 0, home /root, shell /bin/sh",
                )],
            ),
            case(
                "user.uid0",
                |o, _| {
                    o.users
                        .push(("daemon".into(), 1, "/".into(), "/bin/false".into()))
                },
                &[],
            ),
            // sudo.member
            case(
                "sudo.member",
                |o, _| {
                    o.admin_groups
                        .insert("wheel".into(), vec!["eve".into(), "root".into()]);
                },
                &[(
                    "wheel: eve",
                    "/etc/group: eve is in wheel; expected: admin (sudo_allow adds more)",
                )],
            ),
            case(
                "sudo.member",
                |o, p| {
                    p.sudo_users.clear();
                    o.admin_groups.insert("sudo".into(), vec!["admin".into()]);
                },
                &[(
                    "sudo: admin",
                    "/etc/group: admin is in sudo; expected: nobody (sudo_allow adds more)",
                )],
            ),
            case(
                "sudo.member",
                |o, _| {
                    o.admin_groups.insert("admin".into(), vec!["root".into()]);
                },
                &[],
            ),
            // ssh.unknown_key
            case(
                "ssh.unknown_key",
                |o, _| {
                    o.keys
                        .push(key("root", 2, "AAAAB3NzaC1yc2EAAAADAQABAAABAQDevil", "eve"))
                },
                &[(
                    "/home/root/.ssh/authorized_keys:2",
                    "/home/root/.ssh/authorized_keys may log in as root with ssh-ed25519 AAAAB3NzaC1y…BAQDevil (eve)",
                )],
            ),
            case(
                "ssh.unknown_key",
                |o, _| o.keys.push(key("root", 1, "AAAAshort", "")),
                &[(
                    "/home/root/.ssh/authorized_keys:1",
                    "/home/root/.ssh/authorized_keys may log in as root with ssh-ed25519 AAAAshort",
                )],
            ),
            // A known key in another account's file, and an inventory that names no keys.
            case(
                "ssh.unknown_key",
                |o, _| o.keys.push(key("root", 1, "AAAAgood", "")),
                &[],
            ),
            case(
                "ssh.unknown_key",
                |o, p| {
                    o.keys.push(key("root", 1, "AAAAother", ""));
                    p.known_keys = None;
                },
                &[],
            ),
            // ssh.malformed_key
            case(
                "ssh.malformed_key",
                |o, _| {
                    o.malformed_keys.push(crate::inspect::scan::MalformedKey {
                        user: "root".into(),
                        file: "/root/.ssh/authorized_keys".into(),
                        line: 3,
                        problem: "the key data is not base64".into(),
                        start: "ssh-ed25519 !!".into(),
                    })
                },
                &[(
                    "/root/.ssh/authorized_keys:3",
                    "/root/.ssh/authorized_keys:3 (root): the key data is not base64; the line starts \"ssh-ed25519 !!\"",
                )],
            ),
            // scan.file_too_large
            case(
                "scan.file_too_large",
                |o, _| {
                    o.truncated.push(crate::inspect::scan::Truncated {
                        section: "config".into(),
                        size: 5_000_000,
                        path: "/home/openclaw/.openclaw/openclaw.json".into(),
                    })
                },
                &[(
                    "/home/openclaw/.openclaw/openclaw.json",
                    "/home/openclaw/.openclaw/openclaw.json is 5000000 bytes; the scan reads 1048576 bytes of it (for config)",
                )],
            ),
            // fs.odd_name
            case(
                "fs.odd_name",
                |o, _| o.odd_names = 2,
                &[(
                    "/home/openclaw /etc/openclaw",
                    "2 file or folder names hold a newline (they could read as other names, so the secret search \
                 leaves them out); look at them by hand: find /home/openclaw /etc/openclaw -name \"*$(printf '\\n')*\"",
                )],
            ),
            // secret.plaintext: one finding per file, a line of evidence per hit.
            case(
                "secret.plaintext",
                |o, _| {
                    for (path, lines) in [("/a", "1"), ("/b", "7"), ("/a", "2,3")] {
                        o.secret_hits.push(SecretHit {
                            kind: "OpenAI API key".into(),
                            lines: lines.into(),
                            path: path.into(),
                        });
                    }
                },
                &[
                    ("/a", "line 1: OpenAI API key"),
                    ("/b", "line 7: OpenAI API key"),
                ],
            ),
            // secret.readable: by group or others, each path once.
            case(
                "secret.readable",
                |o, _| {
                    o.loose.push(mode(0o640, "/etc/openclaw/agent.env"));
                    o.modes[0] = mode(0o644, "/etc/openclaw/agent.env");
                    o.modes.push(mode(0o604, "/etc/openclaw/token.env"));
                    o.modes.push(mode(0o700, "/etc/openclaw/x.env"));
                },
                &[
                    (
                        "/etc/openclaw/agent.env",
                        "/etc/openclaw/agent.env mode 0640 root:root",
                    ),
                    (
                        "/etc/openclaw/token.env",
                        "/etc/openclaw/token.env mode 0604 root:root",
                    ),
                ],
            ),
            case(
                "secret.readable",
                |o, _| o.modes[0] = mode(0o611, "/etc/openclaw/agent.env"),
                &[],
            ),
            // skill.unpinned
            case(
                "skill.unpinned",
                |o, _| {
                    o.skills
                        .insert("/s".into(), vec!["weather".into(), "wallet".into()]);
                },
                &[("/s/wallet", "/s/wallet; pinned: weather")],
            ),
            case(
                "skill.unpinned",
                |o, p| {
                    p.pinned_skills.clear();
                    o.skills.insert("/s".into(), vec!["x".into()]);
                },
                &[
                    (
                        "/home/openclaw/.openclaw/skills/weather",
                        "/home/openclaw/.openclaw/skills/weather; pinned: none",
                    ),
                    ("/s/x", "/s/x; pinned: none"),
                ],
            ),
            // agent.bind
            case(
                "agent.bind",
                |o, _| cfg(o, r#"{"gateway": {"bind": "lan", "authToken": "${T}"}}"#),
                &[(
                    "/home/openclaw/.openclaw/openclaw.json",
                    "/home/openclaw/.openclaw/openclaw.json: gateway.bind is \"lan\"",
                )],
            ),
            case(
                "agent.bind",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"host": "0.0.0.0", "authToken": "${T}"}}"#,
                    )
                },
                &[(
                    "/home/openclaw/.openclaw/openclaw.json",
                    "/home/openclaw/.openclaw/openclaw.json: gateway.host is \"0.0.0.0\"",
                )],
            ),
            case(
                "agent.bind",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"bind": "custom", "customBindHost": "::1", "authToken": "${T}"}}"#,
                    )
                },
                &[],
            ),
            case(
                "agent.bind",
                |o, _| cfg(o, r#"{"gateway": {"authToken": "${T}"}}"#),
                &[],
            ),
            // agent.auth: from the config, and from the live gateway.
            case(
                "agent.auth",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"bind": "loopback", "auth": {"mode": "none"}}}"#,
                    )
                },
                &[(
                    "/home/openclaw/.openclaw/openclaw.json",
                    "/home/openclaw/.openclaw/openclaw.json: gateway.auth.mode is \"none\"",
                )],
            ),
            case(
                "agent.auth",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"bind": "loopback", "auth": {"mode": "token", "token": ""}}}"#,
                    )
                },
                &[(
                    "/home/openclaw/.openclaw/openclaw.json",
                    "/home/openclaw/.openclaw/openclaw.json: no token",
                )],
            ),
            case(
                "agent.auth",
                |o, _| {
                    o.agent_http.insert("noauth".into(), "204".into());
                },
                &[(
                    "http 127.0.0.1:18789",
                    "POST http://127.0.0.1:18789/tools/invoke without the token: 204, accepted",
                )],
            ),
            case(
                "agent.auth",
                |o, _| {
                    o.agent_http.insert("noauth".into(), "403".into());
                },
                &[],
            ),
            // Not an HTTP status: not an acceptance.
            case(
                "agent.auth",
                |o, _| {
                    o.agent_http.insert("noauth".into(), "timeout".into());
                },
                &[],
            ),
            // secret.in_config: never the value.
            case(
                "secret.in_config",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"bind": "loopback", "authToken": "${T}"}, "models": [{"apiKey": "sk-x"}, {"apiKey": "${K}"}], "password": "p"}"#,
                    )
                },
                &[
                    (
                        "/home/openclaw/.openclaw/openclaw.json models[0].apiKey",
                        "/home/openclaw/.openclaw/openclaw.json: models[0].apiKey is a literal value",
                    ),
                    (
                        "/home/openclaw/.openclaw/openclaw.json password",
                        "/home/openclaw/.openclaw/openclaw.json: password is a literal value",
                    ),
                ],
            ),
            case(
                "secret.in_config",
                |o, _| {
                    cfg(
                        o,
                        r#"{"gateway": {"bind": "loopback", "auth": {"mode": "token", "token": "literal"}}}"#,
                    )
                },
                &[(
                    "/home/openclaw/.openclaw/openclaw.json gateway.auth.token",
                    "/home/openclaw/.openclaw/openclaw.json: gateway.auth.token is a literal value",
                )],
            ),
            // fs.symlink: each link once, its names escaped.
            case(
                "fs.symlink",
                |o, _| {
                    for (path, link) in [("/w/a", "/w"), ("/w/b", "/w"), ("/x\n/y", "/x\n")] {
                        o.planted_links.push(crate::inspect::scan::PlantedLink {
                            path: path.into(),
                            link: link.into(),
                            target: "/etc".into(),
                            why: "refusing to follow".into(),
                        });
                    }
                },
                &[
                    ("/w", "/w -> /etc (on the way to /w/a, which a step writes)"),
                    (
                        "/x\\n",
                        "/x\\n -> /etc (on the way to /x\\n/y, which a step writes)",
                    ),
                ],
            ),
            // agent.down
            case(
                "agent.down",
                |o, _| {
                    o.service.insert("ActiveState".into(), "failed".into());
                    o.service.insert("SubState".into(), "failed".into());
                },
                &[(
                    "openclaw-gateway.service",
                    "down: the unit is failed (failed), not running",
                )],
            ),
            case(
                "agent.down",
                |o, _| {
                    o.service.insert("LoadState".into(), "not-found".into());
                },
                &[(
                    "openclaw-gateway.service",
                    "down: the unit is not installed",
                )],
            ),
            case(
                "agent.down",
                |o, _| {
                    o.agent_http.insert("health".into(), "503".into());
                },
                &[("openclaw-gateway.service", "down: GET /health: 503")],
            ),
            case(
                "agent.down",
                |o, _| {
                    o.listeners.remove(3);
                    o.agent_http.insert("health".into(), "refused".into());
                },
                &[(
                    "openclaw-gateway.service",
                    "down: nothing listens on port 18789; GET /health: refused",
                )],
            ),
            // Restarted before, up now: not down.
            case(
                "agent.down",
                |o, _| {
                    o.service.insert("NRestarts".into(), "9".into());
                },
                &[],
            ),
            case(
                "agent.down",
                |o, p| {
                    o.service.clear();
                    p.agent_service = None;
                },
                &[],
            ),
            // agent.token_refused
            case(
                "agent.token_refused",
                |o, _| {
                    o.agent_http.insert("auth".into(), "401".into());
                },
                &[(
                    "http 127.0.0.1:18789",
                    "POST http://127.0.0.1:18789/tools/invoke: 401 without the token, 401 with the env file's token: it is refused",
                )],
            ),
            case(
                "agent.token_refused",
                |o, _| {
                    o.agent_http.insert("auth".into(), "no-answer".into());
                },
                &[],
            ),
            // agent.unit_dropin
            case(
                "agent.unit_dropin",
                |o, _| {
                    o.dropins = vec![DropIn {
                        path: "/etc/systemd/system/openclaw-gateway.service.d/x.conf".into(),
                        settings: vec![
                            ("Nice".into(), "5".into()),
                            ("NoNewPrivileges".into(), "false".into()),
                        ],
                    }]
                },
                &[(
                    "/etc/systemd/system/openclaw-gateway.service.d/x.conf",
                    "NoNewPrivileges=false: turned off",
                )],
            ),
            case(
                "agent.unit_dropin",
                |o, _| {
                    o.dropins = vec![DropIn {
                        path: "/etc/systemd/system/openclaw-gateway.service.d/ok.conf".into(),
                        settings: vec![
                            ("User".into(), "openclaw".into()),
                            ("ProtectSystem".into(), "strict".into()),
                        ],
                    }]
                },
                &[],
            ),
        ]
    }

    #[test]
    fn each_finding_function_finds_its_drift_case_by_case() {
        let mut failures = Vec::new();
        for (n, c) in cases().iter().enumerate() {
            assert!(
                FINDINGS.iter().any(|d| d.id == c.id),
                "case {n}: no finding {}",
                c.id
            );
            let (mut obs, mut p) = (clean(), params());
            (c.given)(&mut obs, &mut p);
            let all = findings(&obs, &p);
            let got: Vec<(&str, &str)> = all
                .iter()
                .filter(|f| f.id == c.id)
                .map(|f| (f.subject.as_str(), f.evidence[0].as_str()))
                .collect();
            if got != c.want {
                failures.push(format!(
                    "case {n} ({}): want {:?}\n    got {got:?}",
                    c.id, c.want
                ));
            }
            // Every finding carries evidence and its table entry's severity and title.
            for f in &all {
                assert!(!f.evidence.is_empty(), "case {n}: {f:?}");
                assert!(
                    FINDINGS
                        .iter()
                        .any(|d| d.id == f.id && d.severity == f.severity && d.title == f.title),
                    "case {n}: {f:?} is not as its table entry says"
                );
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_kind_of_finding_has_a_case_that_finds_it() {
        let cases = cases();
        for d in FINDINGS {
            assert!(
                cases.iter().any(|c| c.id == d.id && !c.want.is_empty()),
                "{}: no case finds it",
                d.id
            );
        }
    }

    #[test]
    fn findings_come_most_severe_first_then_by_id() {
        let mut obs = clean();
        obs.odd_names = 1;
        obs.users
            .push(("toor".into(), 0, "/root".into(), "/bin/sh".into()));
        obs.listeners.push(listener("tcp", "0.0.0.0", 8080));
        obs.admin_groups.insert("wheel".into(), vec!["eve".into()]);
        let order: Vec<(Severity, String)> = findings(&obs, &params())
            .into_iter()
            .map(|f| (f.severity, f.id))
            .collect();
        assert_eq!(
            order,
            vec![
                (Severity::Critical, "user.uid0".to_string()),
                (Severity::High, "listener.unexpected".to_string()),
                (Severity::High, "sudo.member".to_string()),
                (Severity::Medium, "fs.odd_name".to_string()),
            ]
        );
    }
}
