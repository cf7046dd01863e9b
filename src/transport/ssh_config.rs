//! ssh_config: the operator's OpenSSH client configuration (`~/.ssh/config`, or `-F FILE`),
//! read with OpenSSH's semantics, so that an inventory host named `pi` reaches what `ssh pi`
//! reaches.
//!
//! Owns parsing (`Host`, `Match`, `Include`, `keyword value` and `keyword=value`, quoting) and
//! resolving the settings rampart uses for one host name: HostName, User, Port, IdentityFile,
//! IdentitiesOnly, ProxyJump, ProxyCommand, UserKnownHostsFile, StrictHostKeyChecking and
//! ConnectTimeout. As in OpenSSH the first value found wins (IdentityFile adds up), `Host`
//! patterns match the name as given (case-insensitively, `!` negates), and an `Include` inside
//! an inactive block includes nothing. It never connects: the inventory fills a host's settings
//! from it, and the transport uses them. `ssh -G HOST` is the reference (tests compare with it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::glob::{Syntax, glob_match};

/// How deep `Include` may nest (OpenSSH's limit).
const MAX_INCLUDE_DEPTH: usize = 16;

/// A problem in a config file, with where it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: {message}\nhint: {hint}", .path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
    pub hint: String,
}

#[derive(Debug, Clone)]
enum Item {
    Host(Vec<String>),
    Match(Vec<Criterion>),
    Set {
        key: String,
        args: Vec<String>,
        path: PathBuf,
        line: usize,
    },
    Include(Vec<Vec<Item>>),
}

#[derive(Debug, Clone)]
struct Criterion {
    negate: bool,
    kind: CriterionKind,
}

#[derive(Debug, Clone)]
enum CriterionKind {
    All,
    Host(Vec<String>),
    OriginalHost(Vec<String>),
    User(Vec<String>),
    LocalUser(Vec<String>),
}

/// A parsed OpenSSH client configuration: the user's file (or `-F`'s) and the system's.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    files: Vec<Vec<Item>>,
}

/// What `StrictHostKeyChecking` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strict {
    /// `yes` and `ask` (rampart never asks: an unknown key is refused).
    Yes,
    /// `accept-new`, and `no`/`off` (rampart still refuses a changed key).
    AcceptNew,
}

/// The settings one host name resolves to; `None` where the config says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: Option<bool>,
    /// The hops, first one first, as written (`none` is `Some(vec![])`).
    pub proxy_jump: Option<Vec<String>>,
    /// With `%h`, `%p`, `%r`, `%n` already expanded; `none` is `Some("")`.
    pub proxy_command: Option<String>,
    pub user_known_hosts: Option<Vec<PathBuf>>,
    pub strict: Option<Strict>,
    pub connect_timeout: Option<Duration>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        home()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Splits a config line into words as OpenSSH does: spaces separate, `"…"` quotes, the first
/// word may end in `=` (or be followed by one), `#` starts a comment outside quotes.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut seen_eq = false;
    for c in line.chars() {
        if quoted {
            if c == '"' {
                quoted = false;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                in_word = true;
            }
            '#' if !in_word => break,
            ' ' | '\t' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '=' if !seen_eq && ((out.is_empty() && in_word) || (out.len() == 1 && !in_word)) => {
                // `Key=value`, `Key = value`: the first `=` ends the keyword.
                seen_eq = true;
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("an unclosed quote".to_string());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

impl SshConfig {
    /// `-F FILE` when given (then the system file is not read, as with ssh), else
    /// `~/.ssh/config` and `/etc/ssh/ssh_config`, each only if it exists.
    pub fn load(explicit: Option<&Path>) -> Result<SshConfig, ConfigError> {
        let mut config = SshConfig::default();
        match explicit {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    path: path.to_path_buf(),
                    line: 0,
                    message: format!("cannot read it: {e}"),
                    hint: "give -F (--ssh-config) a readable OpenSSH client config file"
                        .to_string(),
                })?;
                config.files.push(parse(path, &text, true, 0)?);
            }
            None => {
                let user = home().join(".ssh/config");
                for (path, user_file) in [
                    (user.as_path(), true),
                    (Path::new("/etc/ssh/ssh_config"), false),
                ] {
                    if let Ok(text) = std::fs::read_to_string(path) {
                        config.files.push(parse(path, &text, user_file, 0)?);
                    }
                }
            }
        }
        Ok(config)
    }

    /// One file's text, as the user's config (for tests).
    pub fn parse_str(path: &Path, text: &str) -> Result<SshConfig, ConfigError> {
        Ok(SshConfig {
            files: vec![parse(path, text, true, 0)?],
        })
    }

    /// The settings for `host` (the name as given, as to `ssh HOST`). `user` is a login the
    /// caller already knows (an inventory's `user`), which `Match user` sees.
    pub fn resolve(&self, host: &str, user: Option<&str>) -> Result<Resolved, ConfigError> {
        let original = host.to_lowercase();
        let mut state = State {
            original,
            known_user: user.map(str::to_string),
            out: Resolved::default(),
            raw_identities: Vec::new(),
            raw_known_hosts: None,
            raw_proxy_command: None,
        };
        for file in &self.files {
            state.walk(file, true)?;
        }
        state.finish()
    }
}

struct State {
    original: String,
    known_user: Option<String>,
    out: Resolved,
    raw_identities: Vec<(String, PathBuf, usize)>,
    raw_known_hosts: Option<(Vec<String>, PathBuf, usize)>,
    raw_proxy_command: Option<(String, PathBuf, usize)>,
}

fn err(path: &Path, line: usize, message: String, hint: &str) -> ConfigError {
    ConfigError {
        path: path.to_path_buf(),
        line,
        message,
        hint: hint.to_string(),
    }
}

fn parse(path: &Path, text: &str, user_file: bool, depth: usize) -> Result<Vec<Item>, ConfigError> {
    let mut items = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let w = words(raw)
            .map_err(|m| err(path, line, m, "write `Keyword value` with quotes closed"))?;
        let Some((key, args)) = w.split_first() else {
            continue;
        };
        let key = key.to_lowercase();
        let args: Vec<String> = args.to_vec();
        match key.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(err(
                        path,
                        line,
                        "`Host` names no pattern".into(),
                        "write `Host NAME…`",
                    ));
                }
                items.push(Item::Host(args));
            }
            "match" => items.push(Item::Match(criteria(path, line, &args)?)),
            "include" => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(
                        path,
                        line,
                        "`Include` nests too deep".into(),
                        "look for an Include that includes itself",
                    ));
                }
                let mut files = Vec::new();
                for arg in &args {
                    let mut p = expand_tilde(arg);
                    if p.is_relative() {
                        p = if user_file {
                            home().join(".ssh").join(p)
                        } else {
                            Path::new("/etc/ssh").join(p)
                        };
                    }
                    for found in expand_glob(&p) {
                        if let Ok(text) = std::fs::read_to_string(&found) {
                            files.push(parse(&found, &text, user_file, depth + 1)?);
                        }
                    }
                }
                items.push(Item::Include(files));
            }
            _ => {
                if args.is_empty() {
                    return Err(err(
                        path,
                        line,
                        format!("`{key}` has no value"),
                        "write `Keyword value`",
                    ));
                }
                items.push(Item::Set {
                    key,
                    args,
                    path: path.to_path_buf(),
                    line,
                });
            }
        }
    }
    Ok(items)
}

/// The files a glob names, sorted (as glob(3) gives them). Wildcards in the last component
/// only; one without any is itself.
fn expand_glob(path: &Path) -> Vec<PathBuf> {
    let text = path.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return vec![path.to_path_buf()];
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let pattern = name.to_string_lossy();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            (pattern.starts_with('.') || !n.starts_with('.'))
                && glob_match(&pattern, &n, Syntax::Paths)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn list(arg: Option<&String>) -> Vec<String> {
    arg.map(|a| a.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

fn criteria(path: &Path, line: usize, args: &[String]) -> Result<Vec<Criterion>, ConfigError> {
    let mut out = Vec::new();
    let mut i = 0;
    if args.is_empty() {
        return Err(err(
            path,
            line,
            "`Match` has no criteria".into(),
            "write `Match host NAME` or `Match all`",
        ));
    }
    while i < args.len() {
        let word = args[i].to_lowercase();
        let (negate, word) = match word.strip_prefix('!') {
            Some(w) => (true, w.to_string()),
            None => (false, word),
        };
        let value = args.get(i + 1);
        let kind = match word.as_str() {
            "all" => {
                i += 1;
                out.push(Criterion {
                    negate,
                    kind: CriterionKind::All,
                });
                continue;
            }
            "host" => CriterionKind::Host(list(value)),
            "originalhost" => CriterionKind::OriginalHost(list(value)),
            "user" => CriterionKind::User(list(value)),
            "localuser" => CriterionKind::LocalUser(list(value)),
            other => {
                return Err(err(
                    path,
                    line,
                    format!("`Match {other}` is not supported by rampart"),
                    "rampart supports `Match all`, `host`, `originalhost`, `user` and `localuser`; put this host's settings under a `Host` block, or give rampart its own file with -F",
                ));
            }
        };
        if value.is_none() {
            return Err(err(
                path,
                line,
                format!("`Match {word}` has no value"),
                "write `Match host PATTERN,…`",
            ));
        }
        out.push(Criterion { negate, kind });
        i += 2;
    }
    Ok(out)
}

/// OpenSSH's pattern lists: a comma list (or several words) where any plain pattern must
/// match and no `!pattern` may.
fn match_list<'a>(patterns: impl IntoIterator<Item = &'a String>, name: &str) -> bool {
    let name = name.to_lowercase();
    let mut matched = false;
    for p in patterns {
        let p = p.to_lowercase();
        match p.strip_prefix('!') {
            Some(neg) => {
                if glob_match(neg, &name, Syntax::Names) {
                    return false;
                }
            }
            None => {
                if glob_match(&p, &name, Syntax::Names) {
                    matched = true;
                }
            }
        }
    }
    matched
}

const UNSUPPORTED: &[&str] = &[
    "canonicalizehostname",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "remotecommand",
    "localcommand",
    "permitlocalcommand",
    "knownhostscommand",
    "certificatefile",
];

impl State {
    fn user_now(&self) -> String {
        self.out
            .user
            .clone()
            .or_else(|| self.known_user.clone())
            .unwrap_or_else(local_user)
    }

    fn walk(&mut self, items: &[Item], mut active: bool) -> Result<(), ConfigError> {
        let enclosing = active;
        for item in items {
            match item {
                Item::Host(patterns) => active = match_list(patterns, &self.original),
                Item::Match(criteria) => {
                    active = criteria.iter().all(|c| {
                        let hit = match &c.kind {
                            CriterionKind::All => true,
                            CriterionKind::Host(p) => match_list(
                                p,
                                self.out.hostname.as_deref().unwrap_or(&self.original),
                            ),
                            CriterionKind::OriginalHost(p) => match_list(p, &self.original),
                            CriterionKind::User(p) => match_list(p, &self.user_now()),
                            CriterionKind::LocalUser(p) => match_list(p, &local_user()),
                        };
                        hit != c.negate
                    })
                }
                Item::Include(files) => {
                    for file in files {
                        // An Include in an inactive block includes nothing.
                        if active {
                            self.walk(file, true)?;
                        }
                    }
                }
                Item::Set {
                    key,
                    args,
                    path,
                    line,
                } if active => self.set(key, args, path, *line)?,
                Item::Set { .. } => {}
            }
        }
        let _ = enclosing;
        Ok(())
    }

    fn set(
        &mut self,
        key: &str,
        args: &[String],
        path: &Path,
        line: usize,
    ) -> Result<(), ConfigError> {
        let first = &args[0];
        let yes_no = |v: &str| -> Result<bool, ConfigError> {
            match v.to_lowercase().as_str() {
                "yes" | "true" => Ok(true),
                "no" | "false" => Ok(false),
                _ => Err(err(
                    path,
                    line,
                    format!("`{key}` must be yes or no, found `{v}`"),
                    "write yes or no",
                )),
            }
        };
        match key {
            "hostname" if self.out.hostname.is_none() => {
                let h = first.replace("%%", "\u{0}").replace("%h", &self.original);
                self.out.hostname = Some(h.replace('\u{0}', "%"));
            }
            "user" if self.out.user.is_none() => self.out.user = Some(first.clone()),
            "port" if self.out.port.is_none() => {
                let port = first
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        err(
                            path,
                            line,
                            format!("`Port {first}` is not a port"),
                            "write a number from 1 to 65535",
                        )
                    })?;
                self.out.port = Some(port);
            }
            "identityfile" => {
                self.raw_identities
                    .push((first.clone(), path.to_path_buf(), line));
            }
            "identitiesonly" if self.out.identities_only.is_none() => {
                self.out.identities_only = Some(yes_no(first)?)
            }
            "proxyjump" if self.out.proxy_jump.is_none() && self.raw_proxy_command.is_none() => {
                self.out.proxy_jump = Some(if first.eq_ignore_ascii_case("none") {
                    Vec::new()
                } else {
                    first.split(',').map(str::to_string).collect()
                });
            }
            "proxycommand" if self.out.proxy_jump.is_none() && self.raw_proxy_command.is_none() => {
                self.raw_proxy_command = Some((args.join(" "), path.to_path_buf(), line));
            }
            "userknownhostsfile" if self.raw_known_hosts.is_none() => {
                self.raw_known_hosts = Some((args.to_vec(), path.to_path_buf(), line));
            }
            "stricthostkeychecking" if self.out.strict.is_none() => {
                self.out.strict = Some(match first.to_lowercase().as_str() {
                    "yes" | "ask" | "true" => Strict::Yes,
                    "accept-new" | "no" | "off" | "false" => Strict::AcceptNew,
                    _ => {
                        return Err(err(
                            path,
                            line,
                            format!("`StrictHostKeyChecking {first}` is not a value OpenSSH knows"),
                            "write yes, accept-new or no",
                        ));
                    }
                });
            }
            "connecttimeout" if self.out.connect_timeout.is_none() => {
                let secs = first.parse::<u64>().map_err(|_| {
                    err(
                        path,
                        line,
                        format!("`ConnectTimeout {first}` is not a number of seconds"),
                        "write a whole number of seconds",
                    )
                })?;
                self.out.connect_timeout = Some(Duration::from_secs(secs));
            }
            other if UNSUPPORTED.contains(&other) => {
                tracing::debug!(
                    "{}:{line}: `{other}` is not used by rampart",
                    path.display()
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Expands `%` tokens as OpenSSH does for the keywords that allow them.
    fn tokens(&self, text: &str, path: &Path, line: usize) -> Result<String, ConfigError> {
        let host = self
            .out
            .hostname
            .clone()
            .unwrap_or_else(|| self.original.clone());
        let port = self.out.port.unwrap_or(22).to_string();
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('h') => out.push_str(&host),
                Some('n') => out.push_str(&self.original),
                Some('p') => out.push_str(&port),
                Some('r') => out.push_str(&self.user_now()),
                Some('u') => out.push_str(&local_user()),
                Some('d') => out.push_str(&home().to_string_lossy()),
                Some(t) => {
                    return Err(err(
                        path,
                        line,
                        format!("the token `%{t}` is not supported by rampart"),
                        "use %h, %n, %p, %r, %u, %d or %%",
                    ));
                }
                None => {
                    return Err(err(
                        path,
                        line,
                        "a lone `%` at the end".into(),
                        "write %% for a percent sign",
                    ));
                }
            }
        }
        Ok(out)
    }

    fn finish(mut self) -> Result<Resolved, ConfigError> {
        let mut identities = Vec::new();
        for (raw, path, line) in std::mem::take(&mut self.raw_identities) {
            let p = expand_tilde(&self.tokens(&raw, &path, line)?);
            if !identities.contains(&p) {
                identities.push(p);
            }
        }
        self.out.identity_files = identities;
        if let Some((files, path, line)) = self.raw_known_hosts.take() {
            let mut out = Vec::new();
            for f in files {
                if f.eq_ignore_ascii_case("none") {
                    continue;
                }
                out.push(expand_tilde(&self.tokens(&f, &path, line)?));
            }
            self.out.user_known_hosts = Some(out);
        }
        if let Some((cmd, path, line)) = self.raw_proxy_command.take() {
            self.out.proxy_command = Some(if cmd.eq_ignore_ascii_case("none") {
                String::new()
            } else {
                self.tokens(&cmd, &path, line)?
            });
        }
        Ok(self.out)
    }
}

/// One hop of a ProxyJump list: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
pub fn parse_jump(spec: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, tail) = inner.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((user, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, host: &str) -> Resolved {
        SshConfig::parse_str(Path::new("config"), text)
            .unwrap()
            .resolve(host, None)
            .unwrap()
    }

    #[test]
    fn first_value_wins_and_identities_add_up() {
        let r = resolve(
            "Host pi\n  HostName 10.0.0.5\n  User pi\n  IdentityFile ~/.ssh/a\nHost *\n  User root\n  Port=2222\n  IdentityFile /k/%h-%r\n",
            "PI",
        );
        assert_eq!(r.hostname.as_deref(), Some("10.0.0.5"));
        assert_eq!(r.user.as_deref(), Some("pi"));
        assert_eq!(r.port, Some(2222));
        assert_eq!(r.identity_files.len(), 2);
        assert_eq!(r.identity_files[1], PathBuf::from("/k/10.0.0.5-pi"));
    }

    #[test]
    fn negated_patterns_and_match() {
        let text = "Host *.lan !bad.lan\n  User lan\nMatch originalhost bad.lan\n  User bad\nMatch host 10.*\n  Port 2200\nHost x\n  HostName 10.1.1.1\nHost *\n  ProxyJump a,b:2022\n";
        assert_eq!(resolve(text, "good.lan").user.as_deref(), Some("lan"));
        assert_eq!(resolve(text, "bad.lan").user.as_deref(), Some("bad"));
        let x = resolve(text, "x");
        assert_eq!(
            x.port, None,
            "Match host saw the HostName set later in the file"
        );
        assert_eq!(
            x.proxy_jump,
            Some(vec!["a".to_string(), "b:2022".to_string()])
        );
        assert!(
            SshConfig::parse_str(Path::new("c"), "Match exec true\n")
                .unwrap_err()
                .to_string()
                .contains("c:1:")
        );
    }

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("u@h:22"),
            Some((Some("u".into()), "h".into(), Some(22)))
        );
        assert_eq!(
            parse_jump("ssh://[::1]:2"),
            Some((None, "::1".into(), Some(2)))
        );
        assert_eq!(parse_jump("h:x"), None);
    }

    #[test]
    fn words_split_like_openssh() {
        assert_eq!(
            words("ProxyCommand=\"ssh -W %h:%p\" x # c").unwrap(),
            vec!["ProxyCommand", "ssh -W %h:%p", "x"]
        );
        assert_eq!(words("  Key = v").unwrap(), vec!["Key", "v"]);
        assert!(words("Key \"open").is_err());
    }
}
