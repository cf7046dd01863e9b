//! collect: read-only evidence from one host, into one tar archive with a manifest.
//!
//! One script, one round trip: the host prints every piece of evidence as a frame (a header
//! line, then the bytes in base64) and the controller turns the frames into tar members,
//! hashing each. Nothing is written on the host: no temporary file, no heredoc (a shell may
//! keep one in /tmp), only commands that read (`ps`, `ss`, `last`, `journalctl`, `find`,
//! `sha256sum`, `head`). The integration test proves it with a snapshot of every file's mtime
//! and ctime under the trees `collect` lists, taken before and after.
//!
//! ## The host is hostile
//!
//! - Root reads only where root controls the names (`/etc`, `/var/spool/cron`, `/proc`). Files
//!   in a home (every `authorized_keys`, rc files, user units, the agent's state, config, logs
//!   and memory files) are read as whoever controls the home: fsfile's `WALK` walks there
//!   refusing links planted on the way, and `rw_as` runs the reader as the owner, so a link
//!   swapped in shows root nothing the owner could not read itself.
//! - What such a reader prints is the owner's (the agent may be the attacker): its frames carry
//!   another nonce than root's, are only taken between root's `home` and `endhome` lines, and
//!   only for names under that home. Root's nonce never reaches a process the owner can see.
//! - Every member is capped on the host (`head -c CAP+1`: one byte more says it was cut) and
//!   each home's output as a whole; the whole answer is capped by the transport
//!   (`--max-size`), and what came before the cap is still archived, marked incomplete.
//! - Names come from the host: control characters become `?`, `..` parts `__`, and a name
//!   that a tar header cannot hold is stored as `long/<sha256 of the name>` with the name in
//!   the manifest.
//! - Secrets: rampart's own env files (`*.env` under `/etc`) are left out; their hashes are in
//!   the integrity listing. What an attacker left in the agent's folders is evidence and is
//!   kept; the archive is written 0600 and should be handled as secret.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::tar;
use crate::fleet::connect_host;
use crate::inventory::Host;
use crate::remote::Script;
use crate::transport::Session;
use crate::transport::ssh::ConnectOptions;

/// Limits and the window of "recently changed".
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most bytes of one file or command output.
    pub member: u64,
    /// The most bytes of one home's (or agent temp folder's) frames, base64 included.
    pub home: u64,
    /// Journal lines per unit.
    pub journal_lines: u32,
    /// Files changed (mtime or ctime) in the last this many days are listed.
    pub changed_days: u32,
    /// How long the host's script may run.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            member: 8 << 20,
            home: 96 << 20,
            journal_lines: 20_000,
            changed_days: 14,
            timeout: Duration::from_secs(600),
        }
    }
}

/// The trees whose recently changed files are listed (issue 13).
pub const CHANGED_TREES: &[&str] = &[
    "/etc",
    "/usr/local",
    "/home",
    "/root",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
];

/// Root-controlled files and folders whose regular files go into the archive whole.
/// (Besides the cron places, [`super::integrity::CRON_PLACES`].)
const ROOT_FILES: &[&str] = &[
    "/etc/systemd/system",
    "/etc/systemd/user",
    "/usr/local/lib/systemd",
    "/run/systemd/system",
    "/run/systemd/transient",
    "/etc/passwd",
    "/etc/group",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/etc/pam.d",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/bash.bashrc",
    "/etc/environment",
    "/etc/rc.local",
    "/etc/audit/rules.d",
    "/etc/nftables.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
];

/// The agent's state folder, relative to its home, and what in it is not evidence (caches
/// and media the agent fetched: large, and listed by name in the tree listing).
const AGENT_STATE: &str = ".openclaw";

/// The script's functions. Variables: R (root's nonce), A (the owners' readers' nonce), C (cap
/// of one member), HC (cap of one home), J (journal lines), DAYS, AU (agent user), UNIT (its
/// gateway unit).
const FUNCTIONS: &str = r###"
NL='
'
hdr() { printf '\n%s %s\n' "$R" "$*"; }
b64() { printf '%s' "$1" | base64 -w0; }
# A command gets 120 s when `timeout` is there; the script's own functions run as they are.
tmo() {
  case $(type "$1" 2>/dev/null) in *function*) "$@"; return ;; esac
  if command -v timeout >/dev/null 2>&1; then timeout 120 "$@"; else "$@"; fi
}
# cmd NAME CMD...: what CMD prints (stderr too), at most C+1 bytes.
cmd() {
  n=$1; shift
  hdr member "$(b64 "commands/$n")"
  { tmo "$@" </dev/null 2>&1 || printf '\n[rampart: %s exited with status %s]\n' "$1" "$?"; } | head -c "$((C + 1))" | base64
}
# rootfiles PATH...: regular files under root-controlled PATHs (links are listed, not followed).
# A file swapped for a FIFO after `find` saw it would block `head`: each read gets 30 s.
ONE='A=$1 C=$2 P=$3; shift 3; t=; command -v timeout >/dev/null 2>&1 && t="timeout 30"; for f; do printf "\n%s member %s\n" "$A" "$(printf "files%s%s" "$P" "${f#.}" | base64 -w0)"; $t head -c "$((C + 1))" -- "$f" </dev/null | base64; done'
rootfiles() {
  for p in "$@"; do
    [ -e "$p" ] || continue
    find "$p" -xdev -type f ! -name '*.env' -exec sh -c "$ONE" rampart-collect "$R" "$C" "" {} + 2>/dev/null
  done
}
# ownerfiles DIR PATH...: regular files under DIR/PATH, read as whoever controls DIR, framed
# with A (the owner could forge those frames; the controller keeps them to DIR).
# As root (a folder root controls), folders and files of other accounts are left out.
HOMEDUMP='one=$0 A=$1 C=$2 P=$3; shift 3
for p; do
  [ -e "$p" ] || continue
  if [ "$(id -u)" = 0 ]; then
    find "./$p" -xdev \( -name cache -o -name media -o -name node_modules -o -name node-compile-cache -o \( -type d ! -uid 0 \) \) -prune -o -type f -uid 0 -exec sh -c "$one" rampart-collect "$A" "$C" "$P" {} +
  else
    find "./$p" -xdev \( -name cache -o -name media -o -name node_modules -o -name node-compile-cache \) -prune -o -type f -exec sh -c "$one" rampart-collect "$A" "$C" "$P" {} +
  fi
done 2>/dev/null'
ownerfiles() {
  d=$1; shift
  hdr home "$(b64 "$d")"
  ( if ! rw_cd "$d" 0; then hdr refused "$(b64 "$d: $rw_err")"; exit 0; fi
    rw_as sh -c "$HOMEDUMP" "$ONE" "$A" "$C" "${d%/}" "$@" </dev/null | head -c "$HC"
    # The whole tree by name, for the folders of accounts (system homes are not listed).
    [ "$u" = 0 ] && exit 0
    rw_as find . -xdev -printf '%M %u %g %s %TY-%Tm-%Td %TT %p -> %l\n' </dev/null 2>/dev/null | head -c "$C" |
      { printf '\n%s member %s\n' "$A" "$(b64 "files${d%/}/.rampart-listing")"; base64; } )
  hdr endhome
}
processes() {
  ps -eo pid,ppid,uid,user,lstart,etimes,stat,args -ww 2>&1
  echo
  echo "# pid sha256-of-the-running-executable executable"
  for d in /proc/[0-9]*; do
    e=$(readlink "$d/exe" 2>/dev/null) || continue
    h=$(sha256sum < "$d/exe" 2>/dev/null | cut -c1-64)
    printf '%s %s %s\n' "${d#/proc/}" "${h:-unreadable}" "$e"
  done
}
changed() {
  for t in "$@"; do
    [ -e "$t" ] || continue
    find "$t" -xdev \( -newermt "-$DAYS days" -o -newerct "-$DAYS days" \) \
      -printf '%TY-%Tm-%Td %TT %CY-%Cm-%Cd %CT %M %u %g %s %p -> %l\n' 2>/dev/null
  done
}
# since_apply TREE...: what changed after the newest run folder of rampart's backups was
# written (the last apply that changed something).
since_apply() {
  ref=$(ls -1td /var/lib/rampart/backups/*/ 2>/dev/null | head -n 1)
  [ -n "$ref" ] || { echo "no run folder in /var/lib/rampart/backups: no apply to compare with"; return 0; }
  echo "# changed (mtime or ctime) after ${ref%/} was last written ($(stat -c %y "$ref"))"
  for t in "$@"; do
    [ -e "$t" ] || continue
    find "$t" -xdev \( -newer "$ref" -o -cnewer "$ref" \) \
      -printf '%TY-%Tm-%Td %TT %CY-%Cm-%Cd %CT %M %u %g %s %p -> %l\n' 2>/dev/null
  done
}
auditlog() {
  command -v ausearch >/dev/null 2>&1 || { echo "ausearch not installed"; return 0; }
  for k in $(cat /etc/audit/rules.d/*.rules 2>/dev/null | grep -o -- '-k [A-Za-z0-9_-]*' | cut -d' ' -f2 | sort -u); do
    echo "## key $k"; ausearch -i -k "$k" 2>&1 | tail -n 5000
  done
}
users() { getent passwd; echo; getent group; echo; passwd -S -a 2>/dev/null; }
listing() {
  for p in "$@"; do
    [ -e "$p" ] || [ -L "$p" ] || continue
    find "$p" -xdev -printf '%M %u %g %s %TY-%Tm-%Td %TT %p -> %l\n' 2>/dev/null
  done
}
"###;

/// The collect script: every frame, then `R end`.
pub fn script(root_nonce: &str, owner_nonce: &str, agent_user: &str, limits: &Limits) -> Script {
    let unit = format!("{agent_user}-gateway.service");
    let mut s = Script::new()
        .raw("PATH=\"$PATH:/usr/sbin:/sbin\"\nexport LC_ALL=C\nR=")
        .arg(root_nonce)
        .raw("\nA=")
        .arg(owner_nonce)
        .raw("\nAU=")
        .arg(agent_user)
        .raw("\nUNIT=")
        .arg(&unit)
        .raw(&format!(
            "\nC={}\nHC={}\nJ={}\nDAYS={}\n",
            limits.member, limits.home, limits.journal_lines, limits.changed_days
        ))
        .raw(crate::resource::fsfile::WALK)
        .raw(FUNCTIONS)
        .raw(&super::integrity::functions());
    let journal = "journalctl --no-pager -o short-iso-precise -n \"$J\"";
    for (name, command) in [
        (
            "host.txt",
            "sh -c 'hostname; date -u +%Y-%m-%dT%H:%M:%SZ; uname -a; cat /etc/os-release; uptime'",
        ),
        ("processes.txt", "processes"),
        ("sockets.txt", "ss -tunapeH"),
        ("unix-sockets.txt", "ss -xlpH"),
        (
            "ip.txt",
            "sh -c 'ip -d address; ip route; ip -6 route; ip rule'",
        ),
        ("nft-ruleset.txt", "nft list ruleset"),
        ("iptables.txt", "iptables-save"),
        ("last.txt", "last -Fiwx"),
        ("lastb.txt", "lastb -Fiw"),
        ("who.txt", "who -a"),
        ("lastlog.txt", "lastlog"),
        (
            "journal-sshd.txt",
            &format!("{journal} -u ssh.service -u sshd.service"),
        ),
        ("journal-sudo.txt", &format!("{journal} _COMM=sudo")),
        ("journal-agent.txt", &format!("{journal} -u \"$UNIT\"")),
        ("auth.log.tail", "tail -c \"$C\" /var/log/auth.log"),
        ("audit-agent-keys.txt", "auditlog"),
        (
            "systemd-unit-files.txt",
            "systemctl list-unit-files --no-pager --all",
        ),
        ("systemd-units.txt", "systemctl list-units --no-pager --all"),
        (
            "systemd-timers.txt",
            "systemctl list-timers --no-pager --all",
        ),
        ("users.txt", "users"),
        ("agent-unit.txt", "systemctl cat --no-pager \"$UNIT\""),
        ("sshd-effective.txt", "sshd -T"),
        (
            "crontab-listing.txt",
            "listing /etc/crontab /etc/cron.d /etc/cron.hourly /etc/cron.daily /etc/cron.weekly /etc/cron.monthly /var/spool/cron /etc/ld.so.preload /etc/sudoers.d /etc/systemd/system /etc/${AU}",
        ),
        (
            "changed-files.txt",
            &format!(
                "changed {}",
                CHANGED_TREES
                    .iter()
                    .map(|t| crate::remote::quote(t).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        (
            "changed-since-apply.txt",
            &format!(
                "since_apply {}",
                CHANGED_TREES
                    .iter()
                    .map(|t| crate::remote::quote(t).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
        ("integrity.sha256", "integrity"),
    ] {
        s = s.raw("cmd ").arg(name).raw(" ").raw(command).raw("\n");
    }
    s = s.raw("rootfiles");
    for p in super::integrity::CRON_PLACES.iter().chain(ROOT_FILES) {
        s = s.raw(" ").arg(p);
    }
    s = s.raw(
        " /root/.ssh/authorized_keys /root/.ssh/authorized_keys2 /root/.bashrc /root/.profile\n",
    );
    // Every home, read as its owner; the agent's state folder too, and its temp folders.
    s = s
        .raw("getent passwd | cut -d: -f1,6 | sort -t: -k2 -u | while IFS=: read -r un h; do\n")
        .raw("  case $h in /?*) ;; *) continue ;; esac\n  [ -d \"$h\" ] && [ \"$h\" != /root ] || continue\n")
        .raw("  extra=; [ \"$un\" = \"$AU\" ] && extra=")
        .arg(AGENT_STATE)
        // Never a user's private keys: only what the integrity listing names, and user units.
        .raw("\n  ownerfiles \"$h\" .config/systemd/user .config/autostart");
    for f in super::integrity::HOME_FILES {
        s = s.raw(" ").arg(f);
    }
    s.raw(" $extra\ndone\n")
        // The agent's folders in /tmp and in its unit's private /tmp (root-owned, sticky):
        // each folder the agent owns there, read as the agent.
        .raw("for d in /tmp /tmp/systemd-private-*-\"$UNIT\"-*/tmp; do\n  [ -d \"$d\" ] && [ ! -L \"$d\" ] || continue\n  find \"$d\" -mindepth 1 -maxdepth 1 -type d -user \"$AU\" ! -name node-compile-cache ! -name \"*$NL*\" 2>/dev/null | while IFS= read -r e; do ownerfiles \"$e\" .; done\ndone\n")
        .raw("hdr end\n")
}

/// One member of the archive, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Its name in the archive.
    pub name: String,
    /// The host's path or command it came from, when the name had to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// Cut at the member cap on the host: the archive has its first `size` bytes.
    pub truncated: bool,
    /// Read as the account that controls its folder (a home), not as root.
    pub read_as_owner: bool,
}

/// The manifest of one archive (`manifest.json`, its last member, and `<archive>.manifest.json`
/// beside it).
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub rampart_version: &'static str,
    pub host: String,
    pub address: String,
    pub login: String,
    /// SHA256 fingerprint of the host key rampart verified for this connection.
    pub host_key_fingerprint: String,
    /// When the collection started and ended, UTC, RFC 3339.
    pub collection_started: String,
    pub collection_finished: String,
    /// Every frame arrived and the script ended.
    pub complete: bool,
    /// What went wrong or was refused (a planted link, a forged frame, the size cap).
    pub problems: Vec<String>,
    pub members: Vec<Member>,
}

/// What the frames of one answer hold.
#[derive(Debug, Default)]
pub struct Parsed {
    /// (name as sent, bytes, truncated, read as owner)
    pub members: Vec<(String, Vec<u8>, bool, bool)>,
    pub problems: Vec<String>,
    pub ended: bool,
}

struct Open {
    name: String,
    b64: Vec<u8>,
    owner: bool,
}

/// Parses the frames of `out`. Pure; never panics on any input.
pub fn parse(out: &[u8], root_nonce: &str, owner_nonce: &str, member_cap: u64) -> Parsed {
    let mut p = Parsed::default();
    let mut open: Option<Open> = None;
    let mut home: Option<String> = None;
    let root = format!("{root_nonce} ");
    let owner = format!("{owner_nonce} ");
    let decode = |s: &[u8]| -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        Some(String::from_utf8_lossy(&raw).into_owned())
    };
    let close = |open: &mut Option<Open>, p: &mut Parsed| {
        if let Some(o) = open.take() {
            let mut data = match base64::engine::general_purpose::STANDARD.decode(&o.b64) {
                Ok(d) => d,
                Err(_) => {
                    // A frame cut by a cap (or garbage): keep what decodes.
                    let cut = o.b64.len() - o.b64.len() % 4;
                    p.problems.push(format!(
                        "{}: its data arrived damaged or cut; kept what decodes",
                        crate::untrusted::escape_controls(&o.name)
                    ));
                    base64::engine::general_purpose::STANDARD
                        .decode(&o.b64[..cut])
                        .unwrap_or_default()
                }
            };
            let truncated = data.len() as u64 > member_cap;
            data.truncate(member_cap as usize);
            p.members.push((o.name, data, truncated, o.owner));
        }
    };
    for line in out.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(root.as_bytes()) {
            close(&mut open, &mut p);
            let mut words = rest.splitn(2, |&b| b == b' ');
            let verb = words.next().unwrap_or_default();
            let arg = words.next().and_then(decode);
            match (verb, arg) {
                (b"member", Some(name)) => {
                    open = Some(Open {
                        name,
                        b64: Vec::new(),
                        owner: false,
                    })
                }
                (b"home", Some(dir)) => home = Some(dir),
                (b"endhome", _) => home = None,
                (b"refused", Some(why)) => p
                    .problems
                    .push(format!("not read: {}", crate::untrusted::for_error(&why))),
                (b"end", _) => p.ended = true,
                _ => p
                    .problems
                    .push("a malformed frame header from the host".into()),
            }
        } else if let (Some(dir), Some(rest)) = (&home, line.strip_prefix(owner.as_bytes())) {
            close(&mut open, &mut p);
            let name = rest.strip_prefix(b"member ".as_slice()).and_then(decode);
            let inside = format!("files{}/", dir.trim_end_matches('/'));
            match name {
                Some(n) if normalise(&n).starts_with(&inside) => {
                    open = Some(Open {
                        name: n,
                        b64: Vec::new(),
                        owner: true,
                    })
                }
                other => p.problems.push(format!(
                    "refused a frame from the owner of {dir} for a name outside it: {}",
                    crate::untrusted::for_error(&other.unwrap_or_default())
                )),
            }
        } else if let Some(o) = open.as_mut()
            && o.b64.len() as u64 <= member_cap / 3 * 4 + 8
        {
            o.b64
                .extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        }
    }
    close(&mut open, &mut p);
    p
}

/// A member name from a host's name: no empty, `.` or `..` parts, no control characters.
pub fn normalise(name: &str) -> String {
    name.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .map(|part| {
            let part: String = part
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            if part == ".." { "__".to_string() } else { part }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The archive's members: normalised, unique names that fit a tar header.
fn members_of(parsed: Parsed) -> Vec<(Member, Vec<u8>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (sent, data, truncated, owner) in parsed.members {
        let mut name = normalise(&sent);
        let mut original =
            (name != sent).then(|| crate::untrusted::escape_controls(&sent).into_owned());
        if name.is_empty() || name.len() > tar::MAX_NAME || name == "manifest.json" {
            original = Some(crate::untrusted::escape_controls(&sent).into_owned());
            name = format!("long/{}", &hex(&Sha256::digest(sent.as_bytes()))[..32]);
        }
        let base = name.clone();
        let mut n = 1;
        while !seen.insert(name.clone()) {
            n += 1;
            name = format!("{base}.{n}");
        }
        out.push((
            Member {
                name,
                original,
                size: data.len() as u64,
                sha256: hex(&Sha256::digest(&data)),
                truncated,
                read_as_owner: owner,
            },
            data,
        ));
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `2026-12-08T01:02:03Z`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{}Z", crate::report::junit::iso8601_utc(secs))
}

/// One host's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub host: String,
    /// `ok`, `incomplete` (an archive with what arrived), or `failed` (no archive).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    pub members: usize,
    pub bytes: u64,
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut buf);
    }
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hex(&Sha256::digest([buf.as_slice(), &t.to_le_bytes()].concat()))[..n * 2].to_string()
}

/// Creates `path` for writing, mode 0600, refusing one that exists.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Collects one host into `dir`.
pub async fn collect_host(
    host: &Host,
    options: &ConnectOptions,
    dir: &Path,
    limits: &Limits,
) -> Outcome {
    let mut outcome = Outcome {
        host: host.name.clone(),
        status: "failed",
        archive: None,
        manifest: None,
        members: 0,
        bytes: 0,
        problems: Vec::new(),
        error: None,
    };
    let started = SystemTime::now();
    let connected = match connect_host(host, options).await {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(match e.hint() {
                Some(h) => format!("{e}\nhint: {h}"),
                None => e.to_string(),
            });
            return outcome;
        }
    };
    let agent_user = host
        .vars
        .get("agent_user")
        .and_then(|v| v.value.as_str())
        .unwrap_or("openclaw")
        .to_string();
    let (rn, an) = (random_hex(16), random_hex(16));
    let text = match script(&rn, &an, &agent_user, limits).render() {
        Ok(t) => t,
        Err(e) => {
            outcome.error = Some(format!("cannot build the collect script: {e}"));
            return outcome;
        }
    };
    let become_root = host.become_root && connected.login != "root";
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result = connected
        .session
        .exec_watched(
            &crate::remote::exec_command(become_root),
            text.as_bytes(),
            limits.timeout,
            tx,
        )
        .await;
    let mut stdout = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        stdout.extend_from_slice(&chunk);
    }
    let mut problems = Vec::new();
    match &result {
        Ok(out) if !out.success() => problems.push(format!(
            "the collect script ended with {}\n{}",
            out.status_text(),
            out.stderr_block()
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("the collection stopped: {e}")),
    }
    let fingerprint = connected.session.host_key_fingerprint.clone();
    connected.session.close().await;
    let mut parsed = parse(&stdout, &rn, &an, limits.member);
    if parsed.members.is_empty() {
        outcome.error = Some(
            problems
                .pop()
                .unwrap_or_else(|| "the host sent no evidence".into()),
        );
        return outcome;
    }
    let complete = parsed.ended && problems.is_empty();
    if !parsed.ended && problems.is_empty() {
        problems.push("the host's answer ended before its last frame".into());
    }
    problems.append(&mut parsed.problems);
    let members = members_of(parsed);
    let finished = SystemTime::now();
    let stamp = utc(started).replace([':', '-'], "");
    let safe: String = host
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let archive = dir.join(format!("{safe}-{stamp}.tar"));
    let manifest_path = dir.join(format!("{safe}-{stamp}.tar.manifest.json"));
    let manifest = Manifest {
        rampart_version: env!("CARGO_PKG_VERSION"),
        host: host.name.clone(),
        address: host.address.clone(),
        login: connected.login.clone(),
        host_key_fingerprint: fingerprint,
        collection_started: utc(started),
        collection_finished: utc(finished),
        complete,
        problems: problems.clone(),
        members: members.iter().map(|(m, _)| m.clone()).collect(),
    };
    let write = || -> std::io::Result<u64> {
        let mtime = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let file = create_private(&archive)?;
        let mut w = tar::Writer::new(std::io::BufWriter::new(file));
        let mut bytes = 0;
        for (m, data) in &members {
            w.append(&m.name, data, mtime)?;
            bytes += data.len() as u64;
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        w.append("manifest.json", &json, mtime)?;
        let file = w.finish()?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let mut m = create_private(&manifest_path)?;
        m.write_all(&json)?;
        m.sync_all()?;
        Ok(bytes)
    };
    match write() {
        Ok(bytes) => {
            outcome.status = if complete { "ok" } else { "incomplete" };
            outcome.archive = Some(archive);
            outcome.manifest = Some(manifest_path);
            outcome.members = members.len();
            outcome.bytes = bytes;
            outcome.problems = problems;
        }
        Err(e) => {
            outcome.error = Some(format!(
                "cannot write the archive {}: {e}\nhint: -o must name a folder you can write",
                archive.display()
            ))
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(nonce: &str, name: &str, data: &[u8]) -> String {
        let e = base64::engine::general_purpose::STANDARD;
        format!("\n{nonce} member {}\n{}\n", e.encode(name), e.encode(data))
    }

    fn home(nonce: &str, dir: &str) -> String {
        let e = base64::engine::general_purpose::STANDARD;
        format!("\n{nonce} home {}\n", e.encode(dir))
    }

    #[test]
    fn frames_become_members_and_owners_stay_in_their_home() {
        let mut out = frame("R", "commands/ps.txt", b"1 init\n");
        out += &home("R", "/home/agent");
        out += &frame(
            "A",
            "files/home/agent/.ssh/authorized_keys",
            b"ssh-ed25519 AAAA x\n",
        );
        // The agent forges a frame for a root file, and one with root's verb.
        out += &frame("A", "files/etc/ld.so.preload", b"");
        out += "A end\n";
        out += "\nR endhome\n";
        // After its home ended, the owner's frames are plain data of nothing.
        out += &frame("A", "files/home/agent/late", b"x");
        out += &frame("R", "files/etc/cron.d/x", &[0u8; 10]);
        out += "\nR end\n";
        let p = parse(out.as_bytes(), "R", "A", 4);
        let names: Vec<_> = p.members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "commands/ps.txt",
                "files/home/agent/.ssh/authorized_keys",
                "files/etc/cron.d/x"
            ]
        );
        assert!(p.ended);
        // Capped at 4 bytes, marked.
        assert_eq!(p.members[0].1, b"1 in");
        assert!(p.members[0].2);
        assert!(p.members[1].3, "read as the owner");
        assert!(
            p.problems.iter().any(|x| x.contains("outside it")),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn garbage_and_cut_frames_never_panic() {
        let cut = "\nR member Y29tbWFuZHMveA==\nAAAAAAA";
        let p = parse(cut.as_bytes(), "R", "A", 100);
        assert_eq!(p.members.len(), 1);
        assert!(!p.ended);
        proptest::proptest!(|(bytes: Vec<u8>)| {
            let _ = parse(&bytes, "R", "A", 10);
        });
    }

    #[test]
    fn names_are_made_safe_for_the_archive() {
        assert_eq!(
            normalise("files//home/a/./../\u{1b}x"),
            "files/home/a/__/?x"
        );
        let parsed = Parsed {
            members: vec![
                ("files/a".into(), vec![], false, false),
                ("files/a".into(), vec![], false, false),
                (format!("files/{}", "x".repeat(300)), vec![], false, false),
            ],
            ..Parsed::default()
        };
        let m = members_of(parsed);
        assert_eq!(m[1].0.name, "files/a.2");
        assert!(m[2].0.name.starts_with("long/"));
        assert!(m[2].0.original.is_some());
    }

    #[test]
    fn utc_is_rfc3339() {
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_796_000_000)),
            "2026-11-30T00:53:20Z"
        );
    }
}
