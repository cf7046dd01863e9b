//! user, group: local accounts and groups, and a user's `~/.ssh/authorized_keys`.
//!
//! Owns the parameters of both types, their probes, the pure parse and diff of the probes'
//! output, and the apply scripts, which use Debian's shadow tools (`useradd`, `usermod`,
//! `userdel`, `groupadd`, `groupmod`, `groupdel`) and util-linux's `runuser`. Leaves running
//! the scripts to the engine (or [`converge_one`](super::converge_one)) and all quoting to
//! [`remote`](crate::remote): every value reaches the shell through [`Script::arg`] or
//! [`Script::payload`].
//!
//! Passwords are never set, read or shown: the probe prints only the *status* of the shadow
//! password field (`locked`, `usable`, `empty`), never the hash.
//!
//! ## authorized_keys
//!
//! The file is `HOME/.ssh/authorized_keys` (HOME: the `home` parameter if given, else the
//! account's home). Keys are compared by type and base64 blob; comments are ignored, options
//! (`restrict,from="…"`) are not: a listed key present with other options is a change, since
//! sshd uses the first line that matches a key. `authorized_keys_exclusive: true` (default):
//! the file holds exactly the listed keys; `false`: the listed keys are added (or their line
//! replaced when the options differ) and every other line is kept.
//!
//! Root creates `.ssh` if missing (0700) and gives it and the file to the user; the file itself
//! is written **as the user** (`runuser`), through a temporary file in `.ssh` renamed over the
//! old one, so that a user who owns `.ssh` cannot turn root's write into a write elsewhere. A
//! `.ssh` or `authorized_keys` that is a symbolic link is refused, never followed; the probe
//! does not read through one either. The old file is copied to the run's backup folder.
//!
//! ## Probe output
//!
//! `key=value` lines between a header and `end`, so that a cut-short or garbled output is an
//! error, never an empty state:
//!
//! ```text
//! rampart-user 1
//! exists=yes                 # or: exists=no (and nothing else)
//! uid=1001
//! gid=1001
//! comment=Moltbot agent
//! home=/home/moltbot
//! shell=/bin/bash
//! group=moltbot              # id -gn
//! groups=moltbot docker      # id -Gn (primary included)
//! password=locked            # locked | usable | empty | unknown (not root)
//! ssh_dir=700 moltbot        # only when authorized_keys is managed: MODE OWNER, absent,
//! keys_file=600 moltbot      #   symlink, or other (not a folder / not a regular file)
//! key=ssh-ed25519 AAAA… me   # one per line of the file, as is
//! end
//! ```
//!
//! `rampart-group 1`, `exists=yes|no`, `gid=N`, `end` for groups. A line `error=TEXT` makes the
//! parse fail with TEXT.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::kit::Fields;
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
use crate::remote::Script;

pub const USER: TypeInfo = TypeInfo {
    name: "user",
    params: &[
        "name",
        "state",
        "uid",
        "group",
        "groups",
        "append_groups",
        "shell",
        "home",
        "system",
        "comment",
        "password_locked",
        "authorized_keys",
        "authorized_keys_exclusive",
        "remove_home",
    ],
    build: build_user,
};

pub const GROUP: TypeInfo = TypeInfo {
    name: "group",
    params: &["name", "state", "gid", "system"],
    build: build_group,
};

fn build_user(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(User(DesiredUser::from_params(params(value)?)?)))
}

fn build_group(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(Group(DesiredGroup::from_params(params(value)?)?)))
}

// ---------------------------------------------------------------------------------------------
// Parameters, as the playbook writes them.

/// `present` (default) or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

/// A numeric id as written: `1001` or `"1001"` (what a template renders).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdParam {
    Number(i64),
    Text(String),
}

fn yes() -> bool {
    true
}

/// The `user` step's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    /// A POSIX user name.
    pub name: String,
    #[serde(default)]
    pub state: State,
    pub uid: Option<IdParam>,
    /// The primary group's name. Omitted: the user group `useradd` makes (or keeps).
    pub group: Option<String>,
    /// Supplementary groups. Omitted: not managed.
    pub groups: Option<Vec<String>>,
    /// `false`: the supplementary groups are exactly `groups`; `true`: `groups` are added.
    #[serde(default)]
    pub append_groups: bool,
    pub shell: Option<String>,
    /// Changing it does not move the old home; a missing new home is created (0700).
    pub home: Option<String>,
    /// A system account (`useradd -r`); used only at creation.
    #[serde(default)]
    pub system: bool,
    /// The GECOS field.
    pub comment: Option<String>,
    /// `true`: no usable password (`usermod -L`). `false`: unlocked (`usermod -U`), which fails
    /// when there is no password hash to unlock: rampart never sets passwords.
    #[serde(default = "yes")]
    pub password_locked: bool,
    /// OpenSSH public key lines. Omitted: the file is not managed.
    pub authorized_keys: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub authorized_keys_exclusive: bool,
    /// With `state: absent`: remove the home folder and mail spool too (`userdel -r`).
    #[serde(default)]
    pub remove_home: bool,
}

/// The `group` step's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    pub name: String,
    #[serde(default)]
    pub state: State,
    pub gid: Option<IdParam>,
    /// A system group (`groupadd -r`); used only at creation.
    #[serde(default)]
    pub system: bool,
}

// ---------------------------------------------------------------------------------------------
// Desired state, typed and checked.

/// What the `user` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUser {
    pub name: String,
    pub state: State,
    pub uid: Option<u32>,
    pub group: Option<String>,
    pub groups: Option<WantedGroups>,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub system: bool,
    pub comment: Option<String>,
    pub password_locked: bool,
    pub keys: Option<WantedKeys>,
    pub remove_home: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedGroups {
    pub names: Vec<String>,
    pub append: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedKeys {
    pub keys: Vec<PublicKey>,
    pub exclusive: bool,
}

impl DesiredUser {
    pub fn from_params(p: UserParams) -> Result<DesiredUser, ParamError> {
        check_name("user", &p.name)?;
        let uid = p.uid.as_ref().map(|v| numeric_id("uid", v)).transpose()?;
        if let Some(g) = &p.group {
            check_name("group", g)?;
        }
        let groups = match p.groups {
            None => None,
            Some(list) => {
                let mut names: Vec<String> = Vec::new();
                for g in list {
                    check_name("group", &g)?;
                    if !names.contains(&g) {
                        names.push(g);
                    }
                }
                Some(WantedGroups {
                    names,
                    append: p.append_groups,
                })
            }
        };
        for (field, path) in [("shell", &p.shell), ("home", &p.home)] {
            if let Some(path) = path {
                check_path(field, path)?;
            }
        }
        if let Some(c) = &p.comment
            && let Some(bad) = c.chars().find(|ch| matches!(ch, ':' | '\n' | '\r' | '\0'))
        {
            return Err(ParamError(format!(
                "comment {c:?} of user {} contains {bad:?}, which a passwd entry cannot hold",
                p.name
            )));
        }
        let keys = match p.authorized_keys {
            None => None,
            Some(lines) => {
                let mut keys: Vec<PublicKey> = Vec::new();
                // An entry may hold several lines (a whole .pub file rendered by a template).
                for line in lines.iter().flat_map(|l| l.lines()) {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let key = PublicKey::parse(line).map_err(|e| {
                        ParamError(format!("authorized_keys of user {}: {e}: {line:?}", p.name))
                    })?;
                    if let Some(twin) = keys.iter().find(|k| k.same_key(&key)) {
                        if twin.options != key.options {
                            return Err(ParamError(format!(
                                "authorized_keys of user {}: the key {} is listed twice with different options",
                                p.name,
                                key.short()
                            )));
                        }
                        continue;
                    }
                    keys.push(key);
                }
                Some(WantedKeys {
                    keys,
                    exclusive: p.authorized_keys_exclusive,
                })
            }
        };
        Ok(DesiredUser {
            name: p.name,
            state: p.state,
            uid,
            group: p.group,
            groups,
            shell: p.shell,
            home: p.home,
            system: p.system,
            comment: p.comment,
            password_locked: p.password_locked,
            keys,
            remove_home: p.remove_home,
        })
    }
}

/// What the `group` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredGroup {
    pub name: String,
    pub state: State,
    pub gid: Option<u32>,
    pub system: bool,
}

impl DesiredGroup {
    pub fn from_params(p: GroupParams) -> Result<DesiredGroup, ParamError> {
        check_name("group", &p.name)?;
        Ok(DesiredGroup {
            gid: p.gid.as_ref().map(|v| numeric_id("gid", v)).transpose()?,
            name: p.name,
            state: p.state,
            system: p.system,
        })
    }
}

/// A POSIX user or group name: 1 to 32 characters of the portable set `[A-Za-z0-9._-]`, not
/// starting with a digit, `-` or `.` (so never read as an option or as a numeric id), with
/// an optional final `$` (Samba machine accounts).
fn check_name(kind: &str, name: &str) -> Result<(), ParamError> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ParamError(format!(
            "invalid {kind} name {name:?}: use 1 to 32 characters from A-Z a-z 0-9 . _ -, \
             starting with a letter or _ (a final $ is allowed)"
        )))
    }
}

/// An absolute path that fits a passwd field.
fn check_path(field: &str, path: &str) -> Result<(), ParamError> {
    if !path.starts_with('/') {
        return Err(ParamError(format!(
            "{field} {path:?} is not an absolute path"
        )));
    }
    if let Some(bad) = path.chars().find(|c| matches!(c, ':' | '\n' | '\r' | '\0')) {
        return Err(ParamError(format!(
            "{field} {path:?} contains {bad:?}, which a passwd entry cannot hold"
        )));
    }
    Ok(())
}

fn numeric_id(field: &str, value: &IdParam) -> Result<u32, ParamError> {
    let n = match value {
        IdParam::Number(n) => Some(*n),
        IdParam::Text(s) => s.trim().parse::<i64>().ok(),
    };
    // 4294967295 is (uid_t)-1, which means "no change" to chown and setuid.
    match n.and_then(|n| u32::try_from(n).ok()) {
        Some(id) if id != u32::MAX => Ok(id),
        _ => Err(ParamError(format!(
            "{field} {value} is not a number from 0 to 4294967294",
            value = match value {
                IdParam::Number(n) => n.to_string(),
                IdParam::Text(s) => s.clone(),
            }
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenSSH public key lines.

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

/// One authorized_keys line: `[options] type base64 [comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub options: Option<String>,
    pub kind: String,
    pub blob: String,
    /// The whole line, trimmed, as written.
    pub line: String,
}

impl PublicKey {
    pub fn parse(line: &str) -> Result<PublicKey, String> {
        let line = line.trim();
        if line.contains(['\n', '\r', '\0']) {
            return Err("a key line cannot hold a line break or NUL".into());
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let (options, rest) = if KEY_TYPES.contains(&first) {
            (None, line)
        } else {
            let (o, r) = split_options(line)?;
            (Some(o.to_string()), r)
        };
        let mut words = rest.split_whitespace();
        let kind = words.next().unwrap_or("");
        if !KEY_TYPES.contains(&kind) {
            return Err(format!("unknown key type {kind:?}"));
        }
        let blob = words.next().ok_or("no base64 key after the type")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| "the key is not valid base64".to_string())?;
        // The blob starts with its own type as an SSH string: u32 length, then the name.
        let inner = bytes
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|n| bytes.get(4..4 + n));
        if inner != Some(kind.as_bytes()) {
            return Err(format!("the base64 key is not a {kind} key"));
        }
        Ok(PublicKey {
            options,
            kind: kind.to_string(),
            blob: blob.to_string(),
            line: line.to_string(),
        })
    }

    /// Same key material (the comment and options aside).
    pub fn same_key(&self, other: &PublicKey) -> bool {
        self.kind == other.kind && self.blob == other.blob
    }

    /// `ssh-ed25519 AAAAC3Nz…8bGx`, for messages.
    fn short(&self) -> String {
        let b = &self.blob;
        if b.len() <= 24 {
            format!("{} {b}", self.kind)
        } else {
            format!(
                "{} {}…{}",
                self.kind,
                crate::untrusted::first_chars(b, 12),
                crate::untrusted::last_chars(b, 8)
            )
        }
    }
}

/// Splits `opt1,opt2="a b" ssh-ed25519 …` after the options (which end at the first blank
/// outside double quotes; `\"` escapes a quote inside them).
fn split_options(line: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Ok((&line[..i], line[i..].trim_start())),
            _ => {}
        }
    }
    Err(if quoted {
        "unterminated quote in the key options".into()
    } else {
        format!(
            "unknown key type {:?}",
            line.split_whitespace().next().unwrap_or("")
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Observed state.

/// What the user probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedUser {
    Absent,
    Present(Box<Account>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub comment: String,
    pub home: String,
    pub shell: String,
    /// The primary group's name.
    pub group: String,
    /// Every group, the primary one included (`id -Gn`).
    pub groups: Vec<String>,
    pub password: Password,
    /// `None` when authorized_keys is not managed (not probed).
    pub ssh_dir: Option<PathState>,
    pub keys_file: Option<PathState>,
    /// The lines of authorized_keys, as they are.
    pub key_lines: Vec<String>,
}

/// The status of the shadow password field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password {
    /// Starts with `!` or `*`: no password can log in.
    Locked,
    /// A hash.
    Usable,
    /// Empty: login without a password, where PAM allows it.
    Empty,
}

impl Password {
    fn describe(self) -> &'static str {
        match self {
            Password::Locked => "true",
            Password::Usable => "false (usable password)",
            Password::Empty => "false (empty password)",
        }
    }
}

/// What is at `~/.ssh` or `~/.ssh/authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathState {
    Absent,
    Symlink,
    /// Not a folder (for `.ssh`) or not a regular file (for the key file).
    Other,
    Present {
        mode: u32,
        owner: String,
    },
}

impl PathState {
    fn parse(value: &str) -> Option<PathState> {
        Some(match value {
            "absent" => PathState::Absent,
            "symlink" => PathState::Symlink,
            "other" => PathState::Other,
            _ => {
                let (mode, owner) = value.split_once(' ')?;
                PathState::Present {
                    mode: u32::from_str_radix(mode, 8).ok()?,
                    owner: owner.to_string(),
                }
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            PathState::Absent => "absent".into(),
            PathState::Symlink => "symbolic link".into(),
            PathState::Other => "neither folder nor regular file".into(),
            PathState::Present { mode, owner } => format!("{mode:04o} owned by {owner}"),
        }
    }
}

/// What the group probe found: `None` when the group does not exist, else its gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedGroup(pub Option<u32>);

// ---------------------------------------------------------------------------------------------
// Probes.

/// `name=VALUE\n`, the value quoted.
fn set_var(name: &str, value: &str) -> Script {
    Script::new().raw(name).raw("=").arg(value).raw("\n")
}

const USER_PROBE: &str = r#"printf 'rampart-user 1\n'
rc=0
pw=$(getent passwd "$n") || rc=$?
if [ "$rc" -eq 2 ]; then
  printf 'exists=no\n'
elif [ "$rc" -ne 0 ]; then
  printf 'error=getent passwd exited with status %s\n' "$rc"
else
  pw=$(printf '%s\n' "$pw" | head -n 1)
  printf 'exists=yes\n'
  printf '%s\n' "$pw" | awk -F: '{ printf "uid=%s\ngid=%s\ncomment=%s\nhome=%s\nshell=%s\n", $3, $4, $5, $6, $7 }'
  printf 'group=%s\n' "$(id -gn "$n" 2>/dev/null)"
  printf 'groups=%s\n' "$(id -Gn "$n" 2>/dev/null)"
  if [ "$(id -u)" -ne 0 ]; then
    printf 'password=unknown\n'
  else
    if sp=$(getent shadow "$n"); then
      pf=$(printf '%s\n' "$sp" | head -n 1 | cut -d: -f2)
    else
      pf=$(printf '%s\n' "$pw" | cut -d: -f2)
    fi
    case $pf in
      '!'*|'*'*) printf 'password=locked\n' ;;
      '') printf 'password=empty\n' ;;
      *) printf 'password=usable\n' ;;
    esac
  fi
  if [ "$keys" = 1 ]; then
    [ -n "$kh" ] || kh=$(printf '%s\n' "$pw" | cut -d: -f6)
    d=$kh/.ssh
    f=$d/authorized_keys
    if [ -L "$d" ]; then
      printf 'ssh_dir=symlink\n'
    elif [ -d "$d" ]; then
      printf 'ssh_dir=%s\n' "$(stat -c '%a %U' "$d")"
      if [ -L "$f" ]; then
        printf 'keys_file=symlink\n'
      elif [ -f "$f" ]; then
        printf 'keys_file=%s\n' "$(stat -c '%a %U' "$f")"
        awk '{ print "key=" $0 }' "$f"
      elif [ -e "$f" ]; then
        printf 'keys_file=other\n'
      else
        printf 'keys_file=absent\n'
      fi
    elif [ -e "$d" ]; then
      printf 'ssh_dir=other\n'
    else
      printf 'ssh_dir=absent\n'
    fi
  fi
fi
printf 'end\n'
"#;

/// Side-effect-free: reads passwd, groups, the shadow field's status and authorized_keys.
/// Runs in a subshell so that its variables stay its own.
pub fn probe_user(d: &DesiredUser) -> Script {
    let managed = d.keys.is_some() && d.state == State::Present;
    Script::new()
        .raw("(\n")
        .then(set_var("n", &d.name))
        .then(set_var("kh", d.home.as_deref().unwrap_or("")))
        .raw(if managed { "keys=1\n" } else { "keys=0\n" })
        .raw(USER_PROBE)
        .raw(")\n")
}

const GROUP_PROBE: &str = r#"printf 'rampart-group 1\n'
rc=0
gr=$(getent group "$n") || rc=$?
if [ "$rc" -eq 2 ]; then
  printf 'exists=no\n'
elif [ "$rc" -ne 0 ]; then
  printf 'error=getent group exited with status %s\n' "$rc"
else
  printf 'exists=yes\n'
  printf '%s\n' "$gr" | head -n 1 | awk -F: '{ printf "gid=%s\n", $3 }'
fi
printf 'end\n'
"#;

pub fn probe_group(d: &DesiredGroup) -> Script {
    Script::new()
        .raw("(\n")
        .then(set_var("n", &d.name))
        .raw(GROUP_PROBE)
        .raw(")\n")
}

// ---------------------------------------------------------------------------------------------
// Parse.

/// [`Fields::read`], with this module's message for a missing or wrong header.
fn read_fields<'a>(out: &'a str, header: &str, known: &[&str]) -> Result<Fields<'a>, ProbeError> {
    let mut lines = out.lines().skip_while(|l| l.trim().is_empty());
    if lines.next().map(str::trim_end) != Some(header) {
        return Err(ProbeError::new(
            format!("expected `{header}` on the first line"),
            out,
        ));
    }
    Fields::after_header(out, lines, known)
}

/// Pure: the user probe's output to an observed state.
pub fn parse_user(name: &str, out: &str) -> Result<ObservedUser, ProbeError> {
    let f = read_fields(
        out,
        "rampart-user 1",
        &[
            "exists",
            "uid",
            "gid",
            "comment",
            "home",
            "shell",
            "group",
            "groups",
            "password",
            "ssh_dir",
            "keys_file",
            "key",
        ],
    )?;
    if !f.yes_no("exists")? {
        if f.pairs.len() > 1 {
            return Err(f.error("fields for a user that does not exist"));
        }
        return Ok(ObservedUser::Absent);
    }
    let password = match f.need("password")? {
        "locked" => Password::Locked,
        "usable" => Password::Usable,
        "empty" => Password::Empty,
        "unknown" => {
            return Err(f.error(format!(
                "the shadow entry of user {name} cannot be read: the probe did not run as root \
                 (connect as root, or set become: true)"
            )));
        }
        v => return Err(f.error(format!("unknown password status {v:?}"))),
    };
    let path = |key: &str| -> Result<Option<PathState>, ProbeError> {
        f.one(key)?
            .map(|v| PathState::parse(v).ok_or_else(|| f.error(format!("cannot read `{key}={v}`"))))
            .transpose()
    };
    let group = f.need("group")?.to_string();
    if group.is_empty() {
        return Err(f.error(format!("user {name} has no primary group name")));
    }
    Ok(ObservedUser::Present(Box::new(Account {
        uid: f.number("uid")?,
        gid: f.number("gid")?,
        comment: f.need("comment")?.to_string(),
        home: f.need("home")?.to_string(),
        shell: f.need("shell")?.to_string(),
        group,
        groups: f
            .need("groups")?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        password,
        ssh_dir: path("ssh_dir")?,
        keys_file: path("keys_file")?,
        key_lines: f
            .pairs
            .iter()
            .filter(|(k, _)| *k == "key")
            .map(|(_, v)| v.to_string())
            .collect(),
    })))
}

/// Pure: the group probe's output to an observed state.
pub fn parse_group(out: &str) -> Result<ObservedGroup, ProbeError> {
    let f = read_fields(out, "rampart-group 1", &["exists", "gid"])?;
    if !f.yes_no("exists")? {
        return Ok(ObservedGroup(None));
    }
    Ok(ObservedGroup(Some(f.number("gid")?)))
}

// ---------------------------------------------------------------------------------------------
// Diff.

crate::fields! {
    /// The fields of a `user` step.
    pub enum UserField {
        State = "state",
        Uid = "uid",
        Group = "group",
        Groups = "groups",
        Shell = "shell",
        Home = "home",
        Comment = "comment",
        System = "system",
        PasswordLocked = "password_locked",
        /// One key line added, replaced or removed.
        AuthorizedKeys = "authorized_keys",
        SshDir = "ssh_dir",
        KeysFile = "authorized_keys_file",
    }
}

crate::fields! {
    /// The fields of a `group` step.
    pub enum GroupField {
        State = "state",
        Gid = "gid",
        System = "system",
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(",")
    }
}

fn some(s: impl Into<String>) -> Option<String> {
    Some(s.into())
}

/// Pure: what must change for the user to be as desired.
pub fn diff_user(d: &DesiredUser, o: &ObservedUser) -> Verdict<UserField> {
    match (d.state, o) {
        (State::Absent, ObservedUser::Absent) => {
            Verdict::InLine(format!("user {} is absent, in line", d.name))
        }
        (State::Absent, ObservedUser::Present(a)) => {
            let mut c = vec![Change::of(
                UserField::State,
                some("present"),
                some("absent"),
            )];
            if d.remove_home {
                c.push(Change::of(UserField::Home, some(&a.home), None));
            }
            Verdict::Remove(c)
        }
        (State::Present, ObservedUser::Absent) => Verdict::Create(creation(d)),
        (State::Present, ObservedUser::Present(a)) => {
            let c = modification(d, a);
            if c.is_empty() {
                Verdict::InLine(format!("user {} is in line", d.name))
            } else {
                Verdict::Modify(c)
            }
        }
    }
}

fn creation(d: &DesiredUser) -> Vec<Change<UserField>> {
    let mut c = vec![Change::of(
        UserField::State,
        some("absent"),
        some("present"),
    )];
    if let Some(uid) = d.uid {
        c.push(Change::of(UserField::Uid, None, some(uid.to_string())));
    }
    if let Some(g) = &d.group {
        c.push(Change::of(UserField::Group, None, some(g)));
    }
    if let Some(w) = &d.groups {
        let names: Vec<&str> = w.names.iter().map(String::as_str).collect();
        c.push(Change::of(UserField::Groups, None, some(list(&names))));
    }
    for (field, value) in [
        (UserField::Shell, &d.shell),
        (UserField::Home, &d.home),
        (UserField::Comment, &d.comment),
    ] {
        if let Some(v) = value {
            c.push(Change::of(field, None, some(v)));
        }
    }
    if d.system {
        c.push(Change::of(UserField::System, None, some("true")));
    }
    c.push(Change::of(
        UserField::PasswordLocked,
        None,
        some(d.password_locked.to_string()),
    ));
    if let Some(k) = &d.keys {
        for key in &k.keys {
            c.push(Change::of(UserField::AuthorizedKeys, None, some(&key.line)));
        }
    }
    c
}

fn modification(d: &DesiredUser, a: &Account) -> Vec<Change<UserField>> {
    let mut c = Vec::new();
    if let Some(uid) = d.uid
        && uid != a.uid
    {
        c.push(Change::of(
            UserField::Uid,
            some(a.uid.to_string()),
            some(uid.to_string()),
        ));
    }
    if let Some(g) = &d.group
        && *g != a.group
    {
        c.push(Change::of(UserField::Group, some(&a.group), some(g)));
    }
    if let Some(w) = &d.groups {
        // The primary group is not a supplementary one, on either side.
        let primary = d.group.as_deref().unwrap_or(&a.group);
        let have: Vec<&str> = a
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| *g != a.group && *g != primary)
            .collect();
        let want: Vec<&str> = w
            .names
            .iter()
            .map(String::as_str)
            .filter(|g| *g != primary)
            .collect();
        let have_set: BTreeSet<&str> = have.iter().copied().collect();
        let want_set: BTreeSet<&str> = want.iter().copied().collect();
        if w.append {
            let missing: Vec<&str> = want
                .iter()
                .copied()
                .filter(|g| !have_set.contains(g))
                .collect();
            if !missing.is_empty() {
                let after: Vec<&str> = have.iter().chain(&missing).copied().collect();
                c.push(Change::of(
                    UserField::Groups,
                    some(list(&have)),
                    some(list(&after)),
                ));
            }
        } else if have_set != want_set {
            c.push(Change::of(
                UserField::Groups,
                some(list(&have)),
                some(list(&want)),
            ));
        }
    }
    for (field, want, have) in [
        (UserField::Shell, &d.shell, &a.shell),
        (UserField::Home, &d.home, &a.home),
        (UserField::Comment, &d.comment, &a.comment),
    ] {
        if let Some(w) = want
            && w != have
        {
            c.push(Change::of(field, some(have), some(w)));
        }
    }
    if (a.password == Password::Locked) != d.password_locked {
        c.push(Change::of(
            UserField::PasswordLocked,
            some(a.password.describe()),
            some(d.password_locked.to_string()),
        ));
    }
    if let Some(k) = &d.keys {
        c.extend(key_changes(&d.name, k, a));
    }
    c
}

/// The folder and file modes and owner, then the keys to add, replace (other options) and,
/// when exclusive, remove.
fn key_changes(user: &str, w: &WantedKeys, a: &Account) -> Vec<Change<UserField>> {
    let mut c = Vec::new();
    for (field, state, mode) in [
        (UserField::SshDir, &a.ssh_dir, 0o700),
        (UserField::KeysFile, &a.keys_file, 0o600),
    ] {
        let wanted = PathState::Present {
            mode,
            owner: user.to_string(),
        };
        match state {
            None | Some(PathState::Absent) => {}
            Some(s) if *s == wanted => {}
            Some(s) => c.push(Change::of(
                field,
                some(s.describe()),
                some(wanted.describe()),
            )),
        }
    }
    // Each meaningful line of the file: a key, or a line sshd cannot use (junk).
    let lines: Vec<(&str, Option<PublicKey>)> = a
        .key_lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| (l, PublicKey::parse(l).ok()))
        .collect();
    for want in &w.keys {
        let same: Vec<&PublicKey> = lines
            .iter()
            .filter_map(|(_, k)| k.as_ref())
            .filter(|k| k.same_key(want))
            .collect();
        if same.is_empty() {
            c.push(Change::of(
                UserField::AuthorizedKeys,
                None,
                some(&want.line),
            ));
        } else if let Some(other) = same.iter().find(|k| k.options != want.options) {
            c.push(Change::of(
                UserField::AuthorizedKeys,
                some(&other.line),
                some(&want.line),
            ));
        }
    }
    if w.exclusive {
        let mut seen = BTreeSet::new();
        for (line, key) in &lines {
            let wanted = key
                .as_ref()
                .is_some_and(|k| w.keys.iter().any(|want| want.same_key(k)));
            if !wanted && seen.insert(*line) {
                c.push(Change::of(UserField::AuthorizedKeys, some(*line), None));
            }
        }
    }
    c
}

/// Pure: what must change for the group to be as desired.
pub fn diff_group(d: &DesiredGroup, o: &ObservedGroup) -> Verdict<GroupField> {
    match (d.state, o.0) {
        (State::Absent, None) => Verdict::InLine(format!("group {} is absent, in line", d.name)),
        (State::Absent, Some(_)) => Verdict::Remove(vec![Change::of(
            GroupField::State,
            some("present"),
            some("absent"),
        )]),
        (State::Present, None) => {
            let mut c = vec![Change::of(
                GroupField::State,
                some("absent"),
                some("present"),
            )];
            if let Some(gid) = d.gid {
                c.push(Change::of(GroupField::Gid, None, some(gid.to_string())));
            }
            if d.system {
                c.push(Change::of(GroupField::System, None, some("true")));
            }
            Verdict::Create(c)
        }
        (State::Present, Some(have)) => match d.gid {
            Some(gid) if gid != have => Verdict::Modify(vec![Change::of(
                GroupField::Gid,
                some(have.to_string()),
                some(gid.to_string()),
            )]),
            _ => Verdict::InLine(format!("group {} is in line", d.name)),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Apply.

/// Run as the user by `runuser`, so that a user who owns `.ssh` cannot redirect the write:
/// `sh -c THIS rampart-keys DIR MODE STRIP`, the new lines (base64) on stdin. MODE `replace`:
/// the file becomes exactly those lines. MODE `merge`: the old file, without the lines that
/// contain one of the newline-separated base64 keys in STRIP, then the new lines.
const KEYS_AS_USER: &str = r#"set -e
d=$1 mode=$2 strip=$3
umask 077
chmod 0700 "$d"
tmp=$(mktemp "$d/.authorized_keys.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ "$mode" = merge ] && [ -f "$d/authorized_keys" ]; then
  if [ -n "$strip" ]; then
    grep -v -F -e "$strip" "$d/authorized_keys" >"$tmp" || [ "$?" -eq 1 ]
  else
    cat "$d/authorized_keys" >"$tmp"
  fi
  if [ -s "$tmp" ] && [ -n "$(tail -c 1 "$tmp")" ]; then echo >>"$tmp"; fi
fi
base64 -d >>"$tmp"
chmod 0600 "$tmp"
mv -f "$tmp" "$d/authorized_keys"
"#;

/// As root: checks, `.ssh` made and given to the user, a backup of the old file; then the
/// write as the user.
const KEYS_AS_ROOT: &str = r#"umask 077
home=$(getent passwd "$n" | cut -d: -f6)
d=$home/.ssh
f=$d/authorized_keys
if [ -z "$home" ] || [ ! -d "$home" ]; then
  echo "rampart: cannot write $f: the home folder of user $n does not exist" >&2
  exit 1
fi
if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
  echo "rampart: refusing to write $f: $d is a symbolic link or not a folder; find out who made it, remove it, then rerun" >&2
  exit 1
fi
if [ -L "$f" ] || { [ -e "$f" ] && [ ! -f "$f" ]; }; then
  echo "rampart: refusing to write $f: it is a symbolic link or not a regular file; find out who made it, remove it, then rerun" >&2
  exit 1
fi
command -v runuser >/dev/null || { echo "rampart: runuser (util-linux) is needed to write $f" >&2; exit 1; }
ids=$(id -u "$n"):$(id -g "$n")
[ -d "$d" ] || mkdir -m 0700 "$d"
chown -h "$ids" "$d"
if [ -f "$f" ]; then
  chown -h "$ids" "$f"
  b=$bk$f
  mkdir -p "${b%/*}"
  cp "$f" "$b"
fi
"#;

fn keys_step(d: &DesiredUser, v: &Verdict<UserField>, ctx: &ApplyContext) -> Script {
    let Some(w) = &d.keys else {
        return Script::new();
    };
    let (mode, strip, lines): (&str, Vec<&str>, Vec<&str>) = if w.exclusive {
        (
            "replace",
            vec![],
            w.keys.iter().map(|k| k.line.as_str()).collect(),
        )
    } else {
        // The listed keys the verdict adds or replaces: their old lines go, the new ones come.
        let add: Vec<&PublicKey> = w
            .keys
            .iter()
            .filter(|k| {
                v.changes().iter().any(|c| {
                    c.field == UserField::AuthorizedKeys
                        && c.after.as_deref() == Some(k.line.as_str())
                })
            })
            .collect();
        (
            "merge",
            add.iter().map(|k| k.blob.as_str()).collect(),
            add.iter().map(|k| k.line.as_str()).collect(),
        )
    };
    let mut content = lines.join("\n");
    if !content.is_empty() {
        content.push('\n');
    }
    Script::new()
        .then(set_var("bk", &ctx.backup_dir()))
        .raw(KEYS_AS_ROOT)
        .raw("runuser -u \"$n\" -- /bin/sh -c ")
        .arg(KEYS_AS_USER)
        .raw(" rampart-keys \"$d\" ")
        .arg(mode)
        .raw(" ")
        .arg(&strip.join("\n"))
        .raw(" ")
        .payload(content.as_bytes())
}

fn password_step(locked: bool) -> Script {
    if locked {
        Script::new().raw("usermod -L \"$n\"\n")
    } else {
        // usermod -U refuses to leave an account without a password but exits 0 all the same.
        Script::new().raw(
            r#"usermod -U "$n"
case $(getent shadow "$n" | cut -d: -f2) in
  '!'*|'*'*) echo "rampart: cannot unlock the password of user $n: there is no password hash to unlock (rampart never sets passwords; set one, or keep password_locked: true)" >&2; exit 1 ;;
esac
"#,
        )
    }
}

/// Options shared by useradd and usermod for the fields in `fields` (`None`: every field
/// the step names).
fn account_options(d: &DesiredUser, fields: Option<&[UserField]>) -> Script {
    let wants = |f: UserField| fields.is_none_or(|set| set.contains(&f));
    let mut s = Script::new();
    if let Some(uid) = d.uid
        && wants(UserField::Uid)
    {
        s = s.raw(" -u ").arg(&uid.to_string());
    }
    if let Some(w) = &d.groups
        && wants(UserField::Groups)
    {
        if w.append && fields.is_some() {
            s = s.raw(" -a");
        }
        s = s.raw(" -G ").arg(&w.names.join(","));
    }
    for (field, flag, value) in [
        (UserField::Shell, " -s ", &d.shell),
        (UserField::Home, " -d ", &d.home),
        (UserField::Comment, " -c ", &d.comment),
    ] {
        if let Some(v) = value
            && wants(field)
        {
            s = s.raw(flag).arg(v);
        }
    }
    s
}

/// Idempotent: each part checks or converges whatever the host shows when it runs. As a
/// notified handler: nothing but the check that the user exists (a verdict without changes).
pub fn apply_user(d: &DesiredUser, work: Work<'_, UserField>, ctx: &ApplyContext) -> Script {
    let none = Verdict::Modify(Vec::new());
    let v = match work {
        Work::Converge(v) => v,
        Work::Notified => &none,
    };
    let body = match v {
        Verdict::InLine(_) => return Script::new().raw(":\n"),
        Verdict::Remove(_) => Script::new()
            .raw("if getent passwd \"$n\" >/dev/null; then userdel")
            .raw(if d.remove_home { " -r" } else { "" })
            .raw(" \"$n\"; fi\n"),
        Verdict::Create(_) => {
            let common = Script::new()
                .raw("useradd -m")
                .raw(if d.system { " -r" } else { "" })
                .then(account_options(d, None));
            let create = match d.group.as_deref() {
                // A user group named after the user: made by useradd unless it exists.
                None => Script::new()
                    .raw("  if getent group \"$n\" >/dev/null; then ")
                    .then(common.clone())
                    .raw(" -g \"$n\" \"$n\"; else ")
                    .then(common)
                    .raw(" -U \"$n\"; fi\n"),
                Some(g) if g == d.name => Script::new()
                    .raw("  if getent group \"$n\" >/dev/null; then ")
                    .then(common.clone())
                    .raw(" -g \"$n\" \"$n\"; else ")
                    .then(common)
                    .raw(" -U \"$n\"; fi\n"),
                Some(g) => Script::new()
                    .raw("  ")
                    .then(common)
                    .raw(" -g ")
                    .arg(g)
                    .raw(" \"$n\"\n"),
            };
            Script::new()
                .raw("if ! getent passwd \"$n\" >/dev/null; then\n")
                .then(create)
                .raw("fi\n")
                .then(password_step(d.password_locked))
                .then(keys_step(d, v, ctx))
        }
        Verdict::Modify(changes) => {
            let fields: Vec<UserField> = changes.iter().map(|c| c.field).collect();
            let mut s = Script::new();
            let mut options = account_options(d, Some(&fields));
            if let Some(g) = &d.group
                && fields.contains(&UserField::Group)
            {
                options = options.raw(" -g ").arg(g);
            }
            if options != Script::new() {
                s = s.raw("usermod").then(options).raw(" \"$n\"\n");
            }
            if let Some(home) = &d.home
                && fields.contains(&UserField::Home)
            {
                // The old home is not moved; a missing new one is made, the user's own.
                s = s.then(set_var("h", home)).raw(
                    "if [ ! -d \"$h\" ]; then mkdir -p \"$h\" && chmod 0700 \"$h\" && \
                     chown -h \"$(id -u \"$n\"):$(id -g \"$n\")\" \"$h\"; fi\n",
                );
            }
            if fields.contains(&UserField::PasswordLocked) {
                s = s.then(password_step(d.password_locked));
            }
            if [
                UserField::AuthorizedKeys,
                UserField::SshDir,
                UserField::KeysFile,
            ]
            .iter()
            .any(|f| fields.contains(f))
            {
                s = s.then(keys_step(d, v, ctx));
            }
            s
        }
    };
    Script::new()
        .raw("(\nset -e\n")
        .then(set_var("n", &d.name))
        .then(body)
        .raw(")\n")
}

/// As a notified handler: the gid set again when the step gives one (a verdict without
/// changes).
pub fn apply_group(d: &DesiredGroup, work: Work<'_, GroupField>) -> Script {
    let none = Verdict::Modify(Vec::new());
    let v = match work {
        Work::Converge(v) => v,
        Work::Notified => &none,
    };
    let body = match v {
        Verdict::InLine(_) => return Script::new().raw(":\n"),
        Verdict::Remove(_) => {
            Script::new().raw("if getent group \"$n\" >/dev/null; then groupdel \"$n\"; fi\n")
        }
        Verdict::Create(_) => {
            let mut s = Script::new()
                .raw("if ! getent group \"$n\" >/dev/null; then groupadd")
                .raw(if d.system { " -r" } else { "" });
            if let Some(gid) = d.gid {
                s = s.raw(" -g ").arg(&gid.to_string());
            }
            s.raw(" \"$n\"; fi\n")
        }
        Verdict::Modify(_) => match d.gid {
            Some(gid) => Script::new()
                .raw("groupmod -g ")
                .arg(&gid.to_string())
                .raw(" \"$n\"\n"),
            None => Script::new().raw(":\n"),
        },
    };
    Script::new()
        .raw("(\nset -e\n")
        .then(set_var("n", &d.name))
        .then(body)
        .raw(")\n")
}

// ---------------------------------------------------------------------------------------------
// The resources.

/// `user NAME`.
#[derive(Debug)]
pub struct User(pub DesiredUser);

impl Resource for User {
    fn id(&self) -> String {
        format!("user {}", self.0.name)
    }

    fn probe(&self) -> Script {
        probe_user(&self.0)
    }
}

impl Typed for User {
    type Observed<'a> = ObservedUser;
    type Field = UserField;

    fn parse(&self, out: &str) -> Result<ObservedUser, ProbeError> {
        parse_user(&self.0.name, out)
    }

    fn compare(&self, o: &ObservedUser) -> Result<Verdict<UserField>, ProbeError> {
        Ok(diff_user(&self.0, o))
    }

    fn converge(&self, work: Work<'_, UserField>, ctx: &ApplyContext) -> Script {
        apply_user(&self.0, work, ctx)
    }
}

/// `group NAME`.
#[derive(Debug)]
pub struct Group(pub DesiredGroup);

impl Resource for Group {
    fn id(&self) -> String {
        format!("group {}", self.0.name)
    }

    fn probe(&self) -> Script {
        probe_group(&self.0)
    }
}

impl Typed for Group {
    type Observed<'a> = ObservedGroup;
    type Field = GroupField;

    fn parse(&self, out: &str) -> Result<ObservedGroup, ProbeError> {
        parse_group(out)
    }

    fn compare(&self, o: &ObservedGroup) -> Result<Verdict<GroupField>, ProbeError> {
        Ok(diff_group(&self.0, o))
    }

    fn converge(&self, work: Work<'_, GroupField>, _ctx: &ApplyContext) -> Script {
        apply_group(&self.0, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use serde_json::json;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA843lzz+6o44cNQ1xjgqWOnjWjfO7P9gwtR7tAzJ5No a@example";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINr10gbDmgkblGAg7qomatfbh+75IUQ1/0uUWkTRUy0S b@example";
    const KEY_C: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIk65Q5WBlbnXPogdu4jCYiWTEVJpYNkmL8kQgKkKVFIUeidV/m+dlBGDhdyFrF83VccUt90D0bfPE2fM1H8SCY= c@example";

    fn user(params: Value) -> DesiredUser {
        DesiredUser::from_params(serde_json::from_value(params).unwrap()).unwrap()
    }

    fn user_err(params: Value) -> String {
        match super::params::<UserParams>(params) {
            Err(e) => e.0,
            Ok(p) => DesiredUser::from_params(p).unwrap_err().0,
        }
    }

    fn verdict(d: &DesiredUser, out: &str) -> Verdict {
        User(d.clone()).diff(out).unwrap()
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::new(field, before.map(String::from), after.map(String::from))
    }

    /// A probe output of user moltbot as the testbed shows it, with `extra` lines before `end`.
    fn present(extra: &str) -> String {
        format!(
            "rampart-user 1\nexists=yes\nuid=1001\ngid=1001\ncomment=Moltbot agent\n\
             home=/home/moltbot\nshell=/bin/bash\ngroup=moltbot\ngroups=moltbot docker adm\n\
             password=locked\n{extra}end\n"
        )
    }

    fn moltbot() -> Value {
        json!({
            "name": "moltbot", "uid": 1001, "groups": ["docker", "adm"], "shell": "/bin/bash",
            "comment": "Moltbot agent", "authorized_keys": [KEY_A],
        })
    }

    const KEYS_OK: &str = "ssh_dir=700 moltbot\nkeys_file=600 moltbot\n";

    // --- parameters ---

    #[test]
    fn defaults_lock_the_password_and_own_the_keys_exclusively() {
        let d = user(json!({"name": "moltbot", "authorized_keys": []}));
        assert_eq!(d.state, State::Present);
        assert!(d.password_locked);
        assert!(!d.system && !d.remove_home);
        assert_eq!(
            d.keys,
            Some(WantedKeys {
                keys: vec![],
                exclusive: true
            })
        );
        assert_eq!(d.groups, None, "groups omitted: not managed");
    }

    #[test]
    fn every_declared_param_is_accepted_and_ids_may_be_text() {
        let p = json!({
            "name": "svc_1", "state": "present", "uid": "1500", "group": "svc", "groups": ["a"],
            "append_groups": true, "shell": "/bin/sh", "home": "/srv/svc", "system": true,
            "comment": "x", "password_locked": false, "authorized_keys": [KEY_A],
            "authorized_keys_exclusive": false, "remove_home": false,
        });
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, USER.params);
        assert_eq!(user(p).uid, Some(1500));
        let g = json!({"name": "svc", "state": "absent", "gid": 900, "system": true});
        let keys: Vec<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, GROUP.params);
        assert!((GROUP.build)(g).is_ok());
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        assert!(user_err(json!({"name": "x", "colour": 1})).contains("unknown field `colour`"));
        assert!(user_err(json!({"name": "x", "state": "gone"})).contains("unknown variant"));
        for name in [
            "",
            "-rf",
            "1abc",
            ".x",
            "a b",
            "a:b",
            "root'",
            "é",
            &"a".repeat(33),
        ] {
            assert!(
                user_err(json!({ "name": name })).starts_with("invalid user name"),
                "{name:?}"
            );
        }
        assert!(user(json!({"name": "machine$"})).name == "machine$");
        assert_eq!(
            user_err(json!({"name": "x", "groups": ["ok", "$(id)"]})),
            "invalid group name \"$(id)\": use 1 to 32 characters from A-Z a-z 0-9 . _ -, starting with a letter or _ (a final $ is allowed)"
        );
        assert_eq!(
            user_err(json!({"name": "x", "uid": -1})),
            "uid -1 is not a number from 0 to 4294967294"
        );
        assert_eq!(
            user_err(json!({"name": "x", "shell": "bash"})),
            "shell \"bash\" is not an absolute path"
        );
        assert_eq!(
            user_err(json!({"name": "x", "comment": "a:b"})),
            "comment \"a:b\" of user x contains ':', which a passwd entry cannot hold"
        );
        assert_eq!(
            user_err(json!({"name": "x", "authorized_keys": ["ssh-ed25519 AAAAnotakey x"]})),
            "authorized_keys of user x: the key is not valid base64: \"ssh-ed25519 AAAAnotakey x\""
        );
        let rsa_label = KEY_A.replace("ssh-ed25519", "ssh-rsa");
        assert!(
            user_err(json!({"name": "x", "authorized_keys": [rsa_label]}))
                .contains("the base64 key is not a ssh-rsa key")
        );
        assert!(
            user_err(json!({"name": "x", "authorized_keys": [KEY_A, format!("restrict {KEY_A}")]}))
                .contains("is listed twice with different options")
        );
    }

    #[test]
    fn key_lines_parse_with_options_and_compare_without_comments() {
        let k = PublicKey::parse(&format!(
            "from=\"10.0.0.1,10.0.0.2\",command=\"echo \\\"a b\\\"\" {KEY_A}"
        ))
        .unwrap();
        assert_eq!(
            k.options.as_deref(),
            Some("from=\"10.0.0.1,10.0.0.2\",command=\"echo \\\"a b\\\"\"")
        );
        assert_eq!(k.kind, "ssh-ed25519");
        let plain = PublicKey::parse(&KEY_A.replace("a@example", "other comment")).unwrap();
        assert!(k.same_key(&plain) && plain.options.is_none());
        assert!(PublicKey::parse(KEY_C).is_ok());
        assert!(PublicKey::parse("restrict,from=\"x ssh-ed25519 AAAA").is_err());
        // Several lines in one entry (a rendered .pub file) give several keys.
        let d =
            user(json!({"name": "x", "authorized_keys": [format!("{KEY_A}\n# c\n\n{KEY_B}\n")]}));
        assert_eq!(d.keys.unwrap().keys.len(), 2);
    }

    // --- diff on recorded probe outputs ---

    #[test]
    fn a_missing_user_is_created_with_every_named_field() {
        let d = user(moltbot());
        assert_eq!(
            verdict(&d, "rampart-user 1\nexists=no\nend\n"),
            Verdict::Create(vec![
                change("state", Some("absent"), Some("present")),
                change("uid", None, Some("1001")),
                change("groups", None, Some("docker,adm")),
                change("shell", None, Some("/bin/bash")),
                change("comment", None, Some("Moltbot agent")),
                change("password_locked", None, Some("true")),
                change("authorized_keys", None, Some(KEY_A)),
            ])
        );
    }

    #[test]
    fn a_user_as_desired_is_in_line_whatever_the_key_comments_and_order() {
        let d = user(json!({
            "name": "moltbot", "uid": 1001, "group": "moltbot", "groups": ["adm", "docker"],
            "shell": "/bin/bash", "home": "/home/moltbot", "comment": "Moltbot agent",
            "authorized_keys": [KEY_A, KEY_B],
        }));
        let out = present(&format!(
            "{KEYS_OK}key=# managed by hand\nkey=\nkey={}\nkey={}\n",
            KEY_B.replace("b@example", "renamed"),
            KEY_A
        ));
        assert_eq!(
            verdict(&d, &out),
            Verdict::InLine("user moltbot is in line".into())
        );
    }

    #[test]
    fn several_fields_are_modified_together() {
        let d = user(json!({
            "name": "moltbot", "uid": 1002, "group": "agents", "groups": ["docker"],
            "shell": "/usr/sbin/nologin", "home": "/srv/moltbot", "comment": "Agent",
            "password_locked": true,
        }));
        let out = present("").replace("password=locked", "password=empty");
        assert_eq!(
            verdict(&d, &out),
            Verdict::Modify(vec![
                change("uid", Some("1001"), Some("1002")),
                change("group", Some("moltbot"), Some("agents")),
                change("groups", Some("docker,adm"), Some("docker")),
                change("shell", Some("/bin/bash"), Some("/usr/sbin/nologin")),
                change("home", Some("/home/moltbot"), Some("/srv/moltbot")),
                change("comment", Some("Moltbot agent"), Some("Agent")),
                change(
                    "password_locked",
                    Some("false (empty password)"),
                    Some("true")
                ),
            ])
        );
    }

    #[test]
    fn appended_groups_only_add() {
        let d =
            user(json!({"name": "moltbot", "groups": ["docker", "sudo"], "append_groups": true}));
        assert_eq!(
            verdict(&d, &present("")),
            Verdict::Modify(vec![change(
                "groups",
                Some("docker,adm"),
                Some("docker,adm,sudo")
            )])
        );
        let d = user(json!({"name": "moltbot", "groups": ["adm"], "append_groups": true}));
        assert!(verdict(&d, &present("")).is_in_line());
        // The primary group listed among the supplementary ones is no difference.
        let d = user(json!({"name": "moltbot", "groups": ["moltbot", "adm", "docker"]}));
        assert!(verdict(&d, &present("")).is_in_line());
    }

    #[test]
    fn exclusive_keys_remove_every_other_line_and_additive_keys_keep_them() {
        let stray = format!("key={KEY_B}\nkey=garbage that is no key\nkey={KEY_A}\n");
        let out = present(&format!("{KEYS_OK}{stray}"));
        let mut p = moltbot();
        assert_eq!(
            verdict(&user(p.clone()), &out),
            Verdict::Modify(vec![
                change("authorized_keys", Some(KEY_B), None),
                change("authorized_keys", Some("garbage that is no key"), None),
            ])
        );
        p["authorized_keys_exclusive"] = json!(false);
        assert!(verdict(&user(p.clone()), &out).is_in_line());
        p["authorized_keys"] = json!([KEY_A, KEY_C]);
        assert_eq!(
            verdict(&user(p), &out),
            Verdict::Modify(vec![change("authorized_keys", None, Some(KEY_C))])
        );
    }

    #[test]
    fn a_listed_key_with_other_options_is_replaced() {
        let restricted = format!("restrict,from=\"10.0.0.0/8\" {KEY_A}");
        let mut p = moltbot();
        p["authorized_keys"] = json!([restricted]);
        p["authorized_keys_exclusive"] = json!(false);
        let out = present(&format!("{KEYS_OK}key={KEY_A}\n"));
        assert_eq!(
            verdict(&user(p), &out),
            Verdict::Modify(vec![change(
                "authorized_keys",
                Some(KEY_A),
                Some(&restricted)
            )])
        );
    }

    #[test]
    fn loose_modes_owners_and_symlinks_of_the_key_files_are_changes() {
        let out = present(&format!(
            "ssh_dir=755 root\nkeys_file=644 moltbot\nkey={KEY_A}\n"
        ));
        assert_eq!(
            verdict(&user(moltbot()), &out),
            Verdict::Modify(vec![
                change(
                    "ssh_dir",
                    Some("0755 owned by root"),
                    Some("0700 owned by moltbot")
                ),
                change(
                    "authorized_keys_file",
                    Some("0644 owned by moltbot"),
                    Some("0600 owned by moltbot")
                ),
            ])
        );
        let out = present("ssh_dir=symlink\n");
        assert_eq!(
            verdict(&user(moltbot()), &out),
            Verdict::Modify(vec![
                change(
                    "ssh_dir",
                    Some("symbolic link"),
                    Some("0700 owned by moltbot")
                ),
                change("authorized_keys", None, Some(KEY_A)),
            ])
        );
        // No folder, no file, no keys wanted: nothing to write.
        let mut p = moltbot();
        p["authorized_keys"] = json!([]);
        assert!(verdict(&user(p), &present("ssh_dir=absent\n")).is_in_line());
    }

    #[test]
    fn absent_users_are_removed_keeping_the_home_unless_asked() {
        let d = user(json!({"name": "moltbot", "state": "absent"}));
        assert_eq!(
            verdict(&d, &present("")),
            Verdict::Remove(vec![change("state", Some("present"), Some("absent"))])
        );
        let d = user(json!({"name": "moltbot", "state": "absent", "remove_home": true}));
        assert_eq!(
            verdict(&d, &present("")).changes()[1],
            change("home", Some("/home/moltbot"), None)
        );
        assert_eq!(
            verdict(&d, "rampart-user 1\nexists=no\nend\n"),
            Verdict::InLine("user moltbot is absent, in line".into())
        );
    }

    #[test]
    fn junk_and_cut_short_probe_outputs_are_probe_errors() {
        let d = User(user(moltbot()));
        for (out, message) in [
            ("", "expected `rampart-user 1` on the first line"),
            (
                "Welcome to Ubuntu!\nrampart-user 1\nexists=no\nend\n",
                "expected `rampart-user 1` on the first line",
            ),
            (
                "rampart-user 1\nexists=no\n",
                "the output stops before its `end` line (cut short?)",
            ),
            (
                "rampart-user 1\nexists=maybe\nend\n",
                "`exists` is neither yes nor no: \"maybe\"",
            ),
            (
                "rampart-user 1\nexists=no\n\u{1b}[31mgarbage\nend\n",
                "not a `key=value` line: \"\\u{1b}[31mgarbage\"",
            ),
            (
                "rampart-user 1\nexists=no\ncolour=red\nend\n",
                "unknown key \"colour\"",
            ),
            (
                "rampart-user 1\nexists=no\nend\nmore\n",
                "text after `end`: \"more\"",
            ),
            (
                "rampart-user 1\nerror=getent passwd exited with status 1\nend\n",
                "the probe failed: getent passwd exited with status 1",
            ),
            (
                "rampart-user 1\nexists=no\nuid=3\nend\n",
                "fields for a user that does not exist",
            ),
        ] {
            let err = d.diff(out).unwrap_err();
            assert_eq!(err.message, message, "{out:?}");
            assert_eq!(err.output, out);
        }
        let bad_uid = present("").replace("uid=1001", "uid=x1");
        assert_eq!(
            d.diff(&bad_uid).unwrap_err().message,
            "`uid` is not a number: \"x1\""
        );
        let no_shell = present("").replace("shell=/bin/bash\n", "");
        assert_eq!(d.diff(&no_shell).unwrap_err().message, "no `shell` line");
        let twice = present("").replace("uid=1001\n", "uid=1001\nuid=1002\n");
        assert_eq!(d.diff(&twice).unwrap_err().message, "`uid` appears twice");
        let not_root = present("").replace("password=locked", "password=unknown");
        assert!(
            d.diff(&not_root)
                .unwrap_err()
                .message
                .contains("the probe did not run as root")
        );
        let bad_mode = present("ssh_dir=rwx moltbot\n");
        assert_eq!(
            d.diff(&bad_mode).unwrap_err().message,
            "cannot read `ssh_dir=rwx moltbot`"
        );
    }

    #[test]
    fn groups_are_created_modified_removed_and_in_line() {
        let g = |v: Value| DesiredGroup::from_params(serde_json::from_value(v).unwrap()).unwrap();
        let d = g(json!({"name": "agents", "gid": 1500, "system": true}));
        let absent = "rampart-group 1\nexists=no\nend\n";
        let present = "rampart-group 1\nexists=yes\ngid=1400\nend\n";
        assert_eq!(
            diff_group(&d, &parse_group(absent).unwrap()).map(|f| Some(f.text().to_string())),
            Verdict::Create(vec![
                change("state", Some("absent"), Some("present")),
                change("gid", None, Some("1500")),
                change("system", None, Some("true")),
            ])
        );
        assert_eq!(
            diff_group(&d, &parse_group(present).unwrap()).map(|f| Some(f.text().to_string())),
            Verdict::Modify(vec![change("gid", Some("1400"), Some("1500"))])
        );
        let any_gid = g(json!({"name": "agents"}));
        assert_eq!(
            diff_group(&any_gid, &parse_group(present).unwrap()),
            Verdict::InLine("group agents is in line".into())
        );
        let gone = g(json!({"name": "agents", "state": "absent"}));
        assert_eq!(
            diff_group(&gone, &parse_group(present).unwrap()).action(),
            "remove"
        );
        assert!(parse_group("rampart-group 1\nexists=yes\nend\n").is_err());
        assert!(parse_group("rampart-user 1\nexists=no\nend\n").is_err());
    }

    // --- scripts ---

    fn run_sh(script: &Script) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script.render().unwrap())
            .output()
            .unwrap()
    }

    #[test]
    fn probes_run_under_sh_and_parse() {
        let d = user(json!({"name": "rampart_no_such_user", "authorized_keys": [KEY_A]}));
        let out = run_sh(&probe_user(&d));
        assert_eq!(
            parse_user(&d.name, &String::from_utf8_lossy(&out.stdout)).unwrap(),
            ObservedUser::Absent
        );
        let root =
            DesiredGroup::from_params(serde_json::from_value(json!({"name": "root"})).unwrap())
                .unwrap();
        let out = run_sh(&probe_group(&root));
        assert_eq!(
            parse_group(&String::from_utf8_lossy(&out.stdout)).unwrap(),
            ObservedGroup(Some(0))
        );
    }

    #[test]
    fn hostile_values_reach_the_scripts_quoted() {
        let d = user(json!({
            "name": "moltbot", "comment": "'; rm -rf / #", "home": "/home/$(reboot)",
            "shell": "/bin/`id`", "authorized_keys": [format!("command=\"'; reboot\" {KEY_A}")],
        }));
        let ctx = ApplyContext::new("r1");
        let v = diff_user(&d, &ObservedUser::Absent);
        let text = apply_user(&d, Work::Converge(&v), &ctx).render().unwrap();
        assert!(text.contains(r#" -c ''\''; rm -rf / #'"#), "{text}");
        assert!(text.contains(" -d '/home/$(reboot)'"), "{text}");
        assert!(text.contains(" -s '/bin/`id`'"), "{text}");
        assert!(
            !text.contains("reboot\" ssh-ed25519"),
            "keys travel as a payload: {text}"
        );
        let probe = probe_user(&d).render().unwrap();
        assert!(probe.contains("kh='/home/$(reboot)'\n"), "{probe}");
    }

    /// The part that runs as the user, run here as the current user in a temporary folder.
    fn keys_as_user(dir: &std::path::Path, mode: &str, strip: &str, lines: &str) -> String {
        use base64::Engine as _;
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(KEYS_AS_USER)
            .arg("rampart-keys")
            .arg(dir)
            .arg(mode)
            .arg(strip)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(lines);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b64.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file left behind");
        std::fs::read_to_string(dir.join("authorized_keys")).unwrap()
    }

    #[test]
    fn the_user_side_merges_or_replaces_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".ssh");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("authorized_keys");
        // No trailing newline, a key to replace, a stray key and a comment to keep.
        std::fs::write(&file, format!("# hand\n{KEY_B}\n{KEY_A}")).unwrap();
        let a = PublicKey::parse(KEY_A).unwrap();
        let new_a = format!("restrict {KEY_A}");
        let text = keys_as_user(&dir, "merge", &a.blob, &format!("{new_a}\n{KEY_C}\n"));
        assert_eq!(text, format!("# hand\n{KEY_B}\n{new_a}\n{KEY_C}\n"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        // Nothing to strip or add: the file stays as it was.
        assert_eq!(keys_as_user(&dir, "merge", "", ""), text);
        assert_eq!(
            keys_as_user(&dir, "replace", "", &format!("{KEY_A}\n")),
            format!("{KEY_A}\n")
        );
    }
}
