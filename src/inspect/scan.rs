//! scan: the read-only look at a host that `drift` and `audit` add to the probe's round trip.
//!
//! [`ScanParams`] come from the host's variables (the playbook's defaults and the inventory):
//! the agent's user, port and folders, the ports allowed to listen, the admins, the keys the
//! inventory knows. [`ScanParams::script`] is POSIX sh that only reads: it prints sections
//! (`<marker> name args`, then raw lines) that [`parse`] turns into [`Observations`]. No
//! secret value leaves the host: for secrets the script prints names, paths, line numbers and
//! lengths, never content.
//!
//! The host's output is the attacker's: the script reads at most [`FILE_LIMIT`] bytes of any
//! file (and says when a file was longer), caps listings, and [`parse`] takes any bytes
//! without panicking (a proptest feeds it junk).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::remote::Script;

/// Secret-looking strings (name, POSIX extended regular expression). `playbooks/
/// agent-gateway.yaml` quarantines files matching the same list (`secret_patterns`); a unit
/// test keeps the two equal.
pub const SECRET_PATTERNS: &[(&str, &str)] = &[
    ("Anthropic API key", "sk-ant-[A-Za-z0-9_-]{16,}"),
    (
        "OpenAI API key",
        "sk-proj-[A-Za-z0-9_-]{20,}|(^|[^A-Za-z0-9_-])sk-[A-Za-z0-9]{20,}",
    ),
    (
        "GitHub token",
        "gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}",
    ),
    ("AWS access key", "(AKIA|ASIA)[A-Z0-9]{16}"),
    ("Slack token", "xox[abprs]-[A-Za-z0-9-]{10,}"),
    ("private key", "-----BEGIN ([A-Z0-9]+ )?PRIVATE KEY-----"),
];

/// The most the scan reads of any one file (`head -c`); a longer file gets a `truncated`
/// section with its real size.
pub const FILE_LIMIT: u64 = 1024 * 1024;

/// The most entries the scan lists of a folder (skills), and the most lines of a listing
/// (loose secrets files).
pub const LIST_LIMIT: usize = 1000;

/// What the scan looks for on one host, from its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanParams {
    /// The agent's user: `openclaw`. Without it (a playbook without the agent) the agent's
    /// parts are not scanned.
    pub agent_user: Option<String>,
    pub agent_port: Option<u16>,
    /// The agent's config file, by flavour.
    pub agent_config: Option<String>,
    pub agent_service: Option<String>,
    /// Folders searched for plaintext secrets and loose secrets files.
    pub agent_folders: Vec<String>,
    /// Where skills live; each entry a skill.
    pub skill_folders: Vec<String>,
    /// Skills the inventory pins (`agent_skills`' keys).
    pub pinned_skills: Vec<String>,
    /// The env files secrets belong in (exempt from the plaintext search).
    pub secret_files: Vec<String>,
    pub gitignore: Option<String>,
    pub backup_timer: Option<String>,
    pub backup_folder: Option<String>,
    pub incident_doc: Option<String>,
    pub agent_audit_rules: Option<String>,
    /// Ports that may listen on non-loopback addresses.
    pub allowed_tcp: Vec<u16>,
    pub allowed_udp: Vec<u16>,
    /// Ports the outside probe must find closed (the agent's above all).
    pub forbidden_ports: Vec<u16>,
    /// Members of sudo/wheel/admin the inventory expects.
    pub sudo_users: Vec<String>,
    /// Public keys the inventory knows (`type base64`), matched by their base64 blob.
    /// `None`: the inventory names none, so unknown keys cannot be told apart.
    pub known_keys: Option<Vec<String>>,
    pub patterns: Vec<(String, String)>,
    /// The env variable that holds the gateway's token (`agent_token_var`, default
    /// `AGENT_AUTH_TOKEN`): read on the host from [`Self::secret_files`] for the live auth check.
    pub agent_token_var: String,
    /// `audit` only: run OpenClaw's own `openclaw security audit --deep --json` on the host.
    pub openclaw_audit: bool,
    /// Paths the playbook's steps write (files and folders): the way to each is checked for
    /// symbolic links planted where root must not follow them. Set by the fleet from the
    /// steps, not from variables.
    pub managed_paths: Vec<String>,
}

fn string(vars: &Map<String, Value>, key: &str) -> Option<String> {
    match vars.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(vars: &Map<String, Value>, key: &str) -> Vec<String> {
    match vars.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
        _ => Vec::new(),
    }
}

fn port(vars: &Map<String, Value>, key: &str) -> Result<Option<u16>, String> {
    match string(vars, key) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("variable `{key}` is {s:?}, not a port number")),
    }
}

fn ports(vars: &Map<String, Value>, key: &str) -> Result<Vec<u16>, String> {
    strings(vars, key)
        .into_iter()
        .map(|s| {
            s.parse()
                .map_err(|_| format!("variable `{key}` holds {s:?}, not a port number"))
        })
        .collect()
}

impl ScanParams {
    /// The scan's parameters from a host's variables. Variables the playbooks define
    /// (`agent_user`, `agent_port`, `agent_flavor`, `ssh_port`, `wireguard_port`, `admin_user`,
    /// `admin_keys`, `agent_skills`, `secret_patterns`) plus ones only for the scan:
    /// `listen_allow_tcp`, `listen_allow_udp`, `forbidden_ports`, `sudo_allow`,
    /// `authorized_keys_allow`.
    pub fn from_vars(vars: &Map<String, Value>) -> Result<ScanParams, String> {
        let agent_user = string(vars, "agent_user");
        let agent_port = port(vars, "agent_port")?;
        let flavor = string(vars, "agent_flavor").unwrap_or_else(|| "openclaw".into());
        let home = agent_user.as_ref().map(|u| format!("/home/{u}"));
        let state = home.as_ref().map(|h| format!("{h}/.openclaw"));
        let etc = agent_user.as_ref().map(|u| format!("/etc/{u}"));

        let mut allowed_tcp = vec![port(vars, "ssh_port")?.unwrap_or(22)];
        allowed_tcp.extend(ports(vars, "listen_allow_tcp")?);
        let mut allowed_udp = Vec::new();
        if let Some(p) = port(vars, "wireguard_port")? {
            allowed_udp.push(p);
        }
        allowed_udp.extend(ports(vars, "listen_allow_udp")?);
        let mut forbidden_ports: Vec<u16> = agent_port.into_iter().collect();
        forbidden_ports.extend(ports(vars, "forbidden_ports")?);
        forbidden_ports.sort_unstable();
        forbidden_ports.dedup();

        let mut sudo_users: Vec<String> = string(vars, "admin_user").into_iter().collect();
        sudo_users.extend(strings(vars, "sudo_allow"));

        let mut keys = strings(vars, "admin_keys");
        keys.extend(strings(vars, "authorized_keys_allow"));
        keys.extend(string(vars, "login_public_key"));
        let known_keys = (!keys.is_empty()).then_some(keys);

        let pinned_skills = match vars.get("agent_skills") {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("name").and_then(|n| n.as_str()).map(String::from),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };

        let patterns = match vars.get("secret_patterns") {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect(),
            _ => SECRET_PATTERNS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };

        Ok(ScanParams {
            agent_config: state.as_ref().map(|s| {
                if flavor == "starter" {
                    format!("{s}/config.json")
                } else {
                    format!("{s}/openclaw.json")
                }
            }),
            agent_service: agent_user.as_ref().map(|u| format!("{u}-gateway.service")),
            agent_folders: home.iter().chain(&etc).cloned().collect(),
            skill_folders: state
                .iter()
                .flat_map(|s| [format!("{s}/skills"), format!("{s}/workspace/skills")])
                .collect(),
            pinned_skills,
            secret_files: etc
                .iter()
                .flat_map(|e| [format!("{e}/agent.env"), format!("{e}/token.env")])
                .collect(),
            gitignore: state.as_ref().map(|s| format!("{s}/workspace/.gitignore")),
            backup_timer: agent_user.as_ref().map(|u| format!("{u}-backup.timer")),
            backup_folder: agent_user.as_ref().map(|u| format!("/var/backups/{u}")),
            incident_doc: string(vars, "incident_response_doc").or_else(|| {
                agent_user
                    .as_ref()
                    .map(|_| "/usr/local/share/doc/rampart/incident-response.md".to_string())
            }),
            agent_audit_rules: agent_user
                .as_ref()
                .map(|_| "/etc/audit/rules.d/61-rampart-agent.rules".to_string()),
            agent_user,
            agent_port,
            allowed_tcp,
            allowed_udp,
            forbidden_ports,
            sudo_users,
            known_keys,
            patterns,
            agent_token_var: string(vars, "agent_token_var")
                .unwrap_or_else(|| "AGENT_AUTH_TOKEN".to_string()),
            openclaw_audit: false,
            managed_paths: Vec::new(),
        })
    }

    /// The scan script. `marker` starts each section's header line.
    pub fn script(&self, marker: &str) -> Script {
        let mut s = Script::new()
            .raw("PATH=\"$PATH:/usr/sbin:/sbin\"\nM=")
            .arg(marker)
            .raw("\nSANDBOX_PROPS=")
            .arg(&SANDBOX_KEYS.join(","))
            .raw(&format!("\nL={FILE_LIMIT}\nN={LIST_LIMIT}\n"))
            // The walk that refuses planted links (fsfile's): the agent's folders are read
            // through it, as whoever controls them.
            .raw(crate::resource::fsfile::WALK)
            .raw(SCAN_FUNCTIONS);
        let call = |s: Script, f: &str, args: &[&str]| {
            let mut s = s.raw(f);
            for a in args {
                s = s.raw(" ").arg(a);
            }
            s.raw("\n")
        };
        s = s
            .raw("EXEMPT=")
            .arg(&self.secret_files.join(" "))
            .raw("\n")
            .raw(SCAN_HOST);
        if let Some(c) = &self.agent_config {
            s = call(s, "agent_file_section config", &[c]);
        }
        for f in &self.secret_files {
            s = call(s, "env_lengths", &[f]);
        }
        let mut find_args: Vec<&str> = Vec::new();
        for dir in &self.agent_folders {
            find_args.push(dir);
        }
        if !find_args.is_empty() {
            for (name, pattern) in &self.patterns {
                let mut args = vec![name.as_str(), pattern.as_str()];
                args.extend(find_args.iter().copied());
                s = call(s, "secret_search", &args);
            }
            s = call(s, "loose_secrets", &find_args);
            s = call(s, "odd_names", &find_args);
        }
        for f in &self.secret_files {
            s = call(s, "mode_of", &[f]);
        }
        for dir in &self.skill_folders {
            s = call(s, "agent_list_dir skills", &[dir]);
        }
        if let Some(unit) = &self.agent_service {
            s = call(s, "service_section", &[unit]);
            s = s.raw(DROPIN_SECTION);
            s = call(s, "dropin_section", &[unit]);
            if let Some(port) = self.agent_port {
                let port = port.to_string();
                let mut args = vec![unit.as_str(), port.as_str(), self.agent_token_var.as_str()];
                args.extend(self.secret_files.iter().map(String::as_str));
                s = s.raw(AGENT_RUNTIME);
                s = call(s, "agent_runtime", &args);
                if self.openclaw_audit
                    && let Some(user) = &self.agent_user
                {
                    let mut args = vec![unit.as_str(), user.as_str()];
                    args.extend(self.secret_files.iter().map(String::as_str));
                    s = s.raw(OPENCLAW_AUDIT);
                    s = call(s, "openclaw_audit", &args);
                }
            }
        }
        if let Some(g) = &self.gitignore {
            s = call(s, "agent_file_section gitignore", &[g]);
        }
        if let Some(t) = &self.backup_timer {
            s = call(s, "enabled_section backup_timer", &[t]);
        }
        if let Some(d) = &self.backup_folder {
            s = call(s, "latest_section backup", &[d]);
        }
        if let Some(d) = &self.incident_doc {
            s = call(s, "exists_section incident", &[d]);
        }
        if let Some(r) = &self.agent_audit_rules {
            s = call(s, "exists_section audit_rules", &[r]);
        }
        if !self.managed_paths.is_empty() {
            let paths: Vec<&str> = self.managed_paths.iter().map(String::as_str).collect();
            s = call(s.raw(FS_LINKS), "fs_links", &paths);
        }
        s
    }
}

/// Shell functions of the scan; every one only reads.
const SCAN_FUNCTIONS: &str = r#"
sec() { printf '%s %s\n' "$M" "$*"; }
# At most $L bytes of a file; a longer one is then named in a `truncated` section.
read_capped() {
  head -c "$L" -- "$2"; echo
  s=$(stat -L -c %s -- "$2" 2>/dev/null) || s=0
  [ "$s" -gt "$L" ] 2>/dev/null && sec truncated "$1" "$s" "$2"
  true
}
# A file that does not exist prints no section: its observation stays None.
file_section() { [ -f "$2" ] || return 0; sec "$1" "$2"; read_capped "$1" "$2"; }
exists_section() { if [ -s "$2" ]; then sec "$1" yes "$2"; else sec "$1" no "$2"; fi; }
enabled_section() {
  sec "$1" "$2"
  systemctl is-enabled "$2" 2>/dev/null || true
  systemctl is-active "$2" 2>/dev/null || true
}
latest_section() {
  sec "$1" "$2"
  [ -d "$2" ] || return 0
  f=$(ls -1t -- "$2" 2>/dev/null | head -n 1)
  [ -n "$f" ] && stat -c '%Y %s %n' -- "$2/$f" 2>/dev/null
  date +%s
}
env_lengths() {
  [ -f "$1" ] || return 0
  sec env "$1"
  head -c "$L" -- "$1" | awk '/^[ \t]*(export[ \t]+)?[A-Za-z_][A-Za-z0-9_]*=/ {
    sub(/^[ \t]*(export[ \t]+)?/, ""); n = $0; sub(/=.*/, "", n); v = $0; sub(/^[^=]*=/, "", v)
    gsub(/^["'\'']|["'\'']$/, "", v); print n, length(v) }'
}
# The agent's folders are its own: root reads nothing there through a name the agent could
# have swapped. `in_folder DIR CMD...` walks to DIR (refusing a planted link: nothing is read,
# and `fs.symlink` reports links on managed paths) and runs CMD there as whoever controls it
# (the agent in its home, root in /etc). Names with a newline are left out of line-based
# listings (they could read as two names); `odd_names` counts them.
in_folder() { ( rw_cd "$1" 0 || exit 0; shift; rw_as "$@" ); }
NL='
'
agent_file_section() {
  ( rw_cd "${2%/*}" 0 || exit 0
    n=${2##*/}
    { [ -f "$n" ] && { [ ! -L "$n" ] || rw_planted "$n"; }; } || exit 0
    sec "$1" "$2"
    rw_as head -c "$L" -- "./$n"; echo
    s=$(rw_as stat -L -c %s -- "./$n" 2>/dev/null) || s=0
    [ "$s" -gt "$L" ] 2>/dev/null && sec truncated "$1" "$s" "$2"
    true )
}
agent_list_dir() {
  sec "$1" "$2"
  [ -d "$2" ] && in_folder "$2" sh -c 'ls -1A | grep -v "^$" | head -n "$1"' rampart-scan "$N"
  true
}
secret_search() {
  kind=$1; pat=$2; shift 2
  for d in "$@"; do
    [ -d "$d" ] || continue
    # Batched: one grep for many files, then line numbers only for the files that match.
    in_folder "$d" sh -c 'find "$2" -xdev -type f -size -4096k ! -name "*$3*" \
        -exec grep -IEl -e "$1" -- {} + 2>/dev/null |
      while IFS= read -r f; do
        lines=$(grep -IEn -e "$1" -- "$f" 2>/dev/null | cut -d: -f1 | head -n 5 | tr "\n" ",")
        [ -n "$lines" ] && printf "%s\t%s\n" "${lines%,}" "$f"
      done' rampart-scan "$pat" "$d" "$NL"
  done | while IFS='	' read -r lines f; do
    skip=no
    for e in $EXEMPT; do [ "$f" = "$e" ] && skip=yes; done
    [ $skip = yes ] || printf '%s\t%s\t%s\n' "$kind" "$lines" "$f"
  done | { sec secrets; cat; }
}
loose_secrets() {
  sec loose
  for d in "$@"; do
    [ -d "$d" ] || continue
    in_folder "$d" find "$d" -xdev -type f ! -name "*$NL*" \( -name '*.env' -o -name '.env*' \
      -o -name '*.key' -o -name '*.pem' -o -name '*.p12' -o -name 'credentials*' \
      -o -path '*/secrets/*' \) -perm /044 -exec stat -c '%a %U %G %n' {} + 2>/dev/null
  done | head -n "$N"
  for f in /etc/wireguard/*.key; do [ -f "$f" ] && stat -c '%a %U %G %n' -- "$f"; done
  true
}
odd_names() {
  sec odd_names
  for d in "$@"; do
    [ -d "$d" ] && in_folder "$d" find "$d" -xdev -name "*$NL*" -printf x 2>/dev/null
  done | wc -c
}
mode_of() { sec mode "$1"; [ -e "$1" ] && stat -c '%a %U %G %n' -- "$1"; true; }
list_dir() { sec "$1" "$2"; [ -d "$2" ] && ls -1A -- "$2" | head -n "$N"; true; }
service_section() {
  sec service "$1"
  systemctl show -p LoadState,ActiveState,SubState,Result,UnitFileState,User,MainPID,NRestarts \
    -p ExecMainStartTimestampMonotonic,ExecMainCode,ExecMainStatus,ControlGroup,DropInPaths \
    -p NeedDaemonReload,FragmentPath -p "$SANDBOX_PROPS" -- "$1" 2>/dev/null
  printf 'Uptime=%s\n' "$(cut -d' ' -f1 /proc/uptime)"
  pid=$(systemctl show -p MainPID --value -- "$1" 2>/dev/null)
  [ -n "$pid" ] && [ "$pid" != 0 ] && printf 'ProcessUser=%s\n' "$(ps -o user= -p "$pid" 2>/dev/null)"
  true
}
"#;

/// Unit directives that make up the agent unit's sandbox and identity (`systemctl show`
/// names them the same). A drop-in that sets one of them to something weaker is a finding.
pub const SANDBOX_KEYS: &[&str] = &[
    "User",
    "Group",
    "SupplementaryGroups",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "PrivateTmp",
    "PrivateDevices",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictSUIDSGID",
    "RestrictRealtime",
    "LockPersonality",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "UMask",
];

/// The agent's drop-ins: those systemd loaded (`DropInPaths`, type-wide `service.d/` ones
/// included) and those waiting in the unit's own folders for a daemon-reload. Only
/// `Key=value` lines, bounded; root owns these folders.
const DROPIN_SECTION: &str = r#"
dropin_section() {
  { systemctl show -p DropInPaths --value -- "$1" 2>/dev/null | tr ' ' '\n'
    for f in "/etc/systemd/system/$1.d"/*.conf "/run/systemd/system/$1.d"/*.conf; do
      [ -e "$f" ] && printf '%s\n' "$f"
    done
  } | grep . | sort -u | while IFS= read -r f; do
    sec dropin "$f"
    grep -E '^[[:space:]]*[A-Za-z]+[[:space:]]*=' -- "$f" 2>/dev/null | head -n 60 | cut -c1-300
  done
  true
}
"#;

/// Is the agent alive? Its journal's last lines, who holds its port, and three HTTP requests
/// to it on loopback: `GET /health`, then `POST /tools/invoke` (an empty, invalid call that
/// does nothing) without and with the token. The client is bash's `/dev/tcp`: nothing the
/// agent could have replaced is run as root, and the host needs no curl or node. The token is
/// read from the root-only env files into a shell variable and written to the socket by the
/// `printf` builtin: never in argv; the journal's lines are redacted of it on the host.
const AGENT_RUNTIME: &str = r#"
agent_token() {
  n=$1; shift
  for f in "$@"; do
    [ -f "$f" ] && awk -v n="$n" '{ l = $0; sub(/^[ \t]*(export[ \t]+)?/, "", l); i = index(l, "=")
      if (i > 1 && substr(l, 1, i - 1) == n) { v = substr(l, i + 1); found = 1 } }
      END { if (found) { gsub(/^["\047]|["\047]$/, "", v); print v } }' "$f"
  done | tail -n 1
}
redact() {
  T="$tok" awk 'BEGIN { t = ENVIRON["T"] }
    { out = ""; s = $0
      if (t != "") while ((i = index(s, t)) > 0) { out = out substr(s, 1, i - 1) "<token>"; s = substr(s, i + length(t)) }
      print out s }'
}
HTTP_BASH='CR=$(printf "\r")
exec 3<>"/dev/tcp/127.0.0.1/$P" || exit 0
req="$M $U HTTP/1.1$CR
Host: 127.0.0.1:$P$CR
Connection: close$CR
"
[ -n "$T" ] && req="${req}Authorization: Bearer $T$CR
"
if [ "$M" = POST ]; then req="${req}Content-Type: application/json$CR
Content-Length: 2$CR
$CR
{}"; else req="$req$CR
"; fi
printf %s "$req" >&3
IFS= read -r -t 20 line <&3 || { echo no-answer; exit 0; }
set -- ${line%$CR}
case "$2" in [1-5][0-9][0-9]) echo "$2" ;; *) echo not-http ;; esac'
http_status() {
  r=$(T="${3:-}" P="$port" M="$1" U="$2" timeout 25 bash -c "$HTTP_BASH" 2>/dev/null)
  [ $? = 124 ] && r=timeout
  printf '%s\n' "${r:-refused}"
}
young() {
  systemctl show -p ActiveState,ExecMainStartTimestampMonotonic -- "$1" 2>/dev/null |
    awk -F= -v up="$(cut -d' ' -f1 /proc/uptime)" '{ v[$1] = $2 }
      END { exit !(v["ActiveState"] == "active" && v["ExecMainStartTimestampMonotonic"] > 0 && up - v["ExecMainStartTimestampMonotonic"] / 1e6 < 150) }'
}
agent_runtime() {
  unit=$1; port=$2; var=$3; shift 3
  tok=$(agent_token "$var" "$@")
  sec agent_journal "$unit"
  journalctl -u "$unit" -n 12 --no-pager -o short-iso 2>/dev/null | redact | cut -c1-300
  sec agent_http "$port"
  if [ -n "$tok" ]; then echo "token found"; else echo "token none"; fi
  if ! command -v bash >/dev/null 2>&1; then echo "client none"; return 0; fi
  echo "client bash"
  # A gateway started a moment ago may not listen yet (OpenClaw takes 30-60 s on a busy
  # host): wait for it, up to 90 s, within its first 150 s.
  st=$(http_status GET /health); n=0
  while [ "$st" != 200 ] && [ $n -lt 90 ] && young "$unit"; do
    sleep 1; n=$((n + 1)); st=$(http_status GET /health)
  done
  echo "waited $n"
  echo "health $st"
  echo "noauth $(http_status POST /tools/invoke)"
  [ -n "$tok" ] && echo "auth $(http_status POST /tools/invoke "$tok")"
  # After the wait: who holds the port now.
  sec agent_listener "$port"
  pid=$(ss -Htlnp "sport = :$port" 2>/dev/null | sed -n 's/.*pid=\([0-9][0-9]*\).*/\1/p' | head -n 1)
  [ -n "$pid" ] && printf '%s %s\n' "$pid" "$(grep -m1 '^0::' "/proc/$pid/cgroup" 2>/dev/null | cut -d: -f3-)"
  true
}
"#;

/// `audit` only: OpenClaw's own `openclaw security audit --deep --json`, run the way the
/// gateway runs: as the agent's user, with the unit's `Environment=` and its env files read by
/// systemd (so the token is in its environment, never in argv), in a transient unit that may
/// reach loopback only (offline) and is stopped after 120 s. Its output is the agent's
/// (hostile): redacted of the token on the host and bounded.
const OPENCLAW_AUDIT: &str = r#"
openclaw_audit() {
  unit=$1; user=$2; shift 2
  sec openclaw_audit
  bin=$(systemctl show -p ExecStart --value -- "$unit" 2>/dev/null | sed -n 's/^{ path=\([^ ;]*\).*/\1/p' | head -n 1)
  case "${bin##*/}" in openclaw) ;; *) bin=$(command -v openclaw 2>/dev/null || true) ;; esac
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then echo "status not-installed"; return 0; fi
  if ! command -v systemd-run >/dev/null 2>&1; then echo "status no-systemd-run"; return 0; fi
  env=$(systemctl show -p Environment --value -- "$unit" 2>/dev/null)
  n=$#
  for f in "$@"; do set -- "$@" -p "EnvironmentFile=-$f"; done
  shift $n
  [ -n "$env" ] && set -- "$@" -p "Environment=$env"
  echo "status ran $bin"
  timeout 150 systemd-run --quiet --pipe --wait --collect -p User="$user" -p Group="$user" \
    -p RuntimeMaxSec=120 -p IPAddressDeny=any -p IPAddressAllow=localhost -p NoNewPrivileges=yes \
    "$@" -- "$bin" security audit --deep --json </dev/null 2>&1 | redact | head -c 262144
  echo
}
"#;

/// `fs_links PATH...`: for each path a step writes, the walk to its folder as the step's own
/// would go (fsfile's `rw_cd`, read-only), and one `fslink` section for a link it refuses on
/// the way or at the path: the path, the link, its target and the reason, each in base64.
const FS_LINKS: &str = r#"
fs_links() {
  for fl_p do
    (
      fl_d=${fl_p%/*} fl_n=${fl_p##*/}
      [ -n "$fl_d" ] || fl_d=/
      rw_cd "$fl_d" 0; fl_rc=$?
      if [ "$fl_rc" = 0 ] && [ -L "$fl_n" ] && ! rw_planted "$fl_n"; then fl_rc=1; fi
      if [ "$fl_rc" = 1 ] && [ -n "$rw_link" ]; then
        fl_b() { printf '%s' "$1" | base64 | tr -d '\n'; }
        sec fslink "$(fl_b "$fl_p")" "$(fl_b "$rw_link")" "$(fl_b "$rw_to")" "$(fl_b "$rw_err")"
      fi
    )
  done
}
"#;

/// The host-wide part of the scan.
const SCAN_HOST: &str = r#"
for t in tcp tcp6 udp udp6; do sec proc_net "$t"; cat "/proc/net/$t" 2>/dev/null; done
if command -v ss >/dev/null 2>&1; then sec ss; ss -Htulnp 2>/dev/null; fi
sec passwd; head -c "$L" /etc/passwd | cut -d: -f1,3,6,7
sec group; grep -E '^(sudo|wheel|admin):' /etc/group
head -c "$L" /etc/passwd | cut -d: -f1,6 | while IFS=: read -r u h; do
  for f in "$h/.ssh/authorized_keys" "$h/.ssh/authorized_keys2"; do
    [ -f "$f" ] && { sec keys "$u" "$f"; read_capped "keys" "$f"; }
  done
done
if command -v sshd >/dev/null 2>&1; then sec sshd; sshd -T 2>/dev/null | grep -E '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|pubkeyauthentication|port) '; fi
if command -v nft >/dev/null 2>&1; then sec nft; nft list ruleset 2>/dev/null; fi
file_section upgrades /etc/apt/apt.conf.d/20auto-upgrades
if command -v auditctl >/dev/null 2>&1 && auditctl -s >/dev/null 2>&1; then
  sec audit_loaded; auditctl -l 2>/dev/null
fi
"#;

/// A socket listening (TCP) or bound unconnected (UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    pub addr: IpAddr,
    pub port: u16,
    /// `python3 (pid 812)`, when `ss` could tell.
    pub process: Option<String>,
}

impl Listener {
    pub fn endpoint(&self) -> String {
        match self.addr {
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
            IpAddr::V4(a) => format!("{a}:{}", self.port),
        }
    }
}

/// An `authorized_keys` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub user: String,
    pub file: String,
    pub line: usize,
    pub key_type: String,
    pub blob: String,
    pub comment: String,
}

/// An `authorized_keys` line sshd cannot use: junk, or key data that is not the key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedKey {
    pub user: String,
    pub file: String,
    pub line: usize,
    /// Why, in words: `its key data is not base64`.
    pub problem: String,
    /// The line's first characters, as evidence.
    pub start: String,
}

/// A file the scan read only the first [`FILE_LIMIT`] bytes of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The section it was read for: `config`, `keys`, `gitignore`, ...
    pub section: String,
    pub size: u64,
    pub path: String,
}

/// A file with a secret-looking string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHit {
    pub kind: String,
    pub lines: String,
    pub path: String,
}

/// `stat -c '%a %U %G %n'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMode {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub path: String,
}

impl FileMode {
    fn parse(line: &str) -> Option<FileMode> {
        let mut it = line.splitn(4, ' ');
        Some(FileMode {
            mode: u32::from_str_radix(it.next()?, 8).ok()?,
            owner: it.next()?.to_string(),
            group: it.next()?.to_string(),
            path: it.next()?.to_string(),
        })
    }

    pub fn shown(&self) -> String {
        format!(
            "{} mode {:04o} {}:{}",
            self.path, self.mode, self.owner, self.group
        )
    }
}

/// What the scan saw on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    pub listeners: Vec<Listener>,
    /// name, uid, home, shell
    pub users: Vec<(String, u32, String, String)>,
    /// sudo/wheel/admin -> members
    pub admin_groups: BTreeMap<String, Vec<String>>,
    pub keys: Vec<AuthorizedKey>,
    pub malformed_keys: Vec<MalformedKey>,
    /// Files longer than the scan reads.
    pub truncated: Vec<Truncated>,
    /// Names holding a newline in the agent's folders (left out of the listings).
    pub odd_names: u64,
    pub sshd: BTreeMap<String, String>,
    /// `None`: no nft on the host.
    pub nft: Option<String>,
    pub upgrades: Option<String>,
    /// `auditctl -l`, when audit works here.
    pub audit_loaded: Option<String>,
    /// The agent's config text (never shown: it may hold a literal token).
    pub config: Option<String>,
    pub config_path: Option<String>,
    /// env file -> (variable, value length)
    pub env: BTreeMap<String, Vec<(String, usize)>>,
    pub secret_hits: Vec<SecretHit>,
    /// Secrets files readable by group or others.
    pub loose: Vec<FileMode>,
    pub modes: Vec<FileMode>,
    /// skills folder -> entries
    pub skills: BTreeMap<String, Vec<String>>,
    pub service: BTreeMap<String, String>,
    pub gitignore: Option<String>,
    /// `systemctl is-enabled`, `is-active` of the backup timer.
    pub backup_timer: Option<(String, String)>,
    /// newest backup: (mtime, size, path), and the host's clock.
    pub backup_latest: Option<(u64, u64, String)>,
    pub now: Option<u64>,
    pub incident_doc: Option<bool>,
    pub audit_rules_file: Option<bool>,
    /// Symbolic links planted on the way to a path a step writes.
    pub planted_links: Vec<PlantedLink>,
    /// The agent unit's journal, last lines, control characters stripped.
    pub agent_journal: Vec<String>,
    /// Who holds the agent's port on the host: pid and cgroup.
    pub agent_listener: Option<(u32, String)>,
    /// The live checks: `token found|none`, `client bash|none`, `waited N`, `health 200`,
    /// `noauth 401`, `auth 400` (an HTTP status, or `refused`, `timeout`, `no-answer`,
    /// `not-http`).
    pub agent_http: BTreeMap<String, String>,
    pub dropins: Vec<DropIn>,
    /// OpenClaw's own audit (`audit` only).
    pub openclaw: Option<OpenclawRun>,
}

/// A drop-in of the agent's unit, with its `Key=value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    pub path: String,
    pub settings: Vec<(String, String)>,
}

/// How `openclaw security audit` went on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenclawRun {
    NotInstalled,
    /// It could not be run (no systemd-run); why.
    NotRun(String),
    /// It ran: the binary, and its output (bounded, redacted of the token on the host).
    Ran {
        bin: String,
        output: String,
    },
}

/// Host text for people, on one line: control characters shown escaped (see
/// [`crate::untrusted::escape_name`]), and at most `max` characters of it kept.
pub fn clean(text: &str, max: usize) -> String {
    let kept: String = text.chars().take(max).collect();
    let mut out = crate::untrusted::escape_name(&kept).into_owned();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// A symbolic link on the way to (or at) a path a step writes, where root must not follow
/// one: in a folder another account controls, or owned by another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlantedLink {
    /// The path the step writes.
    pub path: String,
    /// The link itself.
    pub link: String,
    pub target: String,
    /// Who could have planted it, as the walk says.
    pub why: String,
}

/// Reads the scan's output.
pub fn parse(marker: &str, text: &str) -> Observations {
    let mut obs = Observations::default();
    let mut ss_lines = Vec::new();
    let mut section: Vec<String> = Vec::new();
    let mut body: Vec<&str> = Vec::new();
    let head = format!("{marker} ");
    let mut flush = |section: &[String], body: &[&str], obs: &mut Observations| {
        if let Some(name) = section.first() {
            take(obs, &mut ss_lines, name, &section[1..], body);
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&head) {
            flush(&section, &body, &mut obs);
            section = rest.split(' ').map(String::from).collect();
            body.clear();
        } else if line == marker {
            flush(&section, &body, &mut obs);
            section.clear();
            body.clear();
        } else {
            body.push(line);
        }
    }
    flush(&section, &body, &mut obs);
    let processes = ss_processes(&ss_lines);
    for l in &mut obs.listeners {
        l.process = processes.get(&(l.proto, l.port)).cloned();
    }
    obs.listeners
        .sort_by(|a, b| (a.proto, a.port, a.addr).cmp(&(b.proto, b.port, b.addr)));
    obs.listeners.dedup();
    obs
}

fn take(
    obs: &mut Observations,
    ss_lines: &mut Vec<String>,
    name: &str,
    args: &[String],
    body: &[&str],
) {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    // Paths may hold spaces: everything after the fixed arguments.
    let rest = |from: usize| args.get(from..).map(|a| a.join(" ")).unwrap_or_default();
    let text = || {
        let mut t = body.join("\n");
        if t.ends_with('\n') || t.is_empty() {
            return t;
        }
        t.push('\n');
        t
    };
    match name {
        "proc_net" => {
            let proto = if arg(0).starts_with("tcp") {
                "tcp"
            } else {
                "udp"
            };
            obs.listeners
                .extend(body.iter().filter_map(|l| proc_net_line(proto, l)));
        }
        "ss" => ss_lines.extend(body.iter().map(|l| l.to_string())),
        "passwd" => {
            for l in body {
                let f: Vec<&str> = l.splitn(4, ':').collect();
                if let [name, uid, home, shell] = f[..]
                    && let Ok(uid) = uid.parse()
                {
                    obs.users
                        .push((name.into(), uid, home.into(), shell.into()));
                }
            }
        }
        "group" => {
            for l in body {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() == 4 {
                    let members = f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(String::from)
                        .collect();
                    obs.admin_groups.insert(f[0].into(), members);
                }
            }
        }
        "fslink" => {
            let decoded = |i: usize| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(arg(i))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            obs.planted_links.push(PlantedLink {
                path: decoded(0),
                link: decoded(1),
                target: decoded(2),
                why: decoded(3),
            });
        }
        "keys" => {
            let (user, file) = (arg(0), rest(1));
            for (i, l) in body.iter().enumerate() {
                let problem = match authorized_key(l) {
                    Some(k) => match key_problem(&k.key_type, &k.blob) {
                        None => {
                            obs.keys.push(AuthorizedKey {
                                user: user.clone(),
                                file: file.clone(),
                                line: i + 1,
                                ..k
                            });
                            continue;
                        }
                        Some(p) => p,
                    },
                    None if l.trim().is_empty() || l.trim_start().starts_with('#') => continue,
                    None => "no key type sshd knows".to_string(),
                };
                obs.malformed_keys.push(MalformedKey {
                    user: user.clone(),
                    file: file.clone(),
                    line: i + 1,
                    problem,
                    start: crate::untrusted::first_chars(l.trim(), 40).to_string(),
                });
            }
        }
        "sshd" => {
            for l in body {
                if let Some((k, v)) = l.split_once(' ') {
                    obs.sshd.insert(k.into(), v.trim().into());
                }
            }
        }
        "nft" => obs.nft = Some(text()),
        "upgrades" => obs.upgrades = Some(text()),
        "audit_loaded" => obs.audit_loaded = Some(text()),
        "config" => {
            obs.config_path = Some(rest(0));
            obs.config = Some(text());
        }
        "env" => {
            let vars = body
                .iter()
                .filter_map(|l| {
                    let (n, len) = l.rsplit_once(' ')?;
                    Some((n.to_string(), len.parse().ok()?))
                })
                .collect();
            obs.env.insert(rest(0), vars);
        }
        "secrets" => {
            for l in body {
                let f: Vec<&str> = l.splitn(3, '\t').collect();
                if let [kind, lines, path] = f[..] {
                    obs.secret_hits.push(SecretHit {
                        kind: kind.into(),
                        lines: lines.into(),
                        path: path.into(),
                    });
                }
            }
        }
        "odd_names" => {
            obs.odd_names = body
                .first()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0)
        }
        "loose" => obs
            .loose
            .extend(body.iter().filter_map(|l| FileMode::parse(l))),
        "mode" => obs
            .modes
            .extend(body.iter().filter_map(|l| FileMode::parse(l))),
        "skills" => {
            obs.skills.insert(
                rest(0),
                body.iter()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.to_string())
                    .collect(),
            );
        }
        "service" => {
            for l in body {
                if let Some((k, v)) = l.split_once('=') {
                    obs.service.insert(k.into(), v.trim().into());
                }
            }
        }
        "gitignore" => obs.gitignore = Some(text()),
        "backup_timer" => {
            let mut it = body.iter().map(|l| l.trim().to_string());
            obs.backup_timer = Some((it.next().unwrap_or_default(), it.next().unwrap_or_default()));
        }
        "backup" => {
            let mut lines: Vec<&str> = body.iter().copied().filter(|l| !l.is_empty()).collect();
            obs.now = lines.pop().and_then(|l| l.trim().parse().ok());
            obs.backup_latest = lines.first().and_then(|l| {
                let mut it = l.splitn(3, ' ');
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.parse().ok()?,
                    it.next()?.to_string(),
                ))
            });
        }
        "agent_journal" => {
            let lines: Vec<&str> = body
                .iter()
                .copied()
                .filter(|l| !l.trim().is_empty())
                .collect();
            obs.agent_journal = lines[lines.len().saturating_sub(12)..]
                .iter()
                .map(|l| clean(l, 300))
                .collect();
        }
        "agent_listener" => {
            obs.agent_listener = body.iter().find_map(|l| {
                let (pid, cgroup) = l.split_once(' ')?;
                Some((pid.parse().ok()?, cgroup.trim().to_string()))
            });
        }
        "agent_http" => {
            for l in body {
                if let Some((k, v)) = l.split_once(' ') {
                    obs.agent_http.insert(k.into(), clean(v.trim(), 40));
                }
            }
        }
        "dropin" => obs.dropins.push(DropIn {
            path: rest(0),
            settings: body
                .iter()
                .filter_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().to_string()))
                })
                .collect(),
        }),
        "openclaw_audit" => {
            let status = body.first().copied().unwrap_or("");
            obs.openclaw = Some(match status.strip_prefix("status ") {
                Some("not-installed") => OpenclawRun::NotInstalled,
                Some(s) if s.starts_with("ran ") => OpenclawRun::Ran {
                    bin: clean(&s[4..], 200),
                    output: body[1..].join("\n"),
                },
                Some(other) => OpenclawRun::NotRun(clean(other, 100)),
                None => OpenclawRun::NotRun("the audit printed nothing".into()),
            });
        }
        "truncated" => obs.truncated.push(Truncated {
            section: arg(0),
            size: arg(1).parse().unwrap_or(0),
            path: rest(2),
        }),
        "incident" => obs.incident_doc = Some(arg(0) == "yes"),
        "audit_rules" => obs.audit_rules_file = Some(arg(0) == "yes"),
        _ => {}
    }
}

/// One line of `/proc/net/{tcp,tcp6,udp,udp6}`, when it is a listening (TCP state 0A) or
/// unconnected (UDP, remote port 0) socket.
fn proc_net_line(proto: &'static str, line: &str) -> Option<Listener> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 4 || !f[0].ends_with(':') {
        return None;
    }
    let (local, remote, state) = (f[1], f[2], f[3]);
    let listening = match proto {
        "tcp" => state == "0A",
        _ => remote.ends_with(":0000"),
    };
    if !listening {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // The kernel prints each 32-bit word of the address in host (little-endian) order.
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| {
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(|w| w.to_le_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let addr = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(Listener {
        proto,
        addr,
        port,
        process: None,
    })
}

/// `ss -Htulnp` lines -> (proto, port) -> `name (pid N)`.
fn ss_processes(lines: &[String]) -> BTreeMap<(&'static str, u16), String> {
    let re = regex::Regex::new(r#"users:\(\("([^"]+)",pid=(\d+)"#).expect("valid");
    let mut out = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let proto = if f[0] == "tcp" { "tcp" } else { "udp" };
        let Some(port) = f[4].rsplit_once(':').and_then(|(_, p)| p.parse().ok()) else {
            continue;
        };
        if let Some(c) = re.captures(l) {
            out.insert((proto, port), format!("{} (pid {})", &c[1], &c[2]));
        }
    }
    out
}

/// An `authorized_keys` line: options, then `type base64 [comment]`.
pub fn authorized_key(line: &str) -> Option<AuthorizedKey> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| is_key_type(w))?;
    let blob = words.get(i + 1)?;
    Some(AuthorizedKey {
        user: String::new(),
        file: String::new(),
        line: 0,
        key_type: words[i].to_string(),
        blob: blob.to_string(),
        comment: words[i + 2..].join(" "),
    })
}

/// Why sshd could not use a key of `key_type` with `blob` as its data, or `None` when the
/// data is base64 of a key that names `key_type` (SSH wire format: a length, then the name).
pub fn key_problem(key_type: &str, blob: &str) -> Option<String> {
    use base64::Engine as _;
    let Ok(data) = base64::engine::general_purpose::STANDARD.decode(blob) else {
        return Some("its key data is not base64".into());
    };
    let named = data
        .get(..4)
        .and_then(|n| <[u8; 4]>::try_from(n).ok())
        .map(|n| u32::from_be_bytes(n) as usize)
        .and_then(|n| data.get(4..4usize.checked_add(n)?));
    if named != Some(key_type.as_bytes()) {
        return Some(format!(
            "its key data is not a {} key",
            crate::untrusted::first_chars(key_type, 40)
        ));
    }
    None
}

fn is_key_type(w: &str) -> bool {
    w.starts_with("ssh-")
        || w.starts_with("ecdsa-sha2-")
        || w.starts_with("sk-ssh-")
        || w.starts_with("sk-ecdsa-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_give_listeners_in_network_order() {
        let tcp = "  0: 00000000:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000   997        0 1 1 0 100 0 0 10 0";
        let l = proc_net_line("tcp", tcp).unwrap();
        assert_eq!((l.addr.to_string(), l.port), ("0.0.0.0".into(), 18789));
        let lo = "  1: 0100007F:4965 00000000:0000 0A 0";
        assert_eq!(
            proc_net_line("tcp", lo).unwrap().addr.to_string(),
            "127.0.0.1"
        );
        let established = "  2: 6400CB0A:0016 0100CB0A:D2F0 01 0";
        assert_eq!(proc_net_line("tcp", established), None);
        let v6_any =
            "  0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(proc_net_line("tcp", v6_any).unwrap().addr.to_string(), "::");
        let v6_lo =
            "  0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(proc_net_line("tcp", v6_lo).unwrap().addr.to_string(), "::1");
        let udp = "  5: 00000000:CA6C 00000000:0000 07 0";
        assert_eq!(proc_net_line("udp", udp).unwrap().port, 51820);
    }

    #[test]
    fn authorized_keys_lines_with_options_and_comments() {
        let k = authorized_key(r#"no-pty,command="echo hi there" ssh-ed25519 AAAAC3Nza me@laptop"#)
            .unwrap();
        assert_eq!(
            (k.key_type.as_str(), k.blob.as_str(), k.comment.as_str()),
            ("ssh-ed25519", "AAAAC3Nza", "me@laptop")
        );
        assert_eq!(authorized_key("# a comment"), None);
        assert_eq!(authorized_key(""), None);
    }

    /// The base64 data of a `key_type` key (SSH wire format), with `fill` as its key bytes.
    pub(crate) fn blob(key_type: &str, fill: u8) -> String {
        use base64::Engine as _;
        let mut data = (key_type.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(key_type.as_bytes());
        data.extend_from_slice(&32u32.to_be_bytes());
        data.extend_from_slice(&[fill; 32]);
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn the_scan_output_is_read_section_by_section() {
        let m = "@@x";
        let (b1, b2) = (blob("ssh-ed25519", 1), blob("ssh-rsa", 2));
        let text = format!(
            "{m} proc_net tcp\n  sl  local_address rem_address   st\n  0: 00000000:4965 00000000:0000 0A 0\n\
             {m} ss\ntcp   LISTEN 0      5      0.0.0.0:18789      0.0.0.0:*    users:((\"python3\",pid=812,fd=3))\n\
             {m} passwd\nroot:0:/root:/bin/bash\ntoor:0:/root:/bin/sh\nadmin:1000:/home/admin:/bin/bash\n\
             {m} group\nsudo:x:27:admin,eve\n\
             {m} keys root /root/.ssh/authorized_keys\nssh-ed25519 {b1} a\n\nssh-rsa {b2} b\n\
             {m} env /etc/openclaw/token.env\nAGENT_AUTH_TOKEN 64\n\
             {m} secrets\nAnthropic API key\t3\t/home/openclaw/.openclaw/workspace/my notes.md\n\
             {m} loose\n644 root root /etc/openclaw/agent.env\n\
             {m} skills /home/openclaw/.openclaw/skills\nweather\n\
             {m} backup /var/backups/openclaw\n1764000000 2048 /var/backups/openclaw/a.tar.gz\n1764003600\n\
             {m} incident yes /usr/local/share/doc/rampart/incident-response.md\n"
        );
        let o = parse(m, &text);
        assert_eq!(o.listeners.len(), 1);
        assert_eq!(o.listeners[0].process.as_deref(), Some("python3 (pid 812)"));
        assert_eq!(o.users.len(), 3);
        assert_eq!(o.admin_groups["sudo"], vec!["admin", "eve"]);
        assert_eq!(o.keys.len(), 2);
        assert_eq!((o.keys[1].line, o.keys[1].blob.as_str()), (3, b2.as_str()));
        assert_eq!(
            o.env["/etc/openclaw/token.env"],
            vec![("AGENT_AUTH_TOKEN".to_string(), 64)]
        );
        assert!(!o.env.contains_key("/etc/openclaw/agent.env"));
        assert_eq!(
            o.secret_hits[0].path,
            "/home/openclaw/.openclaw/workspace/my notes.md"
        );
        assert_eq!(o.loose[0].mode, 0o644);
        assert_eq!(o.skills["/home/openclaw/.openclaw/skills"], vec!["weather"]);
        assert_eq!(o.backup_latest.as_ref().unwrap().0, 1_764_000_000);
        assert_eq!(o.now, Some(1_764_003_600));
        assert_eq!(o.incident_doc, Some(true));
    }

    #[test]
    fn junk_and_damaged_keys_are_named_not_trusted() {
        let m = "@@x";
        let good = blob("ssh-ed25519", 7);
        // Multi-byte characters where evidence used to slice bytes, junk data, a key whose
        // data names another type, a line with no key at all.
        let text = format!(
            "{m} keys root /root/.ssh/authorized_keys\n\
             ssh-ed25519 AAAAAAAAAAAé€€€€€€€€€€€€€€€ evil\n\
             ssh-rsa {good} mislabelled\n\
             \x1b[31mjunk\n\
             # a comment\n\
             ssh-ed25519 {good} fine\n"
        );
        let o = parse(m, &text);
        assert_eq!(o.keys.len(), 1);
        assert_eq!(o.keys[0].line, 5);
        let bad: Vec<(usize, &str)> = o
            .malformed_keys
            .iter()
            .map(|k| (k.line, k.problem.as_str()))
            .collect();
        assert_eq!(
            bad,
            vec![
                (1, "its key data is not base64"),
                (2, "its key data is not a ssh-rsa key"),
                (3, "no key type sshd knows"),
            ]
        );
    }

    #[test]
    fn proc_net_lines_with_junk_addresses_are_skipped() {
        for junk in [
            "  0: 0000000é:4965 00000000:0000 0A 0",
            "  0: 00000000000000000000000000000éé:0016 0:0000 0A 0",
            "  0: +0000000:4965 00000000:0000 0A 0",
            "  0: 000:4965 00000000:0000 0A 0",
        ] {
            assert_eq!(proc_net_line("tcp", junk), None, "{junk}");
        }
    }

    proptest::proptest! {
        /// `/proc/net` lines with any address text: parsed or skipped, never a panic.
        #[test]
        fn proc_net_lines_with_any_address_never_panic(
            addr in "[0-9A-Fa-fé€😀+-]{0,40}",
            port in "[0-9A-Fé]{0,6}",
            proto in proptest::sample::select(vec!["tcp", "udp"]),
        ) {
            let _ = proc_net_line(proto, &format!("  0: {addr}:{port} 00000000:0000 0A 0"));
        }
    }

    #[test]
    fn a_file_longer_than_the_scan_reads_is_named() {
        let m = "@@x";
        let text = format!(
            "{m} config /home/a b/.openclaw/openclaw.json\n{{\"gateway\": \n\
             {m} truncated config 1073741824 /home/a b/.openclaw/openclaw.json\n"
        );
        let o = parse(m, &text);
        assert_eq!(
            o.truncated,
            vec![Truncated {
                section: "config".into(),
                size: 1 << 30,
                path: "/home/a b/.openclaw/openclaw.json".into()
            }]
        );
    }

    /// The scan script itself, on this machine: a file larger than [`FILE_LIMIT`] is read
    /// only that far, and named.
    #[tokio::test]
    async fn the_scan_reads_at_most_the_limit_of_a_file() {
        use crate::transport::Session;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home/openclaw");
        std::fs::create_dir_all(home.join(".openclaw")).unwrap();
        let config = home.join(".openclaw/openclaw.json");
        let f = std::fs::File::create(&config).unwrap();
        f.set_len(64 * FILE_LIMIT).unwrap(); // sparse
        let params = ScanParams {
            agent_config: Some(config.display().to_string()),
            ..ScanParams::from_vars(&Map::new()).unwrap()
        };
        let script = params.script("@@t").render().unwrap();
        let out = crate::transport::local::LocalSession::default()
            .exec("sh", script.as_bytes(), std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            (out.stdout.len() as u64) < FILE_LIMIT + 64 * 1024,
            "{} bytes",
            out.stdout.len()
        );
        let o = parse("@@t", &String::from_utf8_lossy(&out.stdout));
        assert_eq!(o.truncated.len(), 1, "{:?}", o.truncated);
        assert_eq!(o.truncated[0].size, 64 * FILE_LIMIT);
        assert_eq!(o.truncated[0].path, config.display().to_string());
    }

    #[test]
    fn the_playbook_quarantines_what_the_scan_looks_for() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/agent-gateway.yaml"),
        )
        .unwrap();
        for (name, pattern) in SECRET_PATTERNS {
            let line = format!("{name}: {}", serde_json::to_string(pattern).unwrap());
            assert!(
                text.contains(&line),
                "agent-gateway.yaml's secret_patterns lacks `{line}`"
            );
        }
    }
}
