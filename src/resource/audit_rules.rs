//! audit_rules: Linux audit rules in one rules file (`/etc/audit/rules.d/60-rampart.rules` by
//! default), and loaded into the kernel where the kernel allows it. Installing auditd and
//! running its service are `package` and `service` steps.
//!
//! `rules` are lines as `auditctl` reads them from a rules file: watches
//! (`-w /home/moltbot/.openclaw -p rwxa -k agent-config`), syscall rules
//! (`-a always,exit -F arch=b64 -S execve -F uid=1001 -k agent-exec`), control settings
//! (`-b 8192`, `-f 1`, `-r 100`, `-e 1|2`, `--backlog_wait_time N`, `--loginuid-immutable`)
//! and `#` comments. The file holds exactly these lines after a header comment.
//!
//! Refused when the step is loaded, because they could never be checked or would break other
//! files' rules: `-D` (it deletes the rules of every file loaded before this one); a syscall
//! rule that names syscalls without an `-F arch=b64|b32` before its first `-S` (auditctl
//! then looks the names up in one table and lists them from another: `execve` comes back as
//! `oldolduname`); syscalls by number (they are listed by name); the same rule twice (auditctl
//! refuses the second with "Rule exists"); options that do not belong in a rules file.
//!
//! ## Where audit works
//!
//! The kernel takes audit requests only from its initial PID and network namespace: in a
//! container (nspawn, Docker, LXC) `auditctl -s` fails. There the file is still written (it
//! is what the host will load if the same disk boots a kernel that audits), and the step
//! says so explicitly: a plan that has to write the file shows a `loaded` change,
//! `unavailable (no kernel audit in this container) -> not loaded: rules written to FILE
//! only`, and once the file is right the step is in line with the sentence
//! "audit unavailable here (no kernel audit in this container): rules written to FILE, not
//! loaded", so a nightly check on a container does not report drift forever (the report
//! prints an in-line step's sentence unless it is a plain "… is in line", which is what this
//! step says where audit works). When the kernel refuses for another reason (not root), the
//! reason is auditctl's own message.
//!
//! Without `auditctl` (auditd not installed), container or not, the control cannot work
//! anywhere, so the step is never in line: the plan shows `loaded`, `auditctl is not
//! installed (auditd missing) -> the rules of FILE loaded`, and the apply fails plainly
//! before writing anything unless an earlier step of the same apply (a `package` step for
//! auditd) has installed it by then.
//!
//! ## How loaded rules are compared
//!
//! `auditctl -l` prints the kernel's form of each rule, not the text that was loaded: keys
//! as `-F key=K`, `-p aw` as `-p wa`, syscalls merged into one `-S` list in the kernel's
//! order, `-a exit,always` as `-a always,exit`, `-A` as `-a`, `arch=x86_64` as `b64`, user
//! and group names as numbers, `auid!=unset` and `4294967295` as `-1`, `-F a0=16` as
//! `a0=0x10`, `-F exit=-13` as `-EACCES`, and a path or dir rule with only a `perm` filter as
//! a watch. Both sides are brought to one canonical form: watch (path without a trailing
//! `/`, permissions in `rwxa` order, keys) or syscall rule (list, action, arch, the SET of
//! syscalls, `all` meaning none named, the MULTISET of fields each with its value
//! normalized as above, keys). The probe resolves the user and group names the rules use
//! (`id -u`, `getent group`) so that they compare by number. A rule is loaded when its
//! canonical form is among those of `auditctl -l`; only missing rules count: rules of other
//! files are not this step's business, and the order of rules is not compared. Known
//! limits, documented rather than guessed: `exit` errnos are compared by name for 1 to 34
//! (write others by name), and fields that auditctl prints symbolically from numbers
//! (`msgtype`) should be written as it prints them. A rule that still never compares as
//! loaded shows up as drift right after its own apply, which the engine reports as an error
//! ("not idempotent"), never as a silent success.
//!
//! ## Apply
//!
//! The file is written atomically (temporary file in its folder, mode 0640, renamed; the
//! folder is made, mode 0750, when missing), the old one backed up. Then, where `auditctl
//! -s` works at apply time: a file in `/etc/audit/rules.d/*.rules` is loaded with
//! `augenrules --load`, as at boot (it reloads every file there, after the `-D` that the
//! distribution's own `audit.rules` starts with, so rules removed from the list go too);
//! any other file, or a host without augenrules, gets each missing rule loaded with
//! `auditctl` (rules removed from the list then stay loaded until the next boot). When the
//! rules are locked (`-e 2` in force) and some are missing, the apply writes the file and
//! then fails, saying that the rules load at the next boot.
//!
//! ## Probe output
//!
//! The file as `json_config` probes it (`kind`, `stat`, `content` … `end`: the probe of one
//! regular file in [`fsfile`](super::fsfile)), then:
//!
//! ```text
//! container <name>|none            (systemd-detect-virt -c, /.dockerenv, /run/.containerenv)
//! augenrules yes|no
//! audit ok <enabled>|missing|refused <base64 of auditctl's message>
//! loaded                           (audit ok)
//! <base64 of `auditctl -l`, in lines>
//! end
//! user <name> <uid>|-              (each user name the rules use)
//! group <name> <gid>|-             (each group name the rules use)
//! ```

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use serde::Deserialize;

use super::fsfile::{
    FileKind, FileState, Perms, Write, apply_script, backup_path, base64_block, check_file_path,
    parse_file, probe_file, redacted, refusal, shown,
};
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
use crate::remote::Script;

pub const AUDIT_RULES: TypeInfo = TypeInfo {
    name: "audit_rules",
    params: &["rules", "file"],
    build: |v| {
        Ok(Box::new(AuditRules::try_from(params::<AuditRulesParams>(
            v,
        )?)?))
    },
};

/// Where the rules go unless `file` says otherwise.
pub const DEFAULT_FILE: &str = "/etc/audit/rules.d/60-rampart.rules";

/// The folder augenrules builds the kernel's rules from (its `*.rules` files).
const RULES_D: &str = "/etc/audit/rules.d";

crate::fields! {
    /// The fields of an `audit_rules` step.
    pub enum AuditField {
        /// The rules file.
        Content = "content",
        /// The rules loaded in the kernel.
        Loaded = "loaded",
    }
}

/// What the probe found, with its output redacted (quoted by errors).
pub struct AuditFound {
    obs: Observed,
    redacted: String,
}

/// The `before` of `loaded` on a host without auditctl.
const MISSING: &str = "auditctl is not installed (auditd missing)";

/// The first line of the file.
const HEADER: &str = "## Written by rampart (audit_rules): changes made here are undone.";

/// Options that set the audit system up rather than add a rule; not compared when loaded.
const CONTROL: &[&str] = &[
    "-b",
    "-f",
    "-r",
    "-e",
    "--backlog_wait_time",
    "--loginuid-immutable",
];

/// Fields that hold a user, and a group: names are listed as numbers.
const USER_FIELDS: &[&str] = &[
    "uid", "euid", "suid", "fsuid", "auid", "loginuid", "obj_uid",
];
const GROUP_FIELDS: &[&str] = &["gid", "egid", "sgid", "fsgid", "obj_gid"];

fn default_file() -> String {
    DEFAULT_FILE.to_string()
}

/// `audit_rules` as written in the playbook (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRulesParams {
    pub rules: Vec<String>,
    #[serde(default = "default_file")]
    pub file: String,
}

/// One line of the rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Comment(String),
    Control(String),
    Rule { text: String, rule: Box<Rule> },
}

/// A rule as its options say, before normalization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    watch: Option<String>,
    perms: Option<String>,
    /// `(list, action)`, whichever order they were written in.
    list_action: Option<(String, String)>,
    syscalls: Vec<String>,
    fields: Vec<Field>,
    compares: Vec<String>,
    keys: Vec<String>,
    /// Syscalls were named before any `-F arch=`.
    syscalls_before_arch: bool,
    /// The option words, for loading the rule with `auditctl`.
    words: Vec<String>,
}

/// `-F name<op>value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    op: String,
    value: String,
}

/// A rule in a form that the text loaded and the kernel's listing of it share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Canon {
    Watch {
        path: String,
        perms: String,
        keys: Vec<String>,
    },
    Syscall {
        list: String,
        action: String,
        arch: Option<String>,
        syscalls: Vec<String>,
        fields: Vec<String>,
        keys: Vec<String>,
    },
}

/// User and group names with their numbers on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ids {
    users: HashMap<String, String>,
    groups: HashMap<String, String>,
}

/// `audit_rules`: the rules file, and the rules loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRules {
    pub file: String,
    lines: Vec<Line>,
    /// The file's whole content.
    content: String,
    /// User and group names in the rules, resolved by the probe.
    users: Vec<String>,
    groups: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing rules.

/// Splits `-a`'s value into `(list, action)`.
fn list_action(value: &str) -> Result<(String, String), String> {
    const LISTS: &[&str] = &["task", "exit", "user", "exclude", "filesystem", "io_uring"];
    const ACTIONS: &[&str] = &["never", "always"];
    let bad = || {
        format!(
            "-a {value}: expected a list ({}) and an action ({}), as in -a always,exit",
            LISTS.join(", "),
            ACTIONS.join(", ")
        )
    };
    let (a, b) = value.split_once(',').ok_or_else(bad)?;
    if LISTS.contains(&a) && ACTIONS.contains(&b) {
        Ok((a.to_string(), b.to_string()))
    } else if LISTS.contains(&b) && ACTIONS.contains(&a) {
        Ok((b.to_string(), a.to_string()))
    } else {
        Err(bad())
    }
}

/// `auid>=1000` -> `(auid, >=, 1000)`.
fn field(text: &str) -> Result<Field, String> {
    let bad = || format!("-F {text}: expected NAME=VALUE (or !=, <, >, <=, >=, &, &=)");
    let at = text.find(['=', '!', '<', '>', '&']).ok_or_else(bad)?;
    let rest = &text[at..];
    let op = ["!=", "<=", ">=", "&=", "=", "<", ">", "&"]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(bad)?;
    let (name, value) = (&text[..at], &rest[op.len()..]);
    if name.is_empty() || value.is_empty() {
        return Err(bad());
    }
    Ok(Field {
        name: name.to_string(),
        op: op.to_string(),
        value: value.to_string(),
    })
}

/// Reads one rule's options (as written, or as `auditctl -l` lists them).
fn parse_rule(text: &str) -> Result<Rule, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut rule = Rule {
        words: words.iter().map(|w| w.to_string()).collect(),
        ..Rule::default()
    };
    let mut it = words.iter();
    let mut arch_seen = false;
    while let Some(&opt) = it.next() {
        let Some(&value) = it.next() else {
            return Err(format!("{opt} needs a value"));
        };
        match opt {
            "-w" => rule.watch = Some(value.to_string()),
            "-p" => rule.perms = Some(value.to_string()),
            "-a" | "-A" => rule.list_action = Some(list_action(value)?),
            "-S" => {
                rule.syscalls_before_arch |= !arch_seen && value.split(',').any(|s| s != "all");
                rule.syscalls.extend(value.split(',').map(str::to_string));
            }
            "-F" => {
                let f = field(value)?;
                arch_seen |= f.name == "arch";
                rule.fields.push(f);
            }
            "-C" => rule.compares.push(value.to_string()),
            "-k" => rule.keys.push(value.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(rule)
}

/// Checks a rule of the playbook: what auditctl would refuse, and what could not be
/// compared with its listing (see the module doc).
fn check_rule(text: &str, rule: &Rule) -> Result<(), String> {
    match (&rule.watch, &rule.list_action) {
        (Some(path), None) => {
            if !path.starts_with('/') {
                return Err(format!("the watched path {path} is not absolute"));
            }
            if !rule.syscalls.is_empty() || !rule.fields.is_empty() || !rule.compares.is_empty() {
                return Err(
                    "a watch (-w) takes only -p and -k; write a syscall rule (-a) \
                            for -S, -F or -C"
                        .into(),
                );
            }
            if let Some(p) = &rule.perms
                && (p.is_empty() || !p.chars().all(|c| "rwxa".contains(c)))
            {
                return Err(format!("-p {p}: permissions are letters of rwxa"));
            }
        }
        (None, Some(_)) => {
            if rule.perms.is_some() {
                return Err("-p belongs to watches (-w); in a syscall rule write -F perm=".into());
            }
            if let Some(s) = rule
                .syscalls
                .iter()
                .find(|s| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "-S {s}: name syscalls (auditctl lists them by name, so a number could \
                     never be found loaded)"
                ));
            }
            if rule.syscalls_before_arch {
                return Err(
                    "syscalls named without an -F arch=b64 (or b32) before the first -S: \
                     auditctl then reads the names in one table and lists them from another \
                     (execve comes back as oldolduname), and refuses an arch given after -S; \
                     write -F arch=b64 first (and a b32 twin when 32-bit calls matter)"
                        .into(),
                );
            }
        }
        (Some(_), Some(_)) => return Err("a rule is either a watch (-w) or -a, not both".into()),
        (None, None) => {
            return Err(format!(
                "{text:?} is neither a watch (-w PATH) nor a syscall rule (-a LIST,ACTION)"
            ));
        }
    }
    Ok(())
}

fn parse_line(text: &str) -> Result<Line, String> {
    let text = text.trim();
    let first = text.split_whitespace().next().unwrap_or("");
    if text.is_empty() {
        Err("an empty rule; leave it out".into())
    } else if text.contains('\n') {
        Err("a rule holds a newline; give each rule as its own list item".into())
    } else if text.starts_with('#') {
        Ok(Line::Comment(text.to_string()))
    } else if first == "-D" {
        Err(
            "-D deletes the rules of every file loaded before this one (augenrules loads them \
             all); the distribution's own audit.rules already starts with it"
                .into(),
        )
    } else if CONTROL.contains(&first) {
        Ok(Line::Control(text.to_string()))
    } else if first == "-w" || first == "-a" || first == "-A" {
        let rule = parse_rule(text)?;
        check_rule(text, &rule)?;
        Ok(Line::Rule {
            text: text.to_string(),
            rule: Box::new(rule),
        })
    } else {
        Err(format!(
            "a rules file holds watches (-w), syscall rules (-a, -A), control settings ({}) \
             and # comments, not {first}",
            CONTROL.join(" ")
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Normalization.

fn perms_in_order(p: &str) -> String {
    "rwxa".chars().filter(|c| p.contains(*c)).collect()
}

fn without_trailing_slash(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

fn arch_class(v: &str) -> String {
    match v.to_ascii_lowercase().as_str() {
        "b64" | "x86_64" | "aarch64" | "ppc64" | "ppc64le" | "s390x" | "ia64" | "riscv64"
        | "loongarch64" => "b64".into(),
        "b32" | "i386" | "i486" | "i586" | "i686" | "arm" | "armeb" | "armv5tejl" | "armv5tel"
        | "armv6l" | "armv7l" | "ppc" | "s390" => "b32".into(),
        other => other.into(),
    }
}

/// A C integer: `16`, `0x10`, `020`, `-1`.
fn c_int(s: &str) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(h, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Errno names by number, 1 to 34: the same on every Linux architecture.
const ERRNOS: [&str; 34] = [
    "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD",
    "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV",
    "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC",
    "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM", "ERANGE",
];

fn field_value(name: &str, value: &str, ids: &Ids) -> String {
    let id = |map: &HashMap<String, String>| {
        if value == "unset" || value == "4294967295" || value == "-1" {
            "-1".to_string()
        } else if let Some(n) = c_int(value) {
            n.to_string()
        } else {
            map.get(value).cloned().unwrap_or_else(|| value.to_string())
        }
    };
    match name {
        _ if USER_FIELDS.contains(&name) => id(&ids.users),
        _ if GROUP_FIELDS.contains(&name) => id(&ids.groups),
        "a0" | "a1" | "a2" | "a3" => match c_int(value) {
            // The kernel keeps 32 bits: -1 is listed as 0xFFFFFFFF.
            Some(n) => format!("{:#x}", (n as i64) as u32),
            None => value.to_string(),
        },
        "perm" => perms_in_order(value),
        "path" | "dir" => without_trailing_slash(value),
        "exit" => match value
            .strip_prefix('-')
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n @ 1..=34) => format!("-{}", ERRNOS[n - 1]),
            _ => value.to_string(),
        },
        _ => value.to_string(),
    }
}

fn canon(rule: &Rule, ids: &Ids) -> Option<Canon> {
    let mut keys = rule.keys.clone();
    let mut arch = None;
    let mut rest = Vec::new();
    for f in &rule.fields {
        match f.name.as_str() {
            "key" => keys.push(f.value.clone()),
            "arch" if f.op == "=" => arch = Some(arch_class(&f.value)),
            _ => rest.push(f),
        }
    }
    keys.sort();
    if let Some(path) = &rule.watch {
        return Some(Canon::Watch {
            path: without_trailing_slash(path),
            perms: perms_in_order(rule.perms.as_deref().unwrap_or("rwxa")),
            keys,
        });
    }
    let (list, action) = rule.list_action.clone()?;
    let syscalls: BTreeSet<&str> = rule.syscalls.iter().map(String::as_str).collect();
    let syscalls: Vec<String> = if syscalls.contains("all") {
        Vec::new()
    } else {
        syscalls.into_iter().map(str::to_string).collect()
    };
    // A path or dir rule on every syscall with a perm filter and nothing else: the kernel
    // lists it as a watch.
    if list == "exit"
        && action == "always"
        && arch.is_none()
        && syscalls.is_empty()
        && rule.compares.is_empty()
        && let [a, b] = rest[..]
        && a.op == "="
        && b.op == "="
    {
        let (target, perm) = if b.name == "perm" { (a, b) } else { (b, a) };
        if matches!(target.name.as_str(), "path" | "dir") && perm.name == "perm" {
            return Some(Canon::Watch {
                path: without_trailing_slash(&target.value),
                perms: perms_in_order(&perm.value),
                keys,
            });
        }
    }
    let mut fields: Vec<String> = rest
        .iter()
        .map(|f| format!("{}{}{}", f.name, f.op, field_value(&f.name, &f.value, ids)))
        .chain(rule.compares.iter().map(|c| format!("-C {c}")))
        .collect();
    fields.sort();
    Some(Canon::Syscall {
        list,
        action,
        arch,
        syscalls,
        fields,
        keys,
    })
}

/// The canonical forms of `auditctl -l`'s lines; lines that are not rules ("No rules") are
/// left out.
fn listed(text: &str) -> BTreeSet<Canon> {
    text.lines()
        .filter_map(|l| parse_rule(l).ok())
        .filter_map(|r| canon(&r, &Ids::default()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The resource.

impl TryFrom<AuditRulesParams> for AuditRules {
    type Error = ParamError;
    fn try_from(p: AuditRulesParams) -> Result<AuditRules, ParamError> {
        check_file_path("audit_rules", &p.file)?;
        let name = p.file.rsplit('/').next().unwrap_or("");
        if p.file.starts_with(&format!("{RULES_D}/")) && !name.ends_with(".rules") {
            return Err(ParamError(format!(
                "audit_rules: file {:?} is in {RULES_D} but does not end in .rules: augenrules \
                 would never load it",
                p.file
            )));
        }
        if p.rules.is_empty() {
            return Err(ParamError(
                "audit_rules: no rules; give at least one (an `absent` step removes a file)".into(),
            ));
        }
        let mut lines = Vec::new();
        for text in &p.rules {
            let line =
                parse_line(text).map_err(|e| ParamError(format!("audit_rules: {text:?}: {e}")))?;
            lines.push(line);
        }
        let mut seen: Vec<(Canon, &str)> = Vec::new();
        let (mut users, mut groups) = (BTreeSet::new(), BTreeSet::new());
        for line in &lines {
            let Line::Rule { text, rule } = line else {
                continue;
            };
            let c = canon(rule, &Ids::default()).expect("checked rules have a kind");
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == c) {
                return Err(ParamError(format!(
                    "audit_rules: {first:?} and {text:?} are the same rule (auditctl refuses \
                     the second: Rule exists)"
                )));
            }
            seen.push((c, text));
            for f in &rule.fields {
                let named = f
                    .value
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && f.value != "unset"
                    && f.value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$'));
                if named && USER_FIELDS.contains(&f.name.as_str()) {
                    users.insert(f.value.clone());
                } else if named && GROUP_FIELDS.contains(&f.name.as_str()) {
                    groups.insert(f.value.clone());
                }
            }
        }
        let mut content = format!("{HEADER}\n");
        for line in &lines {
            let (Line::Comment(t) | Line::Control(t) | Line::Rule { text: t, .. }) = line;
            content.push_str(t);
            content.push('\n');
        }
        Ok(AuditRules {
            file: p.file,
            lines,
            content,
            users: users.into_iter().collect(),
            groups: groups.into_iter().collect(),
        })
    }
}

/// What the probe found about audit on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Audit {
    Usable {
        /// `enabled` of `auditctl -s`: 0 off, 1 on, 2 locked until the next boot.
        enabled: Option<u32>,
        loaded: BTreeSet<Canon>,
    },
    /// Why not.
    Unavailable(String),
    /// No `auditctl`: auditd is not installed, so the rules could never load, here or at boot.
    Missing,
}

#[derive(Debug)]
struct Observed {
    file: FileState,
    audit: Audit,
    ids: Ids,
}

fn parse(out: &str) -> Result<Observed, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &str| {
        b64.decode(s.trim())
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .map_err(|e| format!("not base64 ({e}): {s:?}"))
    };
    let mut lines = out.lines().peekable();
    let file = parse_file(&mut lines)?;
    let mut container = None;
    let mut audit = None;
    let mut ids = Ids::default();
    while let Some(line) = lines.next() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "container" if !rest.is_empty() => container = Some(rest.to_string()),
            "augenrules" if rest == "yes" || rest == "no" => {}
            "audit" => {
                let (state, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                audit = Some(match state {
                    "missing" => Err(None),
                    "refused" => Err(Some(decode(arg)?)),
                    "ok" => {
                        let enabled = arg.parse().ok();
                        if lines.next() != Some("loaded") {
                            return Err("`audit ok` without the `loaded` rules after it".into());
                        }
                        let listing = base64_block(&mut lines)
                            .ok_or("the loaded rules have no `end` line")?
                            .map_err(|e| format!("the loaded rules are not base64: {e}"))?;
                        Ok(Audit::Usable {
                            enabled,
                            loaded: listed(&String::from_utf8_lossy(&listing)),
                        })
                    }
                    _ => return Err(format!("unexpected line {line:?}")),
                });
            }
            "listing" => {
                return Err(format!(
                    "auditctl -s works but auditctl -l failed: {}",
                    decode(rest.strip_prefix("failed ").unwrap_or(rest))?
                ));
            }
            "user" | "group" => {
                let (name, id) = rest
                    .rsplit_once(' ')
                    .ok_or_else(|| format!("unexpected line {line:?}"))?;
                if id != "-" {
                    let map = if key == "user" {
                        &mut ids.users
                    } else {
                        &mut ids.groups
                    };
                    map.insert(name.to_string(), id.to_string());
                }
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    let container = container.ok_or("no `container` line")?;
    let audit = match audit.ok_or("no `audit` line")? {
        Ok(a) => a,
        Err(None) => Audit::Missing,
        Err(_) if container != "none" => {
            Audit::Unavailable("no kernel audit in this container".into())
        }
        Err(Some(msg)) => Audit::Unavailable(format!("auditctl -s failed: {msg}")),
    };
    Ok(Observed { file, audit, ids })
}

impl AuditRules {
    fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Rule { text, rule } => Some((text.as_str(), &**rule)),
            _ => None,
        })
    }

    /// The rule lines, one a line with a final newline; `None` when there are none.
    fn listing<'a>(rules: impl Iterator<Item = &'a str>) -> Option<String> {
        let text: String = rules.map(|r| format!("{r}\n")).collect();
        (!text.is_empty()).then_some(text)
    }

    /// The file's folder is augenrules' and its name one that augenrules reads.
    fn augenrules_reads_it(&self) -> bool {
        self.file
            .strip_prefix(RULES_D)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && name.ends_with(".rules"))
    }
}

impl Resource for AuditRules {
    fn fs_path(&self) -> Option<&str> {
        Some(&self.file)
    }

    fn id(&self) -> String {
        format!("audit_rules {}", shown(&self.file))
    }

    fn probe(&self) -> Script {
        let mut s = probe_file(&self.file).raw(
            "(\nc=$(systemd-detect-virt -c 2>/dev/null) || c=\n\
             case $c in ''|none)\n\
             \x20 if [ -e /.dockerenv ]; then c=docker\n\
             \x20 elif [ -e /run/.containerenv ]; then c=podman\n\
             \x20 else c=$(tr '\\0' '\\n' </proc/1/environ 2>/dev/null | sed -n 's/^container=//p' | head -n 1)\n\
             \x20 fi;;\n\
             esac\n\
             printf 'container %s\\n' \"$(printf '%s' \"${c:-none}\" | tr -c 'A-Za-z0-9_.-' _)\"\n\
             if command -v augenrules >/dev/null 2>&1; then echo 'augenrules yes'; else echo 'augenrules no'; fi\n\
             if ! command -v auditctl >/dev/null 2>&1; then echo 'audit missing'\n\
             elif s=$(auditctl -s 2>&1); then\n\
             \x20 if l=$(auditctl -l 2>&1); then\n\
             \x20   printf 'audit ok %s\\nloaded\\n' \"$(printf '%s\\n' \"$s\" | sed -n 's/^enabled \\([0-9][0-9]*\\).*/\\1/p' | head -n 1)\"\n\
             \x20   printf '%s\\n' \"$l\" | base64; echo end\n\
             \x20 else printf 'listing failed %s\\n' \"$(printf '%s' \"$l\" | head -n 1 | base64 | tr -d '\\n')\"; fi\n\
             else printf 'audit refused %s\\n' \"$(printf '%s' \"$s\" | head -n 1 | base64 | tr -d '\\n')\"; fi\n",
        );
        for u in &self.users {
            s = s
                .raw("u=")
                .arg(u)
                .raw("\nprintf 'user %s %s\\n' \"$u\" \"$(id -u \"$u\" 2>/dev/null || echo -)\"\n");
        }
        for g in &self.groups {
            s = s.raw("g=").arg(g).raw(
                "\nn=$(getent group \"$g\" 2>/dev/null | cut -d: -f3)\n\
                 printf 'group %s %s\\n' \"$g\" \"${n:--}\"\n",
            );
        }
        s.raw(")\n")
    }
}

impl Typed for AuditRules {
    type Observed<'a> = AuditFound;
    type Field = AuditField;

    fn parse(&self, probe_output: &str) -> Result<AuditFound, ProbeError> {
        refusal(probe_output)?;
        let redacted = redacted(probe_output);
        let obs = parse(probe_output).map_err(|m| ProbeError::new(m, &redacted))?;
        Ok(AuditFound { obs, redacted })
    }

    fn compare(&self, found: &AuditFound) -> Result<Verdict<AuditField>, ProbeError> {
        let err = |m: String| ProbeError::new(m, &found.redacted);
        let obs = &found.obs;
        let file = shown(&self.file);
        let before = match obs.file.kind {
            FileKind::None => None,
            FileKind::File => Some(match &obs.file.content {
                Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                None => "<a file larger than 1 MiB>".to_string(),
            }),
            FileKind::Link | FileKind::Dir | FileKind::Other => {
                return Err(err(format!(
                    "{file} is not a regular file (a symlink, folder or special file); \
                     audit_rules writes a regular file there only after an absent step"
                )));
            }
        };
        let mut changes = Vec::new();
        if before.as_deref() != Some(self.content.as_str()) {
            changes.push(Change::of(
                AuditField::Content,
                before.clone(),
                Some(self.content.clone()),
            ));
        }
        let count = self.rules().count();
        let in_line = match &obs.audit {
            // Never in line: a later apply installs nothing, it fails unless an earlier step
            // (a `package` step for auditd) has put auditctl there by then.
            Audit::Missing => {
                changes.push(Change::of(
                    AuditField::Loaded,
                    Some(MISSING.into()),
                    Some(format!("the rules of {file} loaded")),
                ));
                String::new()
            }
            Audit::Unavailable(reason) => {
                let sentence = format!(
                    "audit unavailable here ({reason}): rules written to {file}, not loaded"
                );
                if changes.is_empty() {
                    return Ok(Verdict::InLine(format!("{}: {sentence}", self.id())));
                }
                changes.push(Change::of(
                    AuditField::Loaded,
                    Some(format!("unavailable ({reason})")),
                    Some(format!("not loaded: rules written to {file} only")),
                ));
                String::new()
            }
            Audit::Usable { enabled, loaded } => {
                let is_loaded =
                    |rule: &Rule| canon(rule, &obs.ids).is_some_and(|c| loaded.contains(&c));
                if self.rules().any(|(_, r)| !is_loaded(r)) {
                    changes.push(Change::of(
                        AuditField::Loaded,
                        Self::listing(self.rules().filter(|(_, r)| is_loaded(r)).map(|(t, _)| t)),
                        Self::listing(self.rules().map(|(t, _)| t)),
                    ));
                }
                // Plain "is in line" unless there is more to say: the report shows the rest.
                let mut s = format!("{} is in line", self.id());
                if *enabled == Some(0) {
                    s.push_str(&format!(
                        ": its {count} rules are loaded, but auditing is disabled (enabled 0), \
                         so they record nothing"
                    ));
                }
                s
            }
        };
        if changes.is_empty() {
            Ok(Verdict::InLine(in_line))
        } else if before.is_none() {
            Ok(Verdict::Create(changes))
        } else {
            Ok(Verdict::Modify(changes))
        }
    }

    /// As a notified handler: the rules loaded again if audit is usable (nothing is missing,
    /// so only augenrules reloads), the file left alone.
    fn converge(&self, work: Work<'_, AuditField>, ctx: &ApplyContext) -> Script {
        let changes = match work {
            Work::Converge(Verdict::Create(c) | Verdict::Modify(c)) => c,
            Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) => return Script::new(),
            Work::Notified => &Vec::new(),
        };
        let mut s = Script::new();
        if changes
            .iter()
            .any(|c| c.field == AuditField::Loaded && c.before.as_deref() == Some(MISSING))
        {
            // Checked before anything is written: an earlier step of the same apply may have
            // installed auditd since the probe.
            s = s.raw(
                "PATH=\"$PATH:/usr/sbin:/sbin\"\ncommand -v auditctl >/dev/null 2>&1 || die \
                 \"auditctl is not installed, so no audit rule can load (here or at boot); \
                 install auditd first (a package step for auditd before this step)\"\n",
            );
        }
        if changes.iter().any(|c| c.field == AuditField::Content) {
            s = s.then(
                Write {
                    path: &self.file,
                    content: self.content.as_bytes(),
                    perms: &Perms {
                        mode: Some(0o640),
                        ..Perms::default()
                    },
                    new_mode: 0o640,
                    backup: Some(backup_path(ctx, &self.file)),
                    check: Script::new(),
                    make_folder: true,
                    replace_link: false,
                }
                .script(),
            );
        } else {
            s = s.raw("p=").arg(&self.file).raw("\n");
        }
        // The rules the diff found missing: those not on the `before` side of `loaded`. When
        // audit was unavailable that side names no rule, and the check below skips loading.
        let missing: Vec<(&str, &Rule)> =
            match changes.iter().find(|c| c.field == AuditField::Loaded) {
                Some(c) => {
                    let had: Vec<&str> = c.before.as_deref().unwrap_or("").lines().collect();
                    self.rules().filter(|(t, _)| !had.contains(t)).collect()
                }
                None => Vec::new(),
            };
        let mut one_by_one = Script::new().raw("      :\n");
        for (text, rule) in &missing {
            one_by_one = one_by_one.raw("      r=").arg(text).raw("\n      auditctl");
            for w in &rule.words {
                one_by_one = one_by_one.raw(" ").arg(w);
            }
            one_by_one =
                one_by_one.raw(" >/dev/null || die \"auditctl could not load the rule: $r\"\n");
        }
        // Whether audit works is checked again here: the file is written either way.
        s = s.raw(
            "if command -v auditctl >/dev/null 2>&1 && st=$(auditctl -s 2>/dev/null); then\n\
             \x20 if printf '%s\\n' \"$st\" | grep -q '^enabled 2'; then\n",
        );
        s = if missing.is_empty() {
            s.raw("    :\n")
        } else {
            s.raw(
                "    die \"audit rules are locked until the next boot (auditctl -e 2 is in \
                 force): $p is written and loads then; reboot the host\"\n",
            )
        };
        s = s.raw("  else\n");
        s = if self.augenrules_reads_it() {
            s.raw(
                "    if command -v augenrules >/dev/null 2>&1; then\n\
                 \x20     out=$(augenrules --load 2>&1) || die \"augenrules --load failed: $out\"\n\
                 \x20   else\n",
            )
            .then(one_by_one)
            .raw("    fi\n")
        } else {
            s.then(one_by_one)
        };
        s = s.raw("  fi\nfi\n");
        apply_script(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::b64;
    use crate::resource::converge_one;
    use crate::transport::local::LocalSession;
    use serde_json::{Value, json};

    fn build(v: Value) -> AuditRules {
        AuditRules::try_from(params::<AuditRulesParams>(v).unwrap()).unwrap()
    }

    fn build_err(v: Value) -> String {
        (AUDIT_RULES.build)(v).unwrap_err().to_string()
    }

    const WATCH: &str = "-w /home/moltbot/.openclaw -p rwxa -k agent-config";
    const EXEC: &str = "-a always,exit -F arch=b64 -S execve -F uid=moltbot -k agent-exec";

    fn agent() -> AuditRules {
        build(json!({"rules": ["# the agent", WATCH, EXEC, "-b 8192"]}))
    }

    /// Probe output: the file (or none), then the audit lines.
    fn probed(file: Option<&str>, audit: &str) -> String {
        let file = match file {
            None => "kind none\n".to_string(),
            Some(c) => format!(
                "kind file\nstat root 0 root 0 640 {}\ncontent\n{}\nend\n",
                c.len(),
                b64(c)
            ),
        };
        format!("{file}{audit}")
    }

    fn usable(listing: &str) -> String {
        format!(
            "container none\naugenrules yes\naudit ok 1\nloaded\n{}\nend\nuser moltbot 1001\n",
            b64(listing)
        )
    }

    const LISTED: &str = "-w /home/moltbot/.openclaw -p rwxa -k agent-config\n\
                          -a always,exit -F arch=b64 -S execve -F uid=1001 -F key=agent-exec\n\
                          -w /etc/passwd -p wa -k identity\n";

    // ---- parameters ----

    #[test]
    fn params_and_the_file_written() {
        let v = json!({"rules": [WATCH], "file": "/etc/audit/rules.d/70-x.rules"});
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, AUDIT_RULES.params);
        build(v);
        let r = agent();
        assert_eq!(r.file, DEFAULT_FILE);
        assert_eq!(r.id(), "audit_rules /etc/audit/rules.d/60-rampart.rules");
        assert_eq!(
            r.content,
            format!("{HEADER}\n# the agent\n{WATCH}\n{EXEC}\n-b 8192\n")
        );
        assert_eq!(r.users, ["moltbot"]);
    }

    #[test]
    fn rules_that_could_not_be_loaded_or_checked_are_refused() {
        for (rules, want) in [
            (
                json!(["-D"]),
                "-D deletes the rules of every file loaded before this one",
            ),
            (
                json!(["-a always,exit -S execve -k x"]),
                "syscalls named without an -F arch=b64 (or b32) before the first -S",
            ),
            (
                json!(["-a always,exit -S execve -F arch=b64 -k x"]),
                "syscalls named without an -F arch=b64 (or b32) before the first -S",
            ),
            (
                json!(["-a always,exit -F arch=b64 -S 59 -k x"]),
                "-S 59: name syscalls",
            ),
            (
                json!([
                    "-a always,exit -F arch=b64 -S execve -k x",
                    "-a exit,always -F arch=x86_64 -S execve -F key=x"
                ]),
                "are the same rule (auditctl refuses the second: Rule exists)",
            ),
            (json!(["-l"]), "not -l"),
            (json!([""]), "an empty rule; leave it out"),
            (
                json!(["-w /a\n-w /b"]),
                "give each rule as its own list item",
            ),
            (
                json!(["-w relative"]),
                "the watched path relative is not absolute",
            ),
            (
                json!(["-w /a -p rwq"]),
                "-p rwq: permissions are letters of rwxa",
            ),
            (
                json!(["-w /a -F uid=0"]),
                "a watch (-w) takes only -p and -k",
            ),
            (
                json!(["-a always,sometimes"]),
                "-a always,sometimes: expected a list",
            ),
            (
                json!(["-a always,exit -F arch=b64 -S execve -F uid"]),
                "-F uid: expected NAME=VALUE",
            ),
            (json!(["-w /a -k"]), "-k needs a value"),
            (json!([]), "audit_rules: no rules"),
        ] {
            let err = build_err(json!({ "rules": rules }));
            assert!(err.contains(want), "{rules}: {err}");
        }
        let err = build_err(json!({"rules": [WATCH], "file": "/etc/audit/rules.d/x.conf"}));
        assert!(err.contains("augenrules would never load it"), "{err}");
        let err = build_err(json!({"rules": [WATCH], "file": "rules"}));
        assert!(err.contains("is not absolute"), "{err}");
    }

    // ---- normalization, on what vm1's auditctl 3.0.9 listed for each rule loaded ----

    #[test]
    fn each_rule_compares_equal_to_the_kernels_listing_of_it() {
        let ids = Ids {
            users: [("daemon".to_string(), "1".to_string())].into(),
            groups: [("adm", "4"), ("daemon", "1")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into(),
        };
        let pairs = [
            ("-w /tmp/rxp/f -k rxp1", "-w /tmp/rxp/f -p rwxa -k rxp1"),
            (
                "-w /tmp/rxp/d/ -p aw -k rxp2 -k rxp2b",
                "-w /tmp/rxp/d -p wa -k rxp2 -k rxp2b",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=unset -F key=rxp4",
                "-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=-1 -F key=rxp4",
            ),
            (
                "-a always,exit -F dir=/tmp/rxp/d -F perm=aw -k rxp5",
                "-w /tmp/rxp/d -p wa -k rxp5",
            ),
            (
                "-a always,exit -F arch=b32 -S open -F exit=-EACCES -F a0=0x10 -k rxp6",
                "-a always,exit -F arch=b32 -S open -F exit=-EACCES -F a0=0x10 -F key=rxp6",
            ),
            (
                "-a always,exit -F path=/tmp/rxp/f -F perm=x -F auid!=-1 -k rxp7",
                "-a always,exit -S all -F path=/tmp/rxp/f -F perm=x -F auid!=-1 -F key=rxp7",
            ),
            (
                "-A always,exit -F arch=x86_64 -S all -F success=0 -k rxp8",
                "-a always,exit -F arch=b64 -S all -F success=0 -F key=rxp8",
            ),
            (
                "-a exit,never -F arch=b64 -S mount -F gid=adm",
                "-a never,exit -F arch=b64 -S mount -F gid=4",
            ),
            (
                "-a always,exit -F path=/tmp/rxp/f -F perm=aw -k rxp12",
                "-w /tmp/rxp/f -p wa -k rxp12",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -F auid!=4294967295 -F exe=/usr/bin/curl -F key=rxp13 -F key=rxp13b",
                "-a always,exit -F arch=b64 -S execve -F auid!=-1 -F exe=/usr/bin/curl -F key=rxp13 -F key=rxp13b",
            ),
            (
                "-a always,exit -F arch=b64 -S all -F dir=/tmp/rxp/d -F perm=wa -k rxp16",
                "-a always,exit -F arch=b64 -S all -F dir=/tmp/rxp/d -F perm=wa -F key=rxp16",
            ),
            ("-w /tmp/rxp/f -p x -k rxp18", "-w /tmp/rxp/f -p x -k rxp18"),
            ("-w /tmp/rxp/f -p w", "-w /tmp/rxp/f -p w"),
            (
                "-a always,exit -F arch=b64 -S execve -F success=0 -F a1!=0x0 -k rxp19",
                "-a always,exit -F arch=b64 -S execve -F success=0 -F a1!=0x0 -F key=rxp19",
            ),
            (
                "-a always,exit -F arch=b64 -S openat -F a2&0100 -k rxp22",
                "-a always,exit -F arch=b64 -S openat -F a2&0x40 -F key=rxp22",
            ),
            (
                "-a always,exit -F arch=b64 -S openat,execve -S chmod -F a0=16 -F success=1 -F perm=aw -k rxp31",
                "-a always,exit -F arch=b64 -S execve,chmod,openat -F a0=0x10 -F success=1 -F perm=wa -F key=rxp31",
            ),
            (
                "-a always,exit -F arch=b64 -S open -F exit=-13 -k rxp32",
                "-a always,exit -F arch=b64 -S open -F exit=-EACCES -F key=rxp32",
            ),
            (
                "-a always,exit -S all -F dir=/tmp/rxp/d/ -F perm=aw -k rxp33",
                "-w /tmp/rxp/d/ -p wa -k rxp33",
            ),
            (
                "-a always,exit -F path=/tmp/rxp/f -k rxp34",
                "-a always,exit -S all -F path=/tmp/rxp/f -F key=rxp34",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -F uid=daemon -F gid=daemon -F auid!=unset -F key=rxp35 -k rxp35b",
                "-a always,exit -F arch=b64 -S execve -F uid=1 -F gid=1 -F auid!=-1 -F key=rxp35 -F key=rxp35b",
            ),
            (
                "-w /tmp/rxp/f -p ar -k rxp36",
                "-w /tmp/rxp/f -p ra -k rxp36",
            ),
            (
                "-a always,exit -F arch=b64 -S unlink,rename,unlinkat,renameat -F exit=-1 -k rxp37",
                "-a always,exit -F arch=b64 -S rename,unlink,unlinkat,renameat -F exit=-EPERM -F key=rxp37",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -F a0=-1 -k rxp38",
                "-a always,exit -F arch=b64 -S execve -F a0=0xFFFFFFFF -F key=rxp38",
            ),
        ];
        let listing: String = pairs.iter().map(|(_, l)| format!("{l}\n")).collect();
        let loaded = listed(&format!("No rules\n{listing}"));
        for (written, listed_as) in pairs {
            let Line::Rule { rule, .. } = parse_line(written).unwrap() else {
                panic!("{written} is a rule");
            };
            let c = canon(&rule, &ids).unwrap();
            assert_eq!(
                Some(&c),
                canon(&parse_rule(listed_as).unwrap(), &Ids::default()).as_ref(),
                "{written}"
            );
            assert!(loaded.contains(&c), "{written}");
        }
        // And rules that differ stay apart.
        for (a, b) in [
            ("-w /a -p wa -k k", "-w /a -p w -k k"),
            ("-w /a -p wa -k k", "-w /a -p wa -k j"),
            ("-w /a -p wa -k k", "-w /b -p wa -k k"),
            (
                "-a always,exit -F arch=b64 -S execve -F uid=1001 -k x",
                "-a always,exit -F arch=b64 -S execve -F uid=1002 -k x",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -k x",
                "-a always,exit -F arch=b32 -S execve -k x",
            ),
            (
                "-a always,exit -F arch=b64 -S execve -k x",
                "-a never,exit -F arch=b64 -S execve -k x",
            ),
            ("-a always,exit -F path=/a -k x", "-w /a -k x"),
        ] {
            let c = |t: &str| canon(&parse_rule(t).unwrap(), &ids);
            assert_ne!(c(a), c(b), "{a} / {b}");
        }
    }

    // ---- diff on recorded probe output ----

    #[test]
    fn in_line_when_the_file_is_right_and_every_rule_is_loaded() {
        let r = agent();
        assert_eq!(
            r.diff(&probed(Some(&r.content), &usable(LISTED))).unwrap(),
            Verdict::InLine("audit_rules /etc/audit/rules.d/60-rampart.rules is in line".into())
        );
        let off = usable(LISTED).replace("audit ok 1", "audit ok 0");
        let v = r.diff(&probed(Some(&r.content), &off)).unwrap();
        assert!(
            matches!(&v, Verdict::InLine(s) if s.ends_with("auditing is disabled (enabled 0), so they record nothing")),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_file_and_missing_rules_are_shown() {
        let r = agent();
        let only_watch = "-w /home/moltbot/.openclaw -p rwxa -k agent-config\n";
        assert_eq!(
            r.diff(&probed(None, &usable(only_watch))).unwrap(),
            Verdict::Create(vec![
                Change::new(AuditField::Content.text(), None, Some(r.content.clone())),
                Change::new(
                    AuditField::Loaded.text(),
                    Some(format!("{WATCH}\n")),
                    Some(format!("{WATCH}\n{EXEC}\n"))
                ),
            ])
        );
        // File right, rules flushed by hand.
        assert_eq!(
            r.diff(&probed(Some(&r.content), &usable("No rules")))
                .unwrap(),
            Verdict::Modify(vec![Change::new(
                AuditField::Loaded.text(),
                None,
                Some(format!("{WATCH}\n{EXEC}\n"))
            )])
        );
        // The uid is resolved by the probe: an unknown user never compares as loaded.
        let unknown = usable(LISTED).replace("user moltbot 1001", "user moltbot -");
        assert_eq!(
            r.diff(&probed(Some(&r.content), &unknown))
                .unwrap()
                .action(),
            "modify"
        );
        // A file edited by hand is a content change; the rules stay loaded.
        let edited = r.content.replace("-b 8192", "-b 320");
        assert_eq!(
            r.diff(&probed(Some(&edited), &usable(LISTED))).unwrap(),
            Verdict::Modify(vec![Change::new(
                AuditField::Content.text(),
                Some(edited.clone()),
                Some(r.content.clone())
            )])
        );
    }

    #[test]
    fn audit_unavailable_is_said_explicitly() {
        let r = agent();
        let container = "container systemd-nspawn\naugenrules yes\naudit refused RXJyb3IgLSBhdWRpdCBzdXBwb3J0IG5vdCBpbiBrZXJuZWw=\nuser moltbot 1001\n";
        assert_eq!(
            r.diff(&probed(Some(&r.content), container)).unwrap(),
            Verdict::InLine(
                "audit_rules /etc/audit/rules.d/60-rampart.rules: audit unavailable here (no \
                 kernel audit in this container): rules written to \
                 /etc/audit/rules.d/60-rampart.rules, not loaded"
                    .into()
            )
        );
        assert_eq!(
            r.diff(&probed(None, container)).unwrap(),
            Verdict::Create(vec![
                Change::new(AuditField::Content.text(), None, Some(r.content.clone())),
                Change::new(
                    AuditField::Loaded.text(),
                    Some("unavailable (no kernel audit in this container)".into()),
                    Some(
                        "not loaded: rules written to /etc/audit/rules.d/60-rampart.rules only"
                            .into()
                    )
                ),
            ])
        );
        // Without auditctl the control cannot work anywhere: never in line, in a container
        // too, and the apply fails unless an earlier step installed auditd.
        for container in ["none", "systemd-nspawn"] {
            let missing = format!("container {container}\naugenrules no\naudit missing\n");
            let v = r.diff(&probed(Some(&r.content), &missing)).unwrap();
            assert_eq!(
                v,
                Verdict::Modify(vec![Change::new(
                    AuditField::Loaded.text(),
                    Some("auditctl is not installed (auditd missing)".into()),
                    Some("the rules of /etc/audit/rules.d/60-rampart.rules loaded".into())
                )]),
                "{container}"
            );
            let script = r
                .apply(&v, &crate::resource::ApplyContext::new("t1"))
                .render()
                .unwrap();
            assert!(
                script.contains("command -v auditctl >/dev/null 2>&1 || die"),
                "{script}"
            );
        }
        let refused = format!(
            "container none\naugenrules yes\naudit refused {}\n",
            b64("You must be root to run this program.")
        );
        let v = r.diff(&probed(Some(&r.content), &refused)).unwrap();
        assert!(
            matches!(&v, Verdict::InLine(s) if s.contains("(auditctl -s failed: You must be root to run this program.)")),
            "{v:?}"
        );
    }

    #[test]
    fn junk_is_a_probe_error_without_the_content() {
        let r = agent();
        for (out, want) in [
            ("".to_string(), "the probe printed nothing"),
            ("kind none\n".to_string(), "no `container` line"),
            ("kind none\ncontainer none\n".to_string(), "no `audit` line"),
            (
                probed(Some("x"), "container none\nsurprise\n"),
                "unexpected line \"surprise\"",
            ),
            (
                probed(None, "container none\naudit ok 1\nloaded\nAAAA\n"),
                "the loaded rules have no `end` line",
            ),
            (
                probed(None, "container none\naudit ok 1\n"),
                "`audit ok` without the `loaded`",
            ),
            (
                probed(None, "container none\naudit maybe\n"),
                "unexpected line \"audit maybe\"",
            ),
            (
                probed(
                    None,
                    &format!("container none\nlisting failed {}\n", b64("boom")),
                ),
                "auditctl -s works but auditctl -l failed: boom",
            ),
            (
                "kind link\ncontainer none\naudit missing\n".into(),
                "is not a regular file",
            ),
        ] {
            let e = r.diff(&out).unwrap_err();
            assert!(e.message.contains(want), "{out:?}: {}", e.message);
        }
        let e = r
            .diff(&probed(Some("secret-ish content"), "junk\n"))
            .unwrap_err();
        assert!(
            !e.output.contains(&b64("secret-ish content")),
            "{}",
            e.output
        );
    }

    #[test]
    fn apply_loads_with_augenrules_or_rule_by_rule() {
        let r = agent();
        let v = r.diff(&probed(None, &usable("No rules"))).unwrap();
        let script = r.apply(&v, &ApplyContext::new("run")).to_string();
        assert!(script.contains("augenrules --load"), "{script}");
        assert!(script.contains("base64 -d >\"$t\" <<payload"), "{script}");
        assert!(script.contains("die \"audit rules are locked"), "{script}");
        assert!(
            script.contains("auditctl '-a' 'always,exit' '-F' 'arch=b64' '-S' 'execve' '-F' 'uid=moltbot' '-k' 'agent-exec'"),
            "{script}"
        );
        // Elsewhere than rules.d: only rule by rule, only the missing ones.
        let r = build(json!({"rules": [WATCH, EXEC], "file": "/etc/rampart/audit.rules"}));
        let only_watch = "-w /home/moltbot/.openclaw -p rwxa -k agent-config\n";
        let v = r
            .diff(&probed(Some(&r.content), &usable(only_watch)))
            .unwrap();
        let script = r.apply(&v, &ApplyContext::new("run")).to_string();
        assert!(!script.contains("augenrules"), "{script}");
        assert!(!script.contains("base64 -d"), "the file is right: {script}");
        assert!(script.contains("'-k' 'agent-exec'"), "{script}");
        assert!(!script.contains("'-k' 'agent-config'"), "{script}");
        // Only the file to write: no locked failure.
        let edited = r.content.replace(EXEC, "");
        let v = r.diff(&probed(Some(&edited), &usable(LISTED))).unwrap();
        let script = r.apply(&v, &ApplyContext::new("run")).to_string();
        assert!(!script.contains("die \"audit rules are locked"), "{script}");
    }

    /// On this machine (a container): the file is written, and the step says audit is
    /// unavailable; without auditctl the converge fails and writes nothing. Never loads rules into this machine's kernel.
    #[tokio::test]
    async fn converge_here_writes_the_file_and_says_audit_is_unavailable() {
        let usable_here = std::process::Command::new("auditctl")
            .arg("-s")
            .output()
            .is_ok_and(|o| o.status.success());
        if usable_here {
            eprintln!("skipped: audit works on this machine; the VM tests cover loading");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut ctx = ApplyContext::new("run1");
        ctx.backup_root = format!("{}/backups", tmp.path().display());
        let file = tmp.path().join("rules.d/60-test.rules");
        let f = file.to_str().unwrap();
        let r = build(json!({"rules": [WATCH, EXEC], "file": f}));
        let installed = std::process::Command::new("sh")
            .args(["-c", "PATH=\"$PATH:/usr/sbin:/sbin\" command -v auditctl"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            // Without auditd the control cannot work: the converge fails plainly, nothing written.
            let err = converge_one(&LocalSession::default(), &r, &ctx)
                .await
                .unwrap_err();
            assert!(
                err.contains("rampart: auditctl is not installed, so no audit rule can load"),
                "{err}"
            );
            assert!(!file.exists());
            return;
        }
        let (before, after) = converge_one(&LocalSession::default(), &r, &ctx)
            .await
            .unwrap();
        assert_eq!(before.action(), "create");
        assert_eq!(before.changes()[1].field, AuditField::Loaded.text());
        let Verdict::InLine(sentence) = after else {
            panic!("{after:?}")
        };
        assert!(
            sentence.starts_with(&format!("audit_rules {f}: audit unavailable here (")),
            "{sentence}"
        );
        assert!(
            sentence.ends_with(&format!("): rules written to {f}, not loaded")),
            "{sentence}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), r.content);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o640);
        assert_eq!(mode(file.parent().unwrap()), 0o750);
    }
}
