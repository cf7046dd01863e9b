//! findings: unmanaged drift, from what the scan saw. Each finding has a stable id, a severity
//! and evidence that names what was seen, never a secret's value.

use std::collections::BTreeSet;

use serde_json::Value;

use super::scan::{Listener, Observations, ScanParams};
use super::{Finding, Severity};

fn finding(
    id: &str,
    severity: Severity,
    subject: String,
    title: &str,
    evidence: Vec<String>,
) -> Finding {
    Finding {
        id: id.into(),
        severity,
        subject,
        title: title.into(),
        evidence,
    }
}

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

/// Every finding on one host, most severe first.
pub fn findings(obs: &Observations, params: &ScanParams) -> Vec<Finding> {
    let mut out = Vec::new();

    for l in public_listeners(obs) {
        let allowed = match l.proto {
            "tcp" => &params.allowed_tcp,
            _ => &params.allowed_udp,
        };
        if params.agent_port == Some(l.port) && l.proto == "tcp" {
            out.push(finding(
                "listener.agent_port",
                Severity::Critical,
                format!("{} {}", l.proto, l.endpoint()),
                "the agent gateway's port listens on an address other than loopback",
                vec![listener_evidence(l)],
            ));
        } else if !allowed.contains(&l.port) {
            out.push(finding(
                "listener.unexpected",
                Severity::High,
                format!("{} {}", l.proto, l.endpoint()),
                "a port the inventory does not allow listens on an address other than loopback",
                vec![
                    listener_evidence(l),
                    format!(
                        "allowed {}: {} (listen_allow_{} adds more)",
                        l.proto,
                        join_ports(allowed),
                        l.proto
                    ),
                ],
            ));
        }
    }

    for (name, uid, home, shell) in &obs.users {
        if *uid == 0 && name != "root" {
            out.push(finding(
                "user.uid0",
                Severity::Critical,
                format!("user {name}"),
                "an account other than root has uid 0",
                vec![format!(
                    "/etc/passwd: {name} uid 0, home {home}, shell {shell}"
                )],
            ));
        }
    }

    for (group, members) in &obs.admin_groups {
        for m in members {
            if !params.sudo_users.contains(m) && m != "root" {
                out.push(finding(
                    "sudo.member",
                    Severity::High,
                    format!("{group}: {m}"),
                    "an account the inventory does not name may use sudo",
                    vec![format!(
                        "/etc/group: {m} is in {group}; expected: {} (sudo_allow adds more)",
                        if params.sudo_users.is_empty() {
                            "nobody".to_string()
                        } else {
                            params.sudo_users.join(", ")
                        }
                    )],
                ));
            }
        }
    }

    if let Some(known) = &params.known_keys {
        let blobs: BTreeSet<String> = known
            .iter()
            .filter_map(|k| super::scan::authorized_key(k))
            .map(|k| k.blob)
            .collect();
        for k in &obs.keys {
            if !blobs.contains(&k.blob) {
                out.push(finding(
                    "ssh.unknown_key",
                    Severity::High,
                    format!("{}:{}", k.file, k.line),
                    "an authorized SSH key the inventory does not know",
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
                ));
            }
        }
    }

    for k in &obs.malformed_keys {
        out.push(finding(
            "ssh.malformed_key",
            Severity::Medium,
            format!("{}:{}", k.file, k.line),
            "an authorized_keys line sshd cannot use (junk or damaged key data)",
            vec![format!(
                "{}:{} ({}): {}; the line starts {:?}",
                k.file, k.line, k.user, k.problem, k.start
            )],
        ));
    }

    for t in &obs.truncated {
        out.push(finding(
            "scan.file_too_large",
            Severity::Medium,
            t.path.clone(),
            "a file is larger than the scan reads: only its beginning was looked at",
            vec![format!(
                "{} is {} bytes; the scan reads {} bytes of it (for {})",
                t.path,
                t.size,
                super::scan::FILE_LIMIT,
                t.section
            )],
        ));
    }

    for hit in &obs.secret_hits {
        let existing = out
            .iter_mut()
            .find(|f| f.id == "secret.plaintext" && f.subject == hit.path);
        let line = format!("line {}: {}", hit.lines, hit.kind);
        match existing {
            Some(f) => f.evidence.push(line),
            None => out.push(finding(
                "secret.plaintext",
                Severity::Critical,
                hit.path.clone(),
                "a secret-looking string in a file, outside the env file",
                vec![line],
            )),
        }
    }

    let mut seen = BTreeSet::new();
    for m in obs.loose.iter().chain(&obs.modes) {
        if m.mode & 0o044 != 0 && seen.insert(m.path.clone()) {
            out.push(finding(
                "secret.readable",
                Severity::High,
                m.path.clone(),
                "a secrets file is readable by its group or by everyone",
                vec![m.shown()],
            ));
        }
    }

    for (folder, entries) in &obs.skills {
        for e in entries {
            if !params.pinned_skills.contains(e) {
                out.push(finding(
                    "skill.unpinned",
                    Severity::Medium,
                    format!("{folder}/{e}"),
                    "a skill the inventory does not pin",
                    vec![format!(
                        "{folder}/{e}; pinned: {}",
                        if params.pinned_skills.is_empty() {
                            "none".to_string()
                        } else {
                            params.pinned_skills.join(", ")
                        }
                    )],
                ));
            }
        }
    }

    if let Some(cfg) = AgentConfig::read(obs) {
        if cfg.loopback == Some(false) {
            out.push(finding(
                "agent.bind",
                Severity::Critical,
                cfg.path.clone(),
                "the agent's config binds the gateway off loopback",
                vec![format!("{}: {}", cfg.path, cfg.bind)],
            ));
        }
        if let Auth::Missing(why) = &cfg.auth {
            out.push(finding(
                "agent.auth",
                Severity::Critical,
                cfg.path.clone(),
                "the agent's gateway has no authentication",
                vec![format!("{}: {why}", cfg.path)],
            ));
        }
        for field in &cfg.literal_secrets {
            out.push(finding(
                "secret.in_config",
                Severity::High,
                format!("{} {field}", cfg.path),
                "the agent's config holds a secret itself, not a ${VAR} reference",
                vec![format!("{}: {field} is a literal value", cfg.path)],
            ));
        }
    }

    for l in &obs.planted_links {
        let subject = crate::untrusted::escape_name(&l.link).into_owned();
        if out
            .iter()
            .any(|f| f.id == "fs.symlink" && f.subject == subject)
        {
            continue;
        }
        out.push(finding(
            "fs.symlink",
            Severity::Critical,
            subject,
            "a symbolic link planted where rampart writes as root: steps through it are refused",
            vec![
                format!(
                    "{} -> {} (on the way to {}, which a step writes)",
                    crate::untrusted::escape_name(&l.link),
                    crate::untrusted::escape_name(&l.target),
                    crate::untrusted::escape_name(&l.path)
                ),
                crate::untrusted::escape_name(&l.why).into_owned(),
            ],
        ));
    }

    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
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
mod tests {
    use super::*;
    use crate::inspect::scan::{AuthorizedKey, FileMode, SecretHit};

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
        let f = findings(&obs, &params());
        assert_eq!(f[0].id, "ssh.unknown_key");
        assert!(f[0].evidence[0].contains("AAAAAAAAAAAé…"), "{f:?}");
    }

    #[test]
    fn a_hardened_host_has_no_findings() {
        let obs = Observations {
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
        };
        assert_eq!(findings(&obs, &params()), vec![]);
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
        let f = findings(&obs, &params());
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
}
