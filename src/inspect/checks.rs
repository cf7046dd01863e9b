//! checks: the guide's security checklist and the baseline's key controls, per host, from the
//! scan, the findings and the outside probe. Each is pass, fail or unknown, with evidence.

use super::findings::{AgentConfig, AgentState, Auth, AuthProbe, agent_state, public_listeners};
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

/// A check's verdict and what it saw, one line each.
pub type Verdict = (CheckStatus, Vec<String>);

/// What every check looks at: the scan, the host's parameters and facts, the findings and
/// the outside probe, with the agent's config and live state read once for all of them.
pub struct Input<'a> {
    pub obs: &'a Observations,
    pub params: &'a ScanParams,
    pub facts: &'a Facts,
    pub findings: &'a [Finding],
    pub outside: Option<&'a OutsideProbe>,
    /// The agent's config as the scan read it (`None`: missing or not JSON).
    pub config: Option<AgentConfig>,
    /// The live look at the agent (`None`: the playbook has no agent).
    pub agent: Option<AgentState>,
}

impl<'a> Input<'a> {
    pub fn new(
        obs: &'a Observations,
        params: &'a ScanParams,
        facts: &'a Facts,
        findings: &'a [Finding],
        outside: Option<&'a OutsideProbe>,
    ) -> Self {
        Input {
            obs,
            params,
            facts,
            findings,
            outside,
            config: AgentConfig::read(obs),
            agent: agent_state(obs, params),
        }
    }

    /// Whether the playbook has an agent.
    fn has_agent(&self) -> bool {
        self.params.agent_user.is_some()
    }
}

/// One checklist item: its stable id, where it comes from, the checklist's words, and the
/// function that scores it.
pub struct CheckDef {
    pub id: &'static str,
    pub source: &'static str,
    pub title: &'static str,
    pub check: fn(&Input) -> Verdict,
}

const fn def(
    id: &'static str,
    source: &'static str,
    title: &'static str,
    check: fn(&Input) -> Verdict,
) -> CheckDef {
    CheckDef {
        id,
        source,
        title,
        check,
    }
}

const G: &str = "guide checklist";
const B: &str = "baseline";

/// The checklist, in the order reports show it. A new check is one function below and one
/// line here. (OpenClaw's own audit, `openclaw_audit`, follows them when it ran.)
#[rustfmt::skip]
pub const CHECKS: &[CheckDef] = &[
    def("auth_token", G, "Auth token set and strong (32+ chars)", auth_token),
    def("loopback_bind", G, "Gateway bound to localhost only", loopback_bind),
    def("exec_allowlist", G, "Exec mode set to `allowlist`", exec_allowlist),
    def("secrets_in_env", G, "Secrets in env vars, not files", secrets_in_env),
    def("gitignore", G, "`.gitignore` excludes all sensitive files", gitignore),
    def("unprivileged_user", G, "Running as unprivileged user", unprivileged),
    def("trusted_skills", G, "No skills from untrusted sources", trusted_skills),
    def("backups", G, "Backup strategy in place", backups),
    def("monitoring", G, "Monitoring/alerting configured", monitoring),
    def("incident_response", G, "Incident response plan documented", incident_response),
    def("agent_running", "guide §1", "The agent gateway runs and answers on loopback", agent_running),
    def("auth_enforced", "guide §2", "The gateway refuses requests without the token and takes the token", auth_enforced),
    def("agent_sandbox", "guide §7", "The agent's unit keeps its isolation (no loosening drop-in)", agent_sandbox),
    def("outside_probe", "guide §1", "The agent port is not reachable from outside", outside),
    def("ssh_root_login", B, "SSH root login off", ssh_root_login),
    def("ssh_password_login", B, "SSH password login off", ssh_password_login),
    def("firewall", B, "Firewall drops inbound by default", firewall),
    def("root_only_uid0", B, "root is the only account with uid 0", root_only_uid0),
    def("sudo_members", B, "Only the inventory's admins may sudo", sudo_members),
    def("ssh_keys", B, "Only the inventory's SSH keys are authorized", ssh_keys),
    def("listeners", B, "Only allowed ports listen off loopback", listeners),
    def("auto_updates", B, "Security updates install automatically", auto_updates),
];

/// The checklist for one host.
pub fn checks(
    obs: &Observations,
    params: &ScanParams,
    facts: &Facts,
    findings: &[Finding],
    outside: Option<&OutsideProbe>,
) -> Vec<Check> {
    let input = Input::new(obs, params, facts, findings, outside);
    let mut out: Vec<Check> = CHECKS
        .iter()
        .map(|d| {
            let (status, evidence) = (d.check)(&input);
            Check {
                id: d.id.into(),
                source: d.source.into(),
                title: d.title.into(),
                status,
                evidence,
            }
        })
        .collect();
    if params.openclaw_audit && input.has_agent() {
        openclaw_beside(&mut out, obs.openclaw.as_ref());
    }
    out
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

fn no_agent() -> Verdict {
    (
        Unknown,
        vec!["the playbook has no agent (agent_user is not set)".to_string()],
    )
}

/// Checks of the agent's config: unknown without an agent, a failure without a config rampart
/// can read, else `f`'s verdict.
fn with_config(i: &Input, f: impl FnOnce(&AgentConfig) -> Verdict) -> Verdict {
    if !i.has_agent() {
        return no_agent();
    }
    let Some(c) = &i.config else {
        let why = match (&i.obs.config_path, &i.params.agent_config) {
            (Some(p), _) if i.obs.truncated.iter().any(|t| t.section == "config") => format!(
                "{p} is larger than the scan reads ({} bytes): not checked",
                super::scan::FILE_LIMIT
            ),
            (Some(p), _) => format!("{p} is not JSON rampart can read"),
            (None, Some(p)) => format!("{p} does not exist"),
            (None, None) => "no agent config".into(),
        };
        return (Fail, vec![why]);
    };
    f(c)
}

/// A pass when no finding's id starts with `prefix` (with `clean` as evidence), else a
/// failure with the findings' evidence.
fn none_of(i: &Input, prefix: &str, clean: impl FnOnce() -> String) -> Verdict {
    let found = of(i.findings, prefix);
    if found.is_empty() {
        (Pass, vec![clean()])
    } else {
        (Fail, found)
    }
}

/// Guide checklist: the gateway's token, set and 32+ characters (literal or from the env file).
fn auth_token(i: &Input) -> Verdict {
    with_config(i, |c| match &c.auth {
        Auth::Missing(why) => (Fail, vec![format!("{}: {why}", c.path)]),
        Auth::Literal(n) => (
            if *n >= 32 { Pass } else { Fail },
            vec![format!("{}: a literal token of {n} characters", c.path)],
        ),
        Auth::Env(var) => {
            // The unit reads token.env, then agent.env: agent.env's value wins.
            let found = i.params.secret_files.iter().find_map(|f| {
                let vars = i.obs.env.get(f)?;
                let (_, len) = vars.iter().rev().find(|(n, _)| n == var)?;
                Some((f, *len))
            });
            match found {
                Some((file, len)) => (
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
                        i.params.secret_files.join(", ")
                    )],
                ),
            }
        }
    })
}

/// Guide checklist: the config binds loopback and nothing listens on the agent's port off it.
fn loopback_bind(i: &Input) -> Verdict {
    with_config(i, |c| {
        let exposed: Vec<String> = public_listeners(i.obs)
            .filter(|l| Some(l.port) == i.params.agent_port && l.proto == "tcp")
            .map(|l| format!("listening on {}", l.endpoint()))
            .collect();
        let status = match c.loopback {
            Some(false) => Fail,
            _ if !exposed.is_empty() => Fail,
            Some(true) => Pass,
            None => Unknown,
        };
        let mut ev = vec![format!("{}: {}", c.path, c.bind)];
        ev.extend(exposed);
        (status, ev)
    })
}

/// Guide checklist: exec security is `allowlist`.
fn exec_allowlist(i: &Input) -> Verdict {
    with_config(i, |c| match &c.exec_security {
        Some(s) if s == "allowlist" => (
            Pass,
            vec![format!("{}: exec security is \"allowlist\"", c.path)],
        ),
        Some(s) => (Fail, vec![format!("{}: exec security is {s:?}", c.path)]),
        None => (Fail, vec![format!("{}: exec security is not set", c.path)]),
    })
}

/// Guide checklist: no `secret.*` finding (plaintext secrets, loose secrets files).
fn secrets_in_env(i: &Input) -> Verdict {
    if !i.has_agent() {
        return no_agent();
    }
    none_of(i, "secret.", || {
        format!(
            "no secret-looking string in {} outside {}; secrets files not readable by others",
            i.params.agent_folders.join(", "),
            i.params.secret_files.join(", ")
        )
    })
}

/// Guide checklist: the agent's `.gitignore` lists every entry of the guide's (§3).
fn gitignore(i: &Input) -> Verdict {
    match (&i.obs.gitignore, &i.params.gitignore) {
        (_, None) => no_agent(),
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
    }
}

/// Guide checklist: no `skill.*` finding (every installed skill pinned).
fn trusted_skills(i: &Input) -> Verdict {
    if !i.has_agent() {
        return no_agent();
    }
    none_of(i, "skill.", || {
        let n: usize = i.obs.skills.values().map(Vec::len).sum();
        format!(
            "{n} skills installed, all pinned ({})",
            if i.params.pinned_skills.is_empty() {
                "none pinned".to_string()
            } else {
                i.params.pinned_skills.join(", ")
            }
        )
    })
}

/// Guide checklist: the agent's audit rules are written and loaded (unknown where the kernel
/// has no audit).
fn monitoring(i: &Input) -> Verdict {
    match (&i.params.agent_audit_rules, i.obs.audit_rules_file) {
        (None, _) => no_agent(),
        (Some(f), Some(false) | None) => (
            Fail,
            vec![format!("{f} is missing: no audit rules for the agent")],
        ),
        (Some(f), Some(true)) => match &i.obs.audit_loaded {
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
                    i.facts.virtualization
                )],
            ),
        },
    }
}

/// Guide checklist: the incident response document is in place and not empty.
fn incident_response(i: &Input) -> Verdict {
    match (&i.params.incident_doc, i.obs.incident_doc) {
        (None, _) => no_agent(),
        (Some(d), Some(true)) => (Pass, vec![format!("{d} is in place")]),
        (Some(d), _) => (Fail, vec![format!("{d} is missing or empty")]),
    }
}

/// Guide §1: the gateway's unit runs and it answers on loopback (issue 10: an apply that
/// "succeeds" while the gateway never starts).
fn agent_running(i: &Input) -> Verdict {
    match &i.agent {
        None => no_agent(),
        Some(a) if a.down.is_empty() => (Pass, a.evidence.clone()),
        Some(a) => {
            let mut ev = vec![format!("down: {}", a.down.join("; "))];
            ev.extend(a.evidence.iter().cloned());
            (Fail, ev)
        }
    }
}

/// Guide §2: a request without the token is refused, one with it taken.
fn auth_enforced(i: &Input) -> Verdict {
    match &i.agent {
        None => no_agent(),
        Some(a) => (
            match a.auth {
                AuthProbe::Enforced { .. } => Pass,
                AuthProbe::Unknown(_) => Unknown,
                _ => Fail,
            },
            vec![a.auth.evidence(a.port)],
        ),
    }
}

/// Guide §7: no `agent.unit_dropin` finding.
fn agent_sandbox(i: &Input) -> Verdict {
    match &i.params.agent_service {
        None => no_agent(),
        Some(unit) => none_of(i, "agent.unit_dropin", || {
            format!(
                "{unit}: no drop-in loosens its sandbox ({} drop-ins)",
                i.obs.dropins.len()
            )
        }),
    }
}

/// Guide §1 ("Verify you're not exposed"): the controller's connects to the forbidden ports.
fn outside(i: &Input) -> Verdict {
    match i.outside {
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
    }
}

fn sshd<'a>(i: &'a Input, key: &str) -> Option<&'a str> {
    i.obs.sshd.get(key).map(String::as_str)
}

/// Baseline: `sshd -T` says `permitrootlogin no`.
fn ssh_root_login(i: &Input) -> Verdict {
    match sshd(i, "permitrootlogin") {
        None => (Unknown, vec!["sshd -T gave no answer".to_string()]),
        Some(v) => (
            if v == "no" { Pass } else { Fail },
            vec![format!("sshd -T: permitrootlogin {v}")],
        ),
    }
}

/// Baseline: `sshd -T` turns password and keyboard-interactive logins off.
fn ssh_password_login(i: &Input) -> Verdict {
    match (
        sshd(i, "passwordauthentication"),
        sshd(i, "kbdinteractiveauthentication"),
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
    }
}

/// Baseline: nft's ruleset has an input chain with policy drop.
fn firewall(i: &Input) -> Verdict {
    let Some(rules) = &i.obs.nft else {
        return (Unknown, vec!["nft is not installed".to_string()]);
    };
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

/// Baseline: no `user.uid0` finding.
fn root_only_uid0(i: &Input) -> Verdict {
    none_of(i, "user.uid0", || {
        "/etc/passwd: only root has uid 0".to_string()
    })
}

/// Baseline: no `sudo.*` finding.
fn sudo_members(i: &Input) -> Verdict {
    none_of(i, "sudo.", || {
        let members: Vec<String> = i
            .obs
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
        format!("/etc/group: {}", members.join("; "))
    })
}

/// Baseline: no `ssh.unknown_key` finding (unknown when the inventory names no keys).
fn ssh_keys(i: &Input) -> Verdict {
    if i.params.known_keys.is_none() {
        return (
            Unknown,
            vec!["the inventory names no keys (admin_keys, authorized_keys_allow)".to_string()],
        );
    }
    none_of(i, "ssh.unknown_key", || {
        format!(
            "{} authorized keys, all known to the inventory",
            i.obs.keys.len()
        )
    })
}

/// Baseline: no `listener.*` finding.
fn listeners(i: &Input) -> Verdict {
    none_of(i, "listener.", || {
        format!(
            "off loopback: {}",
            public_listeners(i.obs)
                .map(|l| format!("{} {}", l.proto, l.endpoint()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Baseline: `20auto-upgrades` sets `Unattended-Upgrade "1"`.
fn auto_updates(i: &Input) -> Verdict {
    match &i.obs.upgrades {
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
    }
}

/// Guide checklist: the agent's unit runs as its own account: not root, not uid 0, in no
/// admin group, and the running process is not root's.
fn unprivileged(i: &Input) -> Verdict {
    let (obs, params) = (i.obs, i.params);
    let Some(unit) = &params.agent_service else {
        return no_agent();
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

/// Guide checklist: the backup timer is enabled and active and the newest backup is fresh
/// (at most `BACKUP_MAX_AGE`) and not empty.
fn backups(i: &Input) -> Verdict {
    let obs = i.obs;
    let (Some(timer), Some(folder)) = (&i.params.backup_timer, &i.params.backup_folder) else {
        return no_agent();
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
    let (status, evidence, report) = openclaw_verdict(checks, run);
    if let Some(r) = &report {
        beside(checks, r);
    }
    checks.push(Check {
        id: "openclaw_audit".into(),
        source: "openclaw security audit".into(),
        title: "OpenClaw's own security audit (--deep) finds nothing critical".into(),
        status,
        evidence,
    });
}

/// `openclaw_audit`'s verdict and evidence (each OpenClaw finding with the verdict of the
/// rampart check it speaks to), and the report when the audit's output could be read.
fn openclaw_verdict(
    checks: &[Check],
    run: Option<&super::scan::OpenclawRun>,
) -> (CheckStatus, Vec<String>, Option<OpenclawReport>) {
    use super::scan::OpenclawRun;
    match run {
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
    }
}

/// Next to each rampart check, the OpenClaw findings that speak to it, and both verdicts
/// where they differ.
fn beside(checks: &mut [Check], r: &OpenclawReport) {
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
pub(crate) mod tests {
    use super::*;
    use crate::inspect::findings::findings;
    use crate::inspect::scan::{AuthorizedKey, FileMode, Listener};

    pub(crate) fn params() -> ScanParams {
        let vars = serde_json::json!({
            "agent_user": "openclaw", "agent_port": "18789", "ssh_port": 22,
            "wireguard_port": 51820, "admin_user": "admin",
            "admin_keys": ["ssh-ed25519 AAAAgood admin@laptop"],
        });
        ScanParams::from_vars(vars.as_object().unwrap()).unwrap()
    }

    /// What the scan sees on a host site.yaml provisioned, on a kernel with audit.
    pub(crate) fn hardened() -> Observations {
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

    pub(crate) fn closed() -> OutsideProbe {
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
    pub(crate) const OPENCLAW_OUTPUT: &str = r#"(node:812) ExperimentalWarning: SQLite is an experimental feature
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

    /// One case of one check: the hardened host changed by `given`, and the verdict with its
    /// first line of evidence, exactly.
    struct Case {
        check: &'static str,
        given: fn(&mut Observations, &mut ScanParams, &mut Option<OutsideProbe>),
        status: CheckStatus,
        evidence: &'static str,
    }

    const CFG: &str = "/home/openclaw/.openclaw/openclaw.json";
    const NO_AGENT: &str = "the playbook has no agent (agent_user is not set)";

    fn no_agent_params(_: &mut Observations, p: &mut ScanParams, _: &mut Option<OutsideProbe>) {
        let vars = serde_json::json!({"ssh_port": 22});
        *p = ScanParams::from_vars(vars.as_object().unwrap()).unwrap();
    }

    fn set_config(o: &mut Observations, json: &str) {
        o.config = Some(json.into());
    }

    fn case(
        check: &'static str,
        given: fn(&mut Observations, &mut ScanParams, &mut Option<OutsideProbe>),
        status: CheckStatus,
        evidence: &'static str,
    ) -> Case {
        Case {
            check,
            given,
            status,
            evidence,
        }
    }

    /// Every check's branches, each as data. (Checks that read findings see the findings of
    /// the same observations, as on a host.)
    fn cases() -> Vec<Case> {
        vec![
            // auth_token
            case(
                "auth_token",
                |_, _, _| {},
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: ${AGENT_AUTH_TOKEN}; AGENT_AUTH_TOKEN in /etc/openclaw/token.env: 64 characters",
            ),
            case(
                "auth_token",
                |o, _, _| {
                    o.env.insert(
                        "/etc/openclaw/agent.env".into(),
                        vec![("AGENT_AUTH_TOKEN".into(), 31)],
                    );
                },
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: ${AGENT_AUTH_TOKEN}; AGENT_AUTH_TOKEN in /etc/openclaw/agent.env: 31 characters",
            ),
            case(
                "auth_token",
                |o, _, _| o.env.clear(),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: ${AGENT_AUTH_TOKEN}, but no env file sets AGENT_AUTH_TOKEN (/etc/openclaw/agent.env, /etc/openclaw/token.env)",
            ),
            case(
                "auth_token",
                |o, _, _| {
                    set_config(
                        o,
                        r#"{"gateway": {"auth": {"mode": "token", "token": "abc"}}}"#,
                    )
                },
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: a literal token of 3 characters",
            ),
            case(
                "auth_token",
                |o, _, _| {
                    set_config(
                        o,
                        r#"{"gateway": {"authToken": "abcdefghijabcdefghijabcdefghijab"}}"#,
                    )
                },
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: a literal token of 32 characters",
            ),
            case(
                "auth_token",
                |o, _, _| set_config(o, r#"{"gateway": {"auth": {"mode": "none"}}}"#),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: gateway.auth.mode is \"none\"",
            ),
            case(
                "auth_token",
                |o, _, _| set_config(o, r#"{"gateway": {}}"#),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: neither gateway.auth nor gateway.authToken is set",
            ),
            case(
                "auth_token",
                |o, _, _| {
                    o.config = None;
                    o.config_path = None;
                },
                Fail,
                "/home/openclaw/.openclaw/openclaw.json does not exist",
            ),
            case(
                "auth_token",
                |o, _, _| set_config(o, "not json"),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json is not JSON rampart can read",
            ),
            case(
                "auth_token",
                |o, _, _| {
                    o.config = None;
                    o.truncated.push(crate::inspect::scan::Truncated {
                        section: "config".into(),
                        path: CFG.into(),
                        size: 9_999_999,
                    });
                },
                Fail,
                "/home/openclaw/.openclaw/openclaw.json is larger than the scan reads (1048576 bytes): not checked",
            ),
            case("auth_token", no_agent_params, Unknown, NO_AGENT),
            // loopback_bind
            case(
                "loopback_bind",
                |_, _, _| {},
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: gateway.bind is \"loopback\"",
            ),
            case(
                "loopback_bind",
                |o, _, _| set_config(o, r#"{"gateway": {"host": "localhost"}}"#),
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: gateway.host is \"localhost\"",
            ),
            case(
                "loopback_bind",
                |o, _, _| set_config(o, r#"{"gateway": {"bind": "lan"}}"#),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: gateway.bind is \"lan\"",
            ),
            case(
                "loopback_bind",
                |o, _, _| {
                    set_config(
                        o,
                        r#"{"gateway": {"bind": "custom", "customBindHost": "10.0.0.1"}}"#,
                    )
                },
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: gateway.bind is \"custom\"",
            ),
            // The config says loopback, but the port listens off it: a failure.
            case(
                "loopback_bind",
                |o, _, _| o.listeners[1].addr = "0.0.0.0".parse().unwrap(),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: gateway.bind is \"loopback\"",
            ),
            case(
                "loopback_bind",
                |o, _, _| set_config(o, r#"{"gateway": {}}"#),
                Unknown,
                "/home/openclaw/.openclaw/openclaw.json: gateway.bind/host not set",
            ),
            case("loopback_bind", no_agent_params, Unknown, NO_AGENT),
            // exec_allowlist
            case(
                "exec_allowlist",
                |_, _, _| {},
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: exec security is \"allowlist\"",
            ),
            case(
                "exec_allowlist",
                |o, _, _| set_config(o, r#"{"exec": {"security": "allowlist"}}"#),
                Pass,
                "/home/openclaw/.openclaw/openclaw.json: exec security is \"allowlist\"",
            ),
            case(
                "exec_allowlist",
                |o, _, _| set_config(o, r#"{"tools": {"exec": {"security": "full"}}}"#),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: exec security is \"full\"",
            ),
            case(
                "exec_allowlist",
                |o, _, _| set_config(o, "{}"),
                Fail,
                "/home/openclaw/.openclaw/openclaw.json: exec security is not set",
            ),
            case("exec_allowlist", no_agent_params, Unknown, NO_AGENT),
            // secrets_in_env
            case(
                "secrets_in_env",
                |_, _, _| {},
                Pass,
                "no secret-looking string in /home/openclaw, /etc/openclaw outside /etc/openclaw/agent.env, /etc/openclaw/token.env; secrets files not readable by others",
            ),
            case(
                "secrets_in_env",
                |o, _, _| {
                    o.secret_hits.push(crate::inspect::scan::SecretHit {
                        kind: "Anthropic API key".into(),
                        lines: "3".into(),
                        path: "/home/openclaw/notes.md".into(),
                    })
                },
                Fail,
                "/home/openclaw/notes.md (secret.plaintext): line 3: Anthropic API key",
            ),
            case(
                "secrets_in_env",
                |o, _, _| o.modes[0].mode = 0o604,
                Fail,
                "/etc/openclaw/agent.env (secret.readable): /etc/openclaw/agent.env mode 0604 root:root",
            ),
            case("secrets_in_env", no_agent_params, Unknown, NO_AGENT),
            // gitignore
            case(
                "gitignore",
                |_, _, _| {},
                Pass,
                "/home/openclaw/.openclaw/workspace/.gitignore lists config.json *.env .env* secrets/ *.key *.pem",
            ),
            case(
                "gitignore",
                |o, _, _| o.gitignore = Some("  config.json  \n*.env\n*.pem\n".into()),
                Fail,
                "/home/openclaw/.openclaw/workspace/.gitignore lacks .env* secrets/ *.key",
            ),
            case(
                "gitignore",
                |o, _, _| o.gitignore = None,
                Fail,
                "/home/openclaw/.openclaw/workspace/.gitignore does not exist",
            ),
            case("gitignore", no_agent_params, Unknown, NO_AGENT),
            // unprivileged_user
            case(
                "unprivileged_user",
                |_, _, _| {},
                Pass,
                "openclaw-gateway.service: User=openclaw",
            ),
            case(
                "unprivileged_user",
                |o, _, _| {
                    o.service.insert("User".into(), String::new());
                },
                Fail,
                "openclaw-gateway.service: User=(root)",
            ),
            case(
                "unprivileged_user",
                |o, _, _| {
                    o.service.insert("User".into(), "root".into());
                },
                Fail,
                "openclaw-gateway.service: User=root",
            ),
            case(
                "unprivileged_user",
                |o, _, _| o.users[1].1 = 0,
                Fail,
                "openclaw-gateway.service: User=openclaw",
            ),
            case(
                "unprivileged_user",
                |o, _, _| {
                    o.admin_groups
                        .insert("wheel".into(), vec!["openclaw".into()]);
                },
                Fail,
                "openclaw-gateway.service: User=openclaw",
            ),
            case(
                "unprivileged_user",
                |o, _, _| {
                    o.service.insert("ProcessUser".into(), "root".into());
                },
                Fail,
                "openclaw-gateway.service: User=openclaw",
            ),
            case(
                "unprivileged_user",
                |o, _, _| {
                    o.service.insert("LoadState".into(), "not-found".into());
                },
                Unknown,
                "openclaw-gateway.service is not installed (LoadState=not-found)",
            ),
            case("unprivileged_user", no_agent_params, Unknown, NO_AGENT),
            // trusted_skills
            case(
                "trusted_skills",
                |_, _, _| {},
                Pass,
                "0 skills installed, all pinned (none pinned)",
            ),
            case(
                "trusted_skills",
                |o, p, _| {
                    o.skills.insert("/s".into(), vec!["weather".into()]);
                    p.pinned_skills = vec!["weather".into()];
                },
                Pass,
                "1 skills installed, all pinned (weather)",
            ),
            case(
                "trusted_skills",
                |o, _, _| {
                    o.skills.insert("/s".into(), vec!["wallet".into()]);
                },
                Fail,
                "/s/wallet (skill.unpinned): /s/wallet; pinned: none",
            ),
            case("trusted_skills", no_agent_params, Unknown, NO_AGENT),
            // backups
            case(
                "backups",
                |_, _, _| {},
                Pass,
                "openclaw-backup.timer: enabled, active",
            ),
            case(
                "backups",
                |o, _, _| o.backup_timer = Some(("disabled".into(), "inactive".into())),
                Fail,
                "openclaw-backup.timer: disabled, inactive",
            ),
            case(
                "backups",
                |o, _, _| o.backup_timer = None,
                Fail,
                "openclaw-backup.timer: no answer",
            ),
            case(
                "backups",
                |o, _, _| {
                    o.backup_latest = Some((o.now.unwrap() - BACKUP_MAX_AGE - 1, 9, "/b/x".into()))
                },
                Fail,
                "openclaw-backup.timer: enabled, active",
            ),
            case("backups", no_agent_params, Unknown, NO_AGENT),
            // monitoring
            case(
                "monitoring",
                |_, _, _| {},
                Pass,
                "/etc/audit/rules.d/61-rampart-agent.rules: 1 agent rules loaded (auditctl -l)",
            ),
            case(
                "monitoring",
                |o, _, _| o.audit_loaded = Some("-w /etc -k other\n".into()),
                Fail,
                "/etc/audit/rules.d/61-rampart-agent.rules exists but auditctl -l lists no agent rule",
            ),
            case(
                "monitoring",
                |o, _, _| o.audit_rules_file = Some(false),
                Fail,
                "/etc/audit/rules.d/61-rampart-agent.rules is missing: no audit rules for the agent",
            ),
            case(
                "monitoring",
                |o, _, _| o.audit_loaded = None,
                Unknown,
                "/etc/audit/rules.d/61-rampart-agent.rules is written, but audit is unavailable here (): rules not loaded",
            ),
            case("monitoring", no_agent_params, Unknown, NO_AGENT),
            // incident_response
            case(
                "incident_response",
                |_, _, _| {},
                Pass,
                "/usr/local/share/doc/rampart/incident-response.md is in place",
            ),
            case(
                "incident_response",
                |o, _, _| o.incident_doc = Some(false),
                Fail,
                "/usr/local/share/doc/rampart/incident-response.md is missing or empty",
            ),
            case(
                "incident_response",
                |o, _, _| o.incident_doc = None,
                Fail,
                "/usr/local/share/doc/rampart/incident-response.md is missing or empty",
            ),
            case("incident_response", no_agent_params, Unknown, NO_AGENT),
            // agent_running
            case(
                "agent_running",
                |_, _, _| {},
                Pass,
                "openclaw-gateway.service: active (running), main process up 3600 s",
            ),
            case(
                "agent_running",
                |o, _, _| {
                    o.agent_http.insert("health".into(), "500".into());
                },
                Fail,
                "down: GET /health: 500",
            ),
            case(
                "agent_running",
                |o, _, _| {
                    o.service.insert("LoadState".into(), "not-found".into());
                },
                Fail,
                "down: the unit is not installed",
            ),
            case("agent_running", no_agent_params, Unknown, NO_AGENT),
            // auth_enforced
            case(
                "auth_enforced",
                |_, _, _| {},
                Pass,
                "POST http://127.0.0.1:18789/tools/invoke: 401 without the token, 400 with it",
            ),
            case(
                "auth_enforced",
                |o, _, _| {
                    o.agent_http.insert("noauth".into(), "200".into());
                },
                Fail,
                "POST http://127.0.0.1:18789/tools/invoke without the token: 200, accepted",
            ),
            case(
                "auth_enforced",
                |o, _, _| {
                    o.agent_http.insert("auth".into(), "403".into());
                },
                Fail,
                "POST http://127.0.0.1:18789/tools/invoke: 401 without the token, 403 with the env file's token: it is refused",
            ),
            case(
                "auth_enforced",
                |o, _, _| {
                    o.agent_http.insert("auth".into(), "timeout".into());
                },
                Unknown,
                "the gateway gave no HTTP answer to a request with the token (timeout): whether it takes the token is unknown",
            ),
            case(
                "auth_enforced",
                |o, _, _| {
                    o.agent_http.clear();
                },
                Unknown,
                "the live check did not run",
            ),
            case("auth_enforced", no_agent_params, Unknown, NO_AGENT),
            // agent_sandbox
            case(
                "agent_sandbox",
                |_, _, _| {},
                Pass,
                "openclaw-gateway.service: no drop-in loosens its sandbox (0 drop-ins)",
            ),
            case(
                "agent_sandbox",
                |o, _, _| {
                    o.dropins = vec![crate::inspect::scan::DropIn {
                        path: "/etc/d/nice.conf".into(),
                        settings: vec![("Nice".into(), "5".into())],
                    }]
                },
                Pass,
                "openclaw-gateway.service: no drop-in loosens its sandbox (1 drop-ins)",
            ),
            case(
                "agent_sandbox",
                |o, _, _| {
                    o.dropins = vec![crate::inspect::scan::DropIn {
                        path: "/etc/d/a.conf".into(),
                        settings: vec![("PrivateTmp".into(), "no".into())],
                    }]
                },
                Fail,
                "/etc/d/a.conf (agent.unit_dropin): PrivateTmp=no: turned off",
            ),
            case("agent_sandbox", no_agent_params, Unknown, NO_AGENT),
            // outside_probe
            case(
                "outside_probe",
                |_, _, _| {},
                Pass,
                "from the controller to 10.0.0.5:18789: closed (connection refused)",
            ),
            case(
                "outside_probe",
                |_, _, x| {
                    x.as_mut().unwrap().ports.push((
                        2375,
                        true,
                        "connected: the port is open".into(),
                    ))
                },
                Fail,
                "from the controller to 10.0.0.5:18789: closed (connection refused)",
            ),
            case(
                "outside_probe",
                |_, _, x| x.as_mut().unwrap().ports.clear(),
                Unknown,
                "no port to probe: agent_port and forbidden_ports are not set",
            ),
            case(
                "outside_probe",
                |_, _, x| *x = None,
                Unknown,
                "no outside probe was made",
            ),
            // ssh_root_login
            case(
                "ssh_root_login",
                |_, _, _| {},
                Pass,
                "sshd -T: permitrootlogin no",
            ),
            case(
                "ssh_root_login",
                |o, _, _| {
                    o.sshd
                        .insert("permitrootlogin".into(), "without-password".into());
                },
                Fail,
                "sshd -T: permitrootlogin without-password",
            ),
            case(
                "ssh_root_login",
                |o, _, _| o.sshd.clear(),
                Unknown,
                "sshd -T gave no answer",
            ),
            // ssh_password_login
            case(
                "ssh_password_login",
                |_, _, _| {},
                Pass,
                "sshd -T: passwordauthentication no, kbdinteractiveauthentication no",
            ),
            case(
                "ssh_password_login",
                |o, _, _| {
                    o.sshd.remove("kbdinteractiveauthentication");
                },
                Pass,
                "sshd -T: passwordauthentication no, kbdinteractiveauthentication no",
            ),
            case(
                "ssh_password_login",
                |o, _, _| {
                    o.sshd
                        .insert("kbdinteractiveauthentication".into(), "yes".into());
                },
                Fail,
                "sshd -T: passwordauthentication no, kbdinteractiveauthentication yes",
            ),
            case(
                "ssh_password_login",
                |o, _, _| {
                    o.sshd.insert("passwordauthentication".into(), "yes".into());
                },
                Fail,
                "sshd -T: passwordauthentication yes, kbdinteractiveauthentication no",
            ),
            case(
                "ssh_password_login",
                |o, _, _| o.sshd.clear(),
                Unknown,
                "sshd -T gave no answer",
            ),
            // firewall
            case(
                "firewall",
                |_, _, _| {},
                Pass,
                "nft list ruleset: an input chain with policy drop",
            ),
            case(
                "firewall",
                |o, _, _| {
                    o.nft = Some("table inet f {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n}\n".into())
                },
                Fail,
                "nft list ruleset: no input chain with policy drop",
            ),
            // A drop policy on the output hook is not an inbound default.
            case(
                "firewall",
                |o, _, _| {
                    o.nft = Some(
                        "chain output { type filter hook output priority 0; policy drop; }\n"
                            .into(),
                    )
                },
                Fail,
                "nft list ruleset: no input chain with policy drop",
            ),
            case(
                "firewall",
                |o, _, _| o.nft = Some(" \n".into()),
                Fail,
                "nft list ruleset is empty: nothing is filtered",
            ),
            case(
                "firewall",
                |o, _, _| o.nft = None,
                Unknown,
                "nft is not installed",
            ),
            // root_only_uid0
            case(
                "root_only_uid0",
                |_, _, _| {},
                Pass,
                "/etc/passwd: only root has uid 0",
            ),
            case(
                "root_only_uid0",
                |o, _, _| {
                    o.users
                        .push(("toor".into(), 0, "/root".into(), "/bin/sh".into()))
                },
                Fail,
                "user toor (user.uid0): /etc/passwd: toor uid 0, home /root, shell /bin/sh",
            ),
            // sudo_members
            case(
                "sudo_members",
                |_, _, _| {},
                Pass,
                "/etc/group: sudo: admin",
            ),
            case(
                "sudo_members",
                |o, _, _| {
                    o.admin_groups.insert("wheel".into(), vec![]);
                },
                Pass,
                "/etc/group: sudo: admin; wheel: -",
            ),
            case(
                "sudo_members",
                |o, _, _| {
                    o.admin_groups.insert("wheel".into(), vec!["eve".into()]);
                },
                Fail,
                "wheel: eve (sudo.member): /etc/group: eve is in wheel; expected: admin (sudo_allow adds more)",
            ),
            // ssh_keys
            case(
                "ssh_keys",
                |_, _, _| {},
                Pass,
                "1 authorized keys, all known to the inventory",
            ),
            case(
                "ssh_keys",
                |o, _, _| o.keys[0].blob = "AAAAevil".into(),
                Fail,
                "/home/admin/.ssh/authorized_keys:1 (ssh.unknown_key): /home/admin/.ssh/authorized_keys may log in as admin with ssh-ed25519 AAAAevil",
            ),
            case(
                "ssh_keys",
                |_, p, _| p.known_keys = None,
                Unknown,
                "the inventory names no keys (admin_keys, authorized_keys_allow)",
            ),
            // listeners
            case(
                "listeners",
                |_, _, _| {},
                Pass,
                "off loopback: tcp 0.0.0.0:22",
            ),
            case(
                "listeners",
                |o, _, _| {
                    o.listeners.push(crate::inspect::scan::Listener {
                        proto: "tcp",
                        addr: "::".parse().unwrap(),
                        port: 8080,
                        process: None,
                    })
                },
                Fail,
                "tcp [::]:8080 (listener.unexpected): tcp LISTEN [::]:8080",
            ),
            // auto_updates
            case(
                "auto_updates",
                |_, _, _| {},
                Pass,
                "/etc/apt/apt.conf.d/20auto-upgrades: Unattended-Upgrade \"1\"",
            ),
            case(
                "auto_updates",
                |o, _, _| o.upgrades = Some("APT::Periodic::Unattended-Upgrade \"0\";\n".into()),
                Fail,
                "/etc/apt/apt.conf.d/20auto-upgrades: Unattended-Upgrade not \"1\"",
            ),
            case(
                "auto_updates",
                |o, _, _| o.upgrades = None,
                Fail,
                "/etc/apt/apt.conf.d/20auto-upgrades does not exist",
            ),
        ]
    }

    #[test]
    fn each_check_function_gives_its_verdict_case_by_case() {
        let mut failures = Vec::new();
        for (n, c) in cases().iter().enumerate() {
            let def = CHECKS
                .iter()
                .find(|d| d.id == c.check)
                .unwrap_or_else(|| panic!("case {n}: no check {}", c.check));
            let (mut obs, mut p, mut outside) = (hardened(), params(), Some(closed()));
            (c.given)(&mut obs, &mut p, &mut outside);
            let f = findings(&obs, &p);
            let facts = Facts::default();
            let input = Input::new(&obs, &p, &facts, &f, outside.as_ref());
            let (status, evidence) = (def.check)(&input);
            if status != c.status || evidence.first().map(String::as_str) != Some(c.evidence) {
                failures.push(format!(
                    "case {n} ({}): want {:?} {:?}\n    got {status:?} {evidence:?}",
                    c.check, c.status, c.evidence
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_check_has_cases_for_each_verdict_it_can_give() {
        let cases = cases();
        for d in CHECKS {
            let of_check: Vec<CheckStatus> = cases
                .iter()
                .filter(|c| c.check == d.id)
                .map(|c| c.status)
                .collect();
            assert!(of_check.contains(&Pass), "{}: no passing case", d.id);
            assert!(of_check.contains(&Fail), "{}: no failing case", d.id);
        }
    }

    #[test]
    fn the_table_has_unique_ids_and_the_report_order() {
        let ids: Vec<&str> = CHECKS.iter().map(|d| d.id).collect();
        let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        // Reports, the JSON and the tests name checks by these ids, in this order.
        assert_eq!(
            ids,
            [
                "auth_token",
                "loopback_bind",
                "exec_allowlist",
                "secrets_in_env",
                "gitignore",
                "unprivileged_user",
                "trusted_skills",
                "backups",
                "monitoring",
                "incident_response",
                "agent_running",
                "auth_enforced",
                "agent_sandbox",
                "outside_probe",
                "ssh_root_login",
                "ssh_password_login",
                "firewall",
                "root_only_uid0",
                "sudo_members",
                "ssh_keys",
                "listeners",
                "auto_updates",
            ]
        );
    }
}
