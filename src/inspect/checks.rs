//! checks: the guide's security checklist and the baseline's key controls, per host, from the
//! scan, the findings and the outside probe. Each is pass, fail or unknown, with evidence.

use super::findings::{AgentConfig, Auth, public_listeners};
use super::scan::{Observations, ScanParams};
use super::{Check, CheckStatus, Finding};
use crate::facts::Facts;

use CheckStatus::{Fail, Pass, Unknown};

/// The guide's `.gitignore` entries (§3).
const GITIGNORE: &[&str] = &[
    "config.json",
    "*.env",
    ".env*",
    "secrets/",
    "*.key",
    "*.pem",
];

/// A backup older than this fails `backups`.
const BACKUP_MAX_AGE: u64 = 3 * 86_400;

/// What the controller's TCP connects found, per forbidden port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideProbe {
    pub address: String,
    /// (port, connected, what happened)
    pub ports: Vec<(u16, bool, String)>,
}

struct Builder(Vec<Check>);

impl Builder {
    fn add(
        &mut self,
        id: &str,
        source: &str,
        title: &str,
        status: CheckStatus,
        evidence: Vec<String>,
    ) {
        self.0.push(Check {
            id: id.into(),
            source: source.into(),
            title: title.into(),
            status,
            evidence,
        });
    }
}

fn of(findings: &[Finding], prefix: &str) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.id.starts_with(prefix))
        .flat_map(|f| {
            f.evidence
                .iter()
                .map(move |e| format!("{} ({}): {e}", f.subject, f.id))
        })
        .collect()
}

/// The checklist for one host.
pub fn checks(
    obs: &Observations,
    params: &ScanParams,
    facts: &Facts,
    findings: &[Finding],
    outside: Option<&OutsideProbe>,
) -> Vec<Check> {
    let mut b = Builder(Vec::new());
    const G: &str = "guide checklist";
    const B: &str = "baseline";
    let agent = params.agent_user.is_some();
    let cfg = AgentConfig::read(obs);
    let no_agent = || vec!["the playbook has no agent (agent_user is not set)".to_string()];
    let no_config = || {
        vec![match (&obs.config_path, &params.agent_config) {
            (Some(p), _) if obs.truncated.iter().any(|t| t.section == "config") => format!(
                "{p} is larger than the scan reads ({} bytes): not checked",
                super::scan::FILE_LIMIT
            ),
            (Some(p), _) => format!("{p} is not JSON rampart can read"),
            (None, Some(p)) => format!("{p} does not exist"),
            (None, None) => "no agent config".into(),
        }]
    };

    // 1. Auth token set and strong (32+ chars)
    let (status, evidence) = match (&cfg, agent) {
        (_, false) => (Unknown, no_agent()),
        (None, _) => (Fail, no_config()),
        (Some(c), _) => match &c.auth {
            Auth::Missing(why) => (Fail, vec![format!("{}: {why}", c.path)]),
            Auth::Literal(n) => (
                if *n >= 32 { Pass } else { Fail },
                vec![format!("{}: a literal token of {n} characters", c.path)],
            ),
            Auth::Env(var) => {
                // The unit reads token.env, then agent.env: agent.env's value wins.
                let found = params.secret_files.iter().find_map(|f| {
                    let vars = obs.env.get(f)?;
                    let (_, len) = vars.iter().rev().find(|(n, _)| n == var)?;
                    Some((f, var, *len))
                });
                match found {
                    Some((file, _, len)) => (
                        if len >= 32 { Pass } else { Fail },
                        vec![format!(
                            "{}: ${{{var}}}; {var} in {file}: {len} characters",
                            c.path
                        )],
                    ),
                    None => (
                        Fail,
                        vec![format!(
                            "{}: ${{{var}}}, but no env file sets {var} ({})",
                            c.path,
                            params.secret_files.join(", ")
                        )],
                    ),
                }
            }
        },
    };
    b.add(
        "auth_token",
        G,
        "Auth token set and strong (32+ chars)",
        status,
        evidence,
    );

    // 2. Gateway bound to localhost only
    let (status, evidence) = match (&cfg, agent) {
        (_, false) => (Unknown, no_agent()),
        (None, _) => (Fail, no_config()),
        (Some(c), _) => {
            let exposed: Vec<String> = public_listeners(obs)
                .filter(|l| Some(l.port) == params.agent_port && l.proto == "tcp")
                .map(|l| format!("listening on {}", l.endpoint()))
                .collect();
            let mut ev = vec![format!("{}: {}", c.path, c.bind)];
            ev.extend(exposed.iter().cloned());
            let status = match c.loopback {
                Some(false) => Fail,
                _ if !exposed.is_empty() => Fail,
                Some(true) => Pass,
                None => Unknown,
            };
            (status, ev)
        }
    };
    b.add(
        "loopback_bind",
        G,
        "Gateway bound to localhost only",
        status,
        evidence,
    );

    // 3. Exec mode set to allowlist
    let (status, evidence) = match (&cfg, agent) {
        (_, false) => (Unknown, no_agent()),
        (None, _) => (Fail, no_config()),
        (Some(c), _) => match &c.exec_security {
            Some(s) if s == "allowlist" => (
                Pass,
                vec![format!("{}: exec security is \"allowlist\"", c.path)],
            ),
            Some(s) => (Fail, vec![format!("{}: exec security is {s:?}", c.path)]),
            None => (Fail, vec![format!("{}: exec security is not set", c.path)]),
        },
    };
    b.add(
        "exec_allowlist",
        G,
        "Exec mode set to `allowlist`",
        status,
        evidence,
    );

    // 4. Secrets in env vars, not files
    let mut ev = of(findings, "secret.");
    let status = if !agent {
        ev = no_agent();
        Unknown
    } else if ev.is_empty() {
        ev.push(format!(
            "no secret-looking string in {} outside {}; secrets files not readable by others",
            params.agent_folders.join(", "),
            params.secret_files.join(", ")
        ));
        Pass
    } else {
        Fail
    };
    b.add(
        "secrets_in_env",
        G,
        "Secrets in env vars, not files",
        status,
        ev,
    );

    // 5. .gitignore excludes all sensitive files
    let (status, evidence) = match (&obs.gitignore, &params.gitignore) {
        (_, None) => (Unknown, no_agent()),
        (None, Some(p)) => (Fail, vec![format!("{p} does not exist")]),
        (Some(text), Some(p)) => {
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            let missing: Vec<&str> = GITIGNORE
                .iter()
                .copied()
                .filter(|g| !lines.contains(g))
                .collect();
            if missing.is_empty() {
                (Pass, vec![format!("{p} lists {}", GITIGNORE.join(" "))])
            } else {
                (Fail, vec![format!("{p} lacks {}", missing.join(" "))])
            }
        }
    };
    b.add(
        "gitignore",
        G,
        "`.gitignore` excludes all sensitive files",
        status,
        evidence,
    );

    // 6. Running as unprivileged user
    let (status, evidence) = unprivileged(obs, params);
    b.add(
        "unprivileged_user",
        G,
        "Running as unprivileged user",
        status,
        evidence,
    );

    // 7. No skills from untrusted sources
    let mut ev = of(findings, "skill.");
    let status = if !agent {
        ev = no_agent();
        Unknown
    } else if ev.is_empty() {
        let n: usize = obs.skills.values().map(Vec::len).sum();
        ev.push(format!(
            "{n} skills installed, all pinned ({})",
            if params.pinned_skills.is_empty() {
                "none pinned".to_string()
            } else {
                params.pinned_skills.join(", ")
            }
        ));
        Pass
    } else {
        Fail
    };
    b.add(
        "trusted_skills",
        G,
        "No skills from untrusted sources",
        status,
        ev,
    );

    // 8. Backup strategy in place
    let (status, evidence) = backups(obs, params);
    b.add("backups", G, "Backup strategy in place", status, evidence);

    // 9. Monitoring/alerting configured
    let (status, evidence) = match (&params.agent_audit_rules, obs.audit_rules_file) {
        (None, _) => (Unknown, no_agent()),
        (Some(f), Some(false) | None) => (
            Fail,
            vec![format!("{f} is missing: no audit rules for the agent")],
        ),
        (Some(f), Some(true)) => match &obs.audit_loaded {
            Some(loaded) => {
                let n = loaded.lines().filter(|l| l.contains("agent-")).count();
                if n > 0 {
                    (
                        Pass,
                        vec![format!("{f}: {n} agent rules loaded (auditctl -l)")],
                    )
                } else {
                    (
                        Fail,
                        vec![format!("{f} exists but auditctl -l lists no agent rule")],
                    )
                }
            }
            None => (
                Unknown,
                vec![format!(
                    "{f} is written, but audit is unavailable here ({}): rules not loaded",
                    facts.virtualization
                )],
            ),
        },
    };
    b.add(
        "monitoring",
        G,
        "Monitoring/alerting configured",
        status,
        evidence,
    );

    // 10. Incident response plan documented
    let (status, evidence) = match (&params.incident_doc, obs.incident_doc) {
        (None, _) => (Unknown, no_agent()),
        (Some(d), Some(true)) => (Pass, vec![format!("{d} is in place")]),
        (Some(d), _) => (Fail, vec![format!("{d} is missing or empty")]),
    };
    b.add(
        "incident_response",
        G,
        "Incident response plan documented",
        status,
        evidence,
    );

    // Is the agent up? (issue 10: an apply that "succeeds" while the gateway never starts.)
    let state = super::findings::agent_state(obs, params);
    let (status, evidence) = match &state {
        None => (Unknown, no_agent()),
        Some(a) if a.down.is_empty() => (Pass, a.evidence.clone()),
        Some(a) => {
            let mut ev = vec![format!("down: {}", a.down.join("; "))];
            ev.extend(a.evidence.iter().cloned());
            (Fail, ev)
        }
    };
    b.add(
        "agent_running",
        "guide §1",
        "The agent gateway runs and answers on loopback",
        status,
        evidence,
    );
    let (status, evidence) = match &state {
        None => (Unknown, no_agent()),
        Some(a) => (
            match a.auth {
                super::findings::AuthProbe::Enforced { .. } => Pass,
                super::findings::AuthProbe::Unknown(_) => Unknown,
                _ => Fail,
            },
            vec![a.auth.evidence(a.port)],
        ),
    };
    b.add(
        "auth_enforced",
        "guide §2",
        "The gateway refuses requests without the token and takes the token",
        status,
        evidence,
    );
    let dropins = of(findings, "agent.unit_dropin");
    let (status, evidence) = match &params.agent_service {
        None => (Unknown, no_agent()),
        Some(unit) if dropins.is_empty() => (
            Pass,
            vec![format!(
                "{unit}: no drop-in loosens its sandbox ({} drop-ins)",
                obs.dropins.len()
            )],
        ),
        Some(_) => (Fail, dropins),
    };
    b.add(
        "agent_sandbox",
        "guide §7",
        "The agent's unit keeps its isolation (no loosening drop-in)",
        status,
        evidence,
    );

    // The outside probe (guide §1: "Verify you're not exposed").
    let (status, evidence) = match outside {
        None => (Unknown, vec!["no outside probe was made".to_string()]),
        Some(p) if p.ports.is_empty() => (
            Unknown,
            vec!["no port to probe: agent_port and forbidden_ports are not set".to_string()],
        ),
        Some(p) => {
            let open = p.ports.iter().any(|(_, connected, _)| *connected);
            (
                if open { Fail } else { Pass },
                p.ports
                    .iter()
                    .map(|(port, _, what)| {
                        format!("from the controller to {}:{port}: {what}", p.address)
                    })
                    .collect(),
            )
        }
    };
    b.add(
        "outside_probe",
        "guide §1",
        "The agent port is not reachable from outside",
        status,
        evidence,
    );

    // Baseline key controls.
    let sshd = |k: &str| obs.sshd.get(k).map(String::as_str);
    let (status, evidence) = match sshd("permitrootlogin") {
        None => (Unknown, vec!["sshd -T gave no answer".to_string()]),
        Some(v) => (
            if v == "no" { Pass } else { Fail },
            vec![format!("sshd -T: permitrootlogin {v}")],
        ),
    };
    b.add("ssh_root_login", B, "SSH root login off", status, evidence);
    let (status, evidence) = match (
        sshd("passwordauthentication"),
        sshd("kbdinteractiveauthentication"),
    ) {
        (None, _) => (Unknown, vec!["sshd -T gave no answer".to_string()]),
        (Some(p), k) => {
            let k = k.unwrap_or("no");
            (
                if p == "no" && k == "no" { Pass } else { Fail },
                vec![format!(
                    "sshd -T: passwordauthentication {p}, kbdinteractiveauthentication {k}"
                )],
            )
        }
    };
    b.add(
        "ssh_password_login",
        B,
        "SSH password login off",
        status,
        evidence,
    );

    let (status, evidence) = match &obs.nft {
        None => (Unknown, vec!["nft is not installed".to_string()]),
        Some(rules) => firewall(rules),
    };
    b.add(
        "firewall",
        B,
        "Firewall drops inbound by default",
        status,
        evidence,
    );

    let uid0 = of(findings, "user.uid0");
    b.add(
        "root_only_uid0",
        B,
        "root is the only account with uid 0",
        if uid0.is_empty() { Pass } else { Fail },
        if uid0.is_empty() {
            vec!["/etc/passwd: only root has uid 0".to_string()]
        } else {
            uid0
        },
    );

    let sudo = of(findings, "sudo.");
    b.add(
        "sudo_members",
        B,
        "Only the inventory's admins may sudo",
        if sudo.is_empty() { Pass } else { Fail },
        if sudo.is_empty() {
            let members: Vec<String> = obs
                .admin_groups
                .iter()
                .map(|(g, m)| {
                    format!(
                        "{g}: {}",
                        if m.is_empty() {
                            "-".into()
                        } else {
                            m.join(",")
                        }
                    )
                })
                .collect();
            vec![format!("/etc/group: {}", members.join("; "))]
        } else {
            sudo
        },
    );

    let keys = of(findings, "ssh.unknown_key");
    let (status, evidence) = if params.known_keys.is_none() {
        (
            Unknown,
            vec!["the inventory names no keys (admin_keys, authorized_keys_allow)".to_string()],
        )
    } else if keys.is_empty() {
        (
            Pass,
            vec![format!(
                "{} authorized keys, all known to the inventory",
                obs.keys.len()
            )],
        )
    } else {
        (Fail, keys)
    };
    b.add(
        "ssh_keys",
        B,
        "Only the inventory's SSH keys are authorized",
        status,
        evidence,
    );

    let listeners = of(findings, "listener.");
    b.add(
        "listeners",
        B,
        "Only allowed ports listen off loopback",
        if listeners.is_empty() { Pass } else { Fail },
        if listeners.is_empty() {
            vec![format!(
                "off loopback: {}",
                public_listeners(obs)
                    .map(|l| format!("{} {}", l.proto, l.endpoint()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )]
        } else {
            listeners
        },
    );

    let (status, evidence) = match &obs.upgrades {
        None => (
            Fail,
            vec!["/etc/apt/apt.conf.d/20auto-upgrades does not exist".to_string()],
        ),
        Some(text) => {
            let on = text.lines().any(|l| {
                let l = l.replace(' ', "");
                l.starts_with("APT::Periodic::Unattended-Upgrade\"1\"")
            });
            (
                if on { Pass } else { Fail },
                vec![format!(
                    "/etc/apt/apt.conf.d/20auto-upgrades: Unattended-Upgrade {}",
                    if on { "\"1\"" } else { "not \"1\"" }
                )],
            )
        }
    };
    b.add(
        "auto_updates",
        B,
        "Security updates install automatically",
        status,
        evidence,
    );
    if params.openclaw_audit && agent {
        openclaw_beside(&mut b.0, obs.openclaw.as_ref());
    }
    b.0
}

/// At most this many of OpenClaw's findings are shown per host.
const OPENCLAW_MAX_FINDINGS: usize = 40;

/// One finding of `openclaw security audit --json`, bounded and cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenclawFinding {
    pub check_id: String,
    /// `critical`, `warn` or `info`.
    pub severity: String,
    pub title: String,
    pub detail: String,
}

/// What `openclaw security audit --deep --json` said: its findings and its live probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenclawReport {
    pub findings: Vec<OpenclawFinding>,
    /// More findings than were kept.
    pub left_off: usize,
    /// `deep.gateway`: whether its own probe reached the gateway, and its error.
    pub deep_probe: Option<(bool, Option<String>)>,
}

/// Reads the audit's output: the first JSON object in it (lines before it, say a warning on
/// stderr, are skipped). Host output: nothing in it is trusted to be well formed.
pub fn parse_openclaw(output: &str) -> Result<OpenclawReport, String> {
    let start = output
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| output.starts_with('{').then_some(0))
        .ok_or_else(|| {
            let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("no JSON in its output: {}", super::scan::clean(first, 200))
        })?;
    let json: serde_json::Value = serde_json::Deserializer::from_str(&output[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .ok_or("no JSON in its output")?
        .map_err(|e| format!("its JSON does not parse: {e}"))?;
    let text = |v: &serde_json::Value, max| super::scan::clean(v.as_str().unwrap_or(""), max);
    let all = json["findings"].as_array().cloned().unwrap_or_default();
    let findings = all
        .iter()
        .take(OPENCLAW_MAX_FINDINGS)
        .map(|f| OpenclawFinding {
            check_id: text(&f["checkId"], 100),
            severity: text(&f["severity"], 20),
            title: super::scan::clean(&f["title"].as_str().unwrap_or("").replace('\n', "; "), 200),
            detail: super::scan::clean(
                &f["detail"].as_str().unwrap_or("").replace('\n', "; "),
                300,
            ),
        })
        .collect();
    let gw = &json["deep"]["gateway"];
    Ok(OpenclawReport {
        findings,
        left_off: all.len().saturating_sub(OPENCLAW_MAX_FINDINGS),
        deep_probe: gw["attempted"].as_bool().filter(|a| *a).map(|_| {
            (
                gw["ok"].as_bool().unwrap_or(false),
                gw["error"].as_str().map(|e| super::scan::clean(e, 200)),
            )
        }),
    })
}

/// The rampart check an OpenClaw finding speaks to, by its checkId.
pub fn related_check(check_id: &str) -> Option<&'static str> {
    let id = check_id;
    Some(match () {
        _ if id == "gateway.loopback_no_auth" || id == "gateway.bind_no_auth" => "auth_token",
        _ if id.starts_with("gateway.bind")
            || id.starts_with("gateway.tailscale")
            || id.starts_with("gateway.control_ui.allowed_origins") =>
        {
            "loopback_bind"
        }
        _ if id == "gateway.probe_failed" => "agent_running",
        _ if id.starts_with("tools.exec.") || id == "security.exposure.open_channels_with_exec" => {
            "exec_allowlist"
        }
        _ if id.starts_with("fs.") => "secrets_in_env",
        _ if id.starts_with("skills.") || id.starts_with("plugins.") => "trusted_skills",
        _ => return None,
    })
}

fn serious(severity: &str) -> bool {
    severity == "critical" || severity == "warn"
}

/// OpenClaw's own audit beside rampart's checks: its findings in `openclaw_audit` (fails on a
/// critical one; unknown, never pass, where OpenClaw is not installed), and next to each
/// rampart check the findings that speak to it, with both verdicts where they differ.
fn openclaw_beside(checks: &mut Vec<Check>, run: Option<&super::scan::OpenclawRun>) {
    use super::scan::OpenclawRun;
    let (status, evidence, report) = match run {
        None => (
            Unknown,
            vec!["unknown: the audit did not run".to_string()],
            None,
        ),
        Some(OpenclawRun::NotInstalled) => (
            Unknown,
            vec!["unknown: openclaw not installed".to_string()],
            None,
        ),
        Some(OpenclawRun::NotRun(why)) => (Unknown, vec![format!("unknown: not run: {why}")], None),
        Some(OpenclawRun::Ran { bin, output }) => match parse_openclaw(output) {
            Err(why) => (Unknown, vec![format!("unknown: {bin}: {why}")], None),
            Ok(r) => {
                let count = |sev: &str| r.findings.iter().filter(|f| f.severity == sev).count();
                let mut ev = vec![format!(
                    "{bin} security audit --deep: {} critical, {} warn, {} info",
                    count("critical"),
                    count("warn"),
                    count("info")
                )];
                for f in &r.findings {
                    let beside = related_check(&f.check_id)
                        .and_then(|id| checks.iter().find(|c| c.id == id))
                        .map(|c| format!(" [rampart {}: {}]", c.id, c.status.as_str()))
                        .unwrap_or_default();
                    ev.push(format!(
                        "{} ({}): {}{}{beside}",
                        f.check_id,
                        f.severity,
                        f.title,
                        if f.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", f.detail)
                        }
                    ));
                }
                if r.left_off > 0 {
                    ev.push(format!("... and {} more findings", r.left_off));
                }
                let status = if count("critical") > 0 { Fail } else { Pass };
                (status, ev, Some(r))
            }
        },
    };
    if let Some(r) = &report {
        for c in checks.iter_mut() {
            let related: Vec<&OpenclawFinding> = r
                .findings
                .iter()
                .filter(|f| related_check(&f.check_id) == Some(c.id.as_str()))
                .collect();
            for f in &related {
                let differ = c.status == Pass && serious(&f.severity);
                c.evidence.push(format!(
                    "openclaw: {} ({}): {}{}",
                    f.check_id,
                    f.severity,
                    f.title,
                    if differ {
                        format!("; verdicts differ: rampart pass, openclaw {}", f.severity)
                    } else {
                        String::new()
                    }
                ));
            }
            let has_area = [
                "auth_token",
                "loopback_bind",
                "exec_allowlist",
                "secrets_in_env",
                "trusted_skills",
            ]
            .contains(&c.id.as_str());
            if c.status == Fail && has_area && !related.iter().any(|f| serious(&f.severity)) {
                c.evidence.push(
                    "openclaw: no finding here; verdicts differ: rampart fail, openclaw pass"
                        .to_string(),
                );
            }
            if c.id == "agent_running"
                && let Some((ok, error)) = &r.deep_probe
            {
                let differ = (c.status == Pass) != *ok;
                c.evidence.push(format!(
                    "openclaw --deep probe of the gateway: {}{}{}",
                    if *ok { "ok" } else { "failed" },
                    error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    if differ {
                        format!(
                            "; verdicts differ: rampart {}, openclaw {}",
                            c.status.as_str(),
                            if *ok { "pass" } else { "fail" }
                        )
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    checks.push(Check {
        id: "openclaw_audit".into(),
        source: "openclaw security audit".into(),
        title: "OpenClaw's own security audit (--deep) finds nothing critical".into(),
        status,
        evidence,
    });
}

fn unprivileged(obs: &Observations, params: &ScanParams) -> (CheckStatus, Vec<String>) {
    let Some(unit) = &params.agent_service else {
        return (
            Unknown,
            vec!["the playbook has no agent (agent_user is not set)".into()],
        );
    };
    let load = obs
        .service
        .get("LoadState")
        .map(String::as_str)
        .unwrap_or("");
    if load != "loaded" {
        return (
            Unknown,
            vec![format!("{unit} is not installed (LoadState={load})")],
        );
    }
    let user = obs.service.get("User").cloned().unwrap_or_default();
    let mut ev = vec![format!(
        "{unit}: User={}",
        if user.is_empty() { "(root)" } else { &user }
    )];
    if user.is_empty() || user == "root" {
        return (Fail, ev);
    }
    let uid = obs.users.iter().find(|u| u.0 == user).map(|u| u.1);
    match uid {
        Some(0) => {
            ev.push(format!("{user} has uid 0"));
            return (Fail, ev);
        }
        Some(u) => ev.push(format!("{user} has uid {u}")),
        None => ev.push(format!("{user} is not in /etc/passwd")),
    }
    let admin: Vec<&String> = obs
        .admin_groups
        .iter()
        .filter(|(_, m)| m.contains(&user))
        .map(|(g, _)| g)
        .collect();
    if !admin.is_empty() {
        ev.push(format!(
            "{user} is in {}",
            admin
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return (Fail, ev);
    }
    if let Some(p) = obs.service.get("ProcessUser") {
        ev.push(format!("the running process is {p}'s"));
        if p == "root" {
            return (Fail, ev);
        }
    }
    (Pass, ev)
}

fn backups(obs: &Observations, params: &ScanParams) -> (CheckStatus, Vec<String>) {
    let (Some(timer), Some(folder)) = (&params.backup_timer, &params.backup_folder) else {
        return (
            Unknown,
            vec!["the playbook has no agent (agent_user is not set)".into()],
        );
    };
    let mut ev = Vec::new();
    let timer_on = match &obs.backup_timer {
        Some((enabled, active)) => {
            ev.push(format!("{timer}: {enabled}, {active}"));
            enabled == "enabled" && active == "active"
        }
        None => {
            ev.push(format!("{timer}: no answer"));
            false
        }
    };
    let fresh = match (&obs.backup_latest, obs.now) {
        (Some((mtime, size, path)), Some(now)) => {
            let age = now.saturating_sub(*mtime);
            ev.push(format!(
                "newest backup {path}, {size} bytes, {} h old",
                age / 3600
            ));
            age <= BACKUP_MAX_AGE && *size > 0
        }
        _ => {
            ev.push(format!("no backup in {folder}"));
            false
        }
    };
    (if timer_on && fresh { Pass } else { Fail }, ev)
}

/// Whether nft's ruleset drops inbound by default.
fn firewall(rules: &str) -> (CheckStatus, Vec<String>) {
    let input_drop = rules.lines().any(|l| {
        let l = l.trim();
        l.contains("hook input") && l.contains("policy drop")
    });
    if input_drop {
        (
            Pass,
            vec!["nft list ruleset: an input chain with policy drop".into()],
        )
    } else if rules.trim().is_empty() {
        (
            Fail,
            vec!["nft list ruleset is empty: nothing is filtered".into()],
        )
    } else {
        (
            Fail,
            vec!["nft list ruleset: no input chain with policy drop".into()],
        )
    }
}

/// Connects from the controller to each forbidden port of `address`, all at once; a port
/// that accepts is exposed. Refused and timed-out connects both count as closed.
pub async fn outside_probe(
    address: &str,
    ports: &[u16],
    timeout: std::time::Duration,
) -> OutsideProbe {
    let mut set = tokio::task::JoinSet::new();
    for &port in ports {
        let target = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        set.spawn(async move {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
                Ok(Ok(_)) => (port, true, "connected: the port is open".to_string()),
                Ok(Err(e)) => (port, false, format!("closed ({e})")),
                Err(_) => (
                    port,
                    false,
                    format!("closed (no answer in {} s)", timeout.as_secs()),
                ),
            }
        });
    }
    let mut ports = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(p) = done {
            ports.push(p);
        }
    }
    ports.sort();
    OutsideProbe {
        address: address.to_string(),
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::findings::findings;
    use crate::inspect::scan::{AuthorizedKey, FileMode, Listener};

    fn params() -> ScanParams {
        let vars = serde_json::json!({
            "agent_user": "openclaw", "agent_port": "18789", "ssh_port": 22,
            "wireguard_port": 51820, "admin_user": "admin",
            "admin_keys": ["ssh-ed25519 AAAAgood admin@laptop"],
        });
        ScanParams::from_vars(vars.as_object().unwrap()).unwrap()
    }

    /// What the scan sees on a host site.yaml provisioned, on a kernel with audit.
    fn hardened() -> Observations {
        let now = 1_800_000_000;
        Observations {
            listeners: vec![
                Listener {
                    proto: "tcp",
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 22,
                    process: None,
                },
                Listener {
                    proto: "tcp",
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 18789,
                    process: None,
                },
            ],
            users: vec![
                ("root".into(), 0, "/root".into(), "/bin/bash".into()),
                ("openclaw".into(), 999, "/home/openclaw".into(), "/usr/sbin/nologin".into()),
            ],
            admin_groups: [("sudo".to_string(), vec!["admin".to_string()])].into(),
            keys: vec![AuthorizedKey {
                user: "admin".into(),
                file: "/home/admin/.ssh/authorized_keys".into(),
                line: 1,
                key_type: "ssh-ed25519".into(),
                blob: "AAAAgood".into(),
                comment: String::new(),
            }],
            sshd: [
                ("permitrootlogin".to_string(), "no".to_string()),
                ("passwordauthentication".to_string(), "no".to_string()),
                ("kbdinteractiveauthentication".to_string(), "no".to_string()),
            ]
            .into(),
            nft: Some("table inet rampart {\n chain input {\n  type filter hook input priority filter; policy drop;\n }\n}\n".into()),
            upgrades: Some("APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n".into()),
            audit_loaded: Some("-w /home/openclaw/.openclaw -p rwxa -k agent-config\n".into()),
            config: Some(r#"{"gateway": {"bind": "loopback", "auth": {"mode": "token", "token": "${AGENT_AUTH_TOKEN}"}}, "tools": {"exec": {"security": "allowlist"}}}"#.into()),
            config_path: Some("/home/openclaw/.openclaw/openclaw.json".into()),
            env: [
                ("/etc/openclaw/token.env".to_string(), vec![("AGENT_AUTH_TOKEN".to_string(), 64)]),
                ("/etc/openclaw/agent.env".to_string(), vec![]),
            ]
            .into(),
            modes: vec![FileMode {
                mode: 0o600,
                owner: "root".into(),
                group: "root".into(),
                path: "/etc/openclaw/agent.env".into(),
            }],
            service: crate::inspect::findings::tests::running_service(),
            agent_http: crate::inspect::findings::tests::healthy_http(),
            gitignore: Some("config.json\n*.env\n.env*\nsecrets/\n*.key\n*.pem\nopenclaw.json\n".into()),
            backup_timer: Some(("enabled".into(), "active".into())),
            backup_latest: Some((now - 3600, 4096, "/var/backups/openclaw/agent-x.tar.gz".into())),
            now: Some(now),
            incident_doc: Some(true),
            audit_rules_file: Some(true),
            ..Observations::default()
        }
    }

    fn closed() -> OutsideProbe {
        OutsideProbe {
            address: "10.0.0.5".into(),
            ports: vec![(18789, false, "closed (connection refused)".into())],
        }
    }

    fn verdicts(obs: &Observations, outside: &OutsideProbe) -> Vec<(String, CheckStatus)> {
        let p = params();
        let f = findings(obs, &p);
        checks(obs, &p, &Facts::default(), &f, Some(outside))
            .into_iter()
            .map(|c| {
                assert!(!c.evidence.is_empty(), "{} has no evidence", c.id);
                (c.id, c.status)
            })
            .collect()
    }

    fn not_passing(v: &[(String, CheckStatus)]) -> Vec<(&str, CheckStatus)> {
        v.iter()
            .filter(|(_, s)| *s != Pass)
            .map(|(id, s)| (id.as_str(), *s))
            .collect()
    }

    #[test]
    fn a_hardened_host_passes_every_check() {
        let v = verdicts(&hardened(), &closed());
        assert_eq!(v.len(), 22);
        assert_eq!(not_passing(&v), vec![]);
    }

    #[test]
    fn each_weakness_fails_its_own_checks_only() {
        let mut obs = hardened();
        obs.env.insert(
            "/etc/openclaw/token.env".into(),
            vec![("AGENT_AUTH_TOKEN".into(), 16)],
        );
        obs.config = Some(obs.config.unwrap().replace("allowlist", "full"));
        obs.gitignore = Some("config.json\n".into());
        obs.backup_latest = Some((obs.now.unwrap() - 10 * 86_400, 4096, "/b/old.tar.gz".into()));
        obs.sshd
            .insert("permitrootlogin".into(), "prohibit-password".into());
        obs.upgrades = None;
        obs.incident_doc = Some(false);
        assert_eq!(
            not_passing(&verdicts(&obs, &closed())),
            vec![
                ("auth_token", Fail),
                ("exec_allowlist", Fail),
                ("gitignore", Fail),
                ("backups", Fail),
                ("incident_response", Fail),
                ("ssh_root_login", Fail),
                ("auto_updates", Fail),
            ]
        );
    }

    #[test]
    fn an_agent_running_as_root_or_with_sudo_fails() {
        let mut obs = hardened();
        obs.service.insert("User".into(), String::new());
        assert_eq!(
            not_passing(&verdicts(&obs, &closed())),
            vec![("unprivileged_user", Fail)]
        );
        let mut obs = hardened();
        obs.admin_groups
            .insert("sudo".into(), vec!["admin".into(), "openclaw".into()]);
        let v = verdicts(&obs, &closed());
        assert_eq!(
            not_passing(&v),
            vec![("unprivileged_user", Fail), ("sudo_members", Fail)]
        );
    }

    #[test]
    fn what_the_scan_cannot_see_is_unknown_not_pass() {
        let mut obs = hardened();
        obs.audit_loaded = None; // a container: no kernel audit
        obs.sshd.clear();
        obs.nft = None;
        obs.service.insert("LoadState".into(), "not-found".into());
        assert_eq!(
            not_passing(&verdicts(&obs, &closed())),
            vec![
                ("unprivileged_user", Unknown),
                ("monitoring", Unknown),
                // Not installed: not running either.
                ("agent_running", Fail),
                ("ssh_root_login", Unknown),
                ("ssh_password_login", Unknown),
                ("firewall", Unknown),
            ]
        );
    }

    #[test]
    fn an_open_agent_port_fails_the_outside_probe_and_the_bind() {
        let mut obs = hardened();
        obs.config = Some(obs.config.unwrap().replace("\"loopback\"", "\"lan\""));
        obs.listeners[1].addr = "0.0.0.0".parse().unwrap();
        obs.nft = Some(String::new());
        let open = OutsideProbe {
            address: "10.0.0.5".into(),
            ports: vec![(18789, true, "connected: the port is open".into())],
        };
        assert_eq!(
            not_passing(&verdicts(&obs, &open)),
            vec![
                ("loopback_bind", Fail),
                ("outside_probe", Fail),
                ("firewall", Fail),
                ("listeners", Fail),
            ]
        );
    }

    #[tokio::test]
    async fn the_outside_probe_tells_an_open_port_from_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = outside_probe(
            "127.0.0.1",
            &[closed, open],
            std::time::Duration::from_secs(2),
        )
        .await;
        let by_port: std::collections::BTreeMap<u16, bool> =
            p.ports.iter().map(|(port, c, _)| (*port, *c)).collect();
        assert!(by_port[&open], "{p:?}");
        assert!(!by_port[&closed], "{p:?}");
    }

    /// `openclaw security audit --deep --json` as 2026.9.6 prints it (trimmed), after a line
    /// of noise on stderr and with a hostile escape sequence in a title.
    const OPENCLAW_OUTPUT: &str = r#"(node:812) ExperimentalWarning: SQLite is an experimental feature
{
  "ts": 1796000000000,
  "summary": {"critical": 1, "warn": 2, "info": 0},
  "findings": [
    {"checkId": "gateway.loopback_no_auth", "severity": "critical",
     "title": "Gateway auth missing on loopback\u001b[2J", "detail": "gateway.bind is loopback but no gateway auth secret is configured."},
    {"checkId": "gateway.trusted_proxies_missing", "severity": "warn",
     "title": "Reverse proxy headers are not trusted", "detail": "gateway.bind is loopback and gateway.trustedProxies is empty."},
    {"checkId": "tools.exec.security_full_configured", "severity": "warn",
     "title": "Exec security=full is configured", "detail": "tools.exec.security is full."}
  ],
  "deep": {"gateway": {"attempted": true, "url": "ws://127.0.0.1:18789", "ok": true, "error": null, "close": null}}
}
"#;

    fn with_openclaw(run: crate::inspect::scan::OpenclawRun) -> Vec<Check> {
        let mut p = params();
        p.openclaw_audit = true;
        let mut obs = hardened();
        obs.openclaw = Some(run);
        let f = findings(&obs, &p);
        checks(&obs, &p, &Facts::default(), &f, Some(&closed()))
    }

    fn by_id<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn openclaw_s_findings_stand_beside_rampart_s_checks_with_both_verdicts() {
        let c = with_openclaw(crate::inspect::scan::OpenclawRun::Ran {
            bin: "/usr/local/bin/openclaw".into(),
            output: OPENCLAW_OUTPUT.into(),
        });
        let oc = by_id(&c, "openclaw_audit");
        assert_eq!(oc.status, Fail);
        assert_eq!(
            oc.evidence[0],
            "/usr/local/bin/openclaw security audit --deep: 1 critical, 2 warn, 0 info"
        );
        assert_eq!(
            oc.evidence[1],
            "gateway.loopback_no_auth (critical): Gateway auth missing on loopback\\x1b[2J: \
             gateway.bind is loopback but no gateway auth secret is configured. [rampart auth_token: pass]"
        );
        // Beside rampart's pass: OpenClaw's critical finding, and both verdicts.
        let auth = by_id(&c, "auth_token");
        assert_eq!(auth.status, Pass);
        assert!(
            auth.evidence
                .last()
                .unwrap()
                .ends_with("verdicts differ: rampart pass, openclaw critical"),
            "{auth:?}"
        );
        assert!(
            by_id(&c, "exec_allowlist")
                .evidence
                .last()
                .unwrap()
                .contains("openclaw warn")
        );
        let running = by_id(&c, "agent_running");
        assert_eq!(
            running.evidence.last().unwrap(),
            "openclaw --deep probe of the gateway: ok"
        );
    }

    #[test]
    fn without_openclaw_its_audit_is_unknown_never_pass() {
        let c = with_openclaw(crate::inspect::scan::OpenclawRun::NotInstalled);
        let oc = by_id(&c, "openclaw_audit");
        assert_eq!(
            (oc.status, oc.evidence.clone()),
            (Unknown, vec!["unknown: openclaw not installed".to_string()])
        );
        let c = with_openclaw(crate::inspect::scan::OpenclawRun::Ran {
            bin: "/usr/local/bin/openclaw".into(),
            output: "Error: \u{1b}[31mconfig invalid\n".into(),
        });
        let oc = by_id(&c, "openclaw_audit");
        assert_eq!(oc.status, Unknown);
        assert_eq!(
            oc.evidence,
            vec![
                "unknown: /usr/local/bin/openclaw: no JSON in its output: Error: \\x1b[31mconfig invalid"
            ]
        );
    }
}
