//! inventory: hosts, groups and their variables, read from Ansible's YAML inventory layout.
//!
//! Owns reading the file, merging variables by precedence (host > child group > parent group >
//! `all`), the connection settings of each host (with Ansible's `ansible_*` names as aliases)
//! and `--limit`. It never connects anywhere: turning a [`Host`] into an SSH target is the
//! transport's job.
//!
//! ```yaml
//! all:
//!   vars: { user: admin, bootstrap_user: root }
//!   children:
//!     pis:
//!       hosts:
//!         pi-1: { ansible_host: 192.0.2.10 }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::glob::{Syntax, glob_match};
use crate::transport::ssh::{Endpoint, FromConfig, Target};
use crate::transport::ssh_config::{self, SshConfig};

/// Variables as written, each with where it was written.
type RawVars = IndexMap<String, Spanned<Value>>;

/// One group as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    hosts: Option<IndexMap<String, Option<RawVars>>>,
    #[serde(default)]
    vars: Option<RawVars>,
    #[serde(default)]
    children: Option<IndexMap<String, Option<RawGroup>>>,
}

/// A variable's value and where it was written.
#[derive(Debug, Clone)]
pub struct Var {
    pub value: Value,
    pub line: u64,
    pub column: u64,
    /// The file it was written in, when not the inventory itself (a `group_vars/` file).
    pub file: Option<PathBuf>,
}

/// Variables with where each was written.
pub type Vars = IndexMap<String, Var>;

/// One group as rampart reads it, from the YAML or the INI layout.
#[derive(Debug, Default, Clone)]
pub struct Group {
    pub hosts: IndexMap<String, Vars>,
    pub vars: Vars,
    pub children: IndexMap<String, Group>,
}

fn vars_of(raw: Option<RawVars>) -> Vars {
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let var = Var {
                value: v.value,
                line: v.referenced.line(),
                column: v.referenced.column(),
                file: None,
            };
            (k, var)
        })
        .collect()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let a = if a.as_os_str().is_empty() {
        Path::new(".")
    } else {
        a
    };
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Group {
    fn set_file(&mut self, path: &Path) {
        let vars = self
            .hosts
            .values_mut()
            .chain(std::iter::once(&mut self.vars));
        for v in vars.flat_map(|v| v.values_mut()) {
            v.file.get_or_insert_with(|| path.to_path_buf());
        }
        for c in self.children.values_mut() {
            c.set_file(path);
        }
    }
}

impl From<RawGroup> for Group {
    fn from(raw: RawGroup) -> Group {
        Group {
            hosts: raw
                .hosts
                .unwrap_or_default()
                .into_iter()
                .map(|(h, v)| (h, vars_of(v)))
                .collect(),
            vars: vars_of(raw.vars),
            children: raw
                .children
                .unwrap_or_default()
                .into_iter()
                .map(|(c, g)| (c, Group::from(g.unwrap_or_default())))
                .collect(),
        }
    }
}

/// A host with its merged variables and connection settings.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Groups the host belongs to, `all` first.
    pub groups: Vec<String>,
    /// Merged variables, by precedence.
    pub vars: IndexMap<String, Var>,
    pub address: String,
    pub port: u16,
    /// The admin login.
    pub user: String,
    /// The login of a fresh host before its admin user exists (typically root).
    pub bootstrap_user: Option<String>,
    pub identity: Option<PathBuf>,
    /// Run remote scripts under `sudo -n` (when the login is not root). Default: true for a
    /// login other than root.
    pub become_root: bool,
    /// The inventory's `jump`, as written: `[user@]host[:port]` or the name of another
    /// inventory host (the user is empty when not written).
    pub jump_spec: Option<Endpoint>,
    /// The bastions to go through, the first one reached first: from `jump` (with the jump
    /// host's own `jump`), else from the ssh config's ProxyJump.
    pub jump: Vec<Endpoint>,
    /// What the operator's ssh config adds to the login (identity files, known_hosts, …).
    pub ssh: FromConfig,
    /// `backup_keep`: how many runs' backups the host keeps (`--keep-backups` beats it).
    pub backup_keep: Option<u32>,
}

/// The inventory: hosts in file order, and the members of each group.
#[derive(Debug)]
pub struct Inventory {
    pub path: PathBuf,
    /// Things to tell the operator that do not stop the run (`ansible_*` keys rampart does
    /// not use).
    pub warnings: Vec<String>,
    pub hosts: Vec<Host>,
    pub groups: IndexMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}:{line}:{column}: host `{host}`: {message}", .path.display())]
    Value {
        path: PathBuf,
        line: u64,
        column: u64,
        host: String,
        message: String,
    },
    #[error("{}: {message}", .path.display())]
    Structure { path: PathBuf, message: String },
    #[error("host `{host}`: {message}")]
    SshConfig { host: String, message: String },
    #[error(
        "--limit names no pattern (it is empty)\n\
         hint: give host or group names, or leave --limit out to run on every host"
    )]
    LimitEmpty,
    #[error(
        "--limit `{pattern}` matches no host or group (hosts: {hosts}; groups: {groups})\n\
         hint: name a host or group above; `*` and `?` are wildcards, commas separate patterns"
    )]
    LimitMatchesNothing {
        pattern: String,
        hosts: String,
        groups: String,
    },
}

/// rampart's names of the connection settings, and the Ansible names read as aliases.
const ALIASES: &[(&str, &str)] = &[
    ("address", "ansible_host"),
    ("port", "ansible_port"),
    ("user", "ansible_user"),
    ("identity", "ansible_ssh_private_key_file"),
    ("become", "ansible_become"),
    ("address", "ansible_ssh_host"),
    ("port", "ansible_ssh_port"),
    ("user", "ansible_ssh_user"),
];

impl Inventory {
    /// Reads an inventory in Ansible's YAML layout or its INI layout (told apart by the first
    /// line that says something: `[group]` or `host key=value` is INI), with the
    /// `group_vars/` and `host_vars/` beside it.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        Inventory::load_all(&[path.to_path_buf()])
    }

    /// Several inventories as one, as Ansible merges several `-i`: hosts and groups are
    /// joined, a later file's values win, each file's `group_vars/` and `host_vars/` count.
    pub fn load_all(paths: &[PathBuf]) -> Result<Inventory, InventoryError> {
        Inventory::load_with(paths, Vars::new(), None)
    }

    /// [`Inventory::load_all`] with `-e` variables, which beat every other (as Ansible's
    /// extra vars do), and the `group_vars/` and `host_vars/` beside the playbook (in
    /// `playbook_dir`), which beat the inventory's for the same group or host.
    pub fn load_with(
        paths: &[PathBuf],
        extra_vars: Vars,
        playbook_dir: Option<&Path>,
    ) -> Result<Inventory, InventoryError> {
        let Some(first) = paths.first() else {
            return Err(InventoryError::Structure {
                path: PathBuf::from("-i"),
                message: "no inventory given\nhint: pass -i FILE (or set RAMPART_INVENTORY)"
                    .to_string(),
            });
        };
        let mut walk = Walk {
            extra_vars,
            ..Walk::default()
        };
        for (n, path) in paths.iter().enumerate() {
            let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let mut all = if crate::ini_inventory::looks_like_ini(&text) {
                crate::ini_inventory::parse(path, &text)?
            } else {
                Inventory::parse_yaml(path, &text)?
            };
            if n > 0 {
                // Errors name the file a value came from.
                all.set_file(path);
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let extra = crate::ini_inventory::vars_dirs(dir)?;
            for (g, vars) in extra.groups {
                walk.extra.groups.entry(g).or_default().extend(vars);
            }
            for (h, vars) in extra.hosts {
                walk.extra.hosts.entry(h).or_default().extend(vars);
            }
            walk.group("all", all, &[], 0, path)?;
        }
        if let Some(dir) = playbook_dir {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let inventory_dirs: Vec<&Path> = paths
                .iter()
                .map(|p| p.parent().unwrap_or(Path::new(".")))
                .collect();
            // The same folder is read once.
            if !inventory_dirs.iter().any(|d| same_dir(d, dir)) {
                let extra = crate::ini_inventory::vars_dirs(dir)?;
                for (g, vars) in extra.groups {
                    walk.extra.groups.entry(g).or_default().extend(vars);
                }
                for (h, vars) in extra.hosts {
                    walk.extra.hosts.entry(h).or_default().extend(vars);
                }
            }
        }
        walk.finish(first)
    }

    /// A YAML inventory's text (no `group_vars/` read).
    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
        let all = Inventory::parse_yaml(path, text)?;
        Inventory::build(path, all, Default::default())
    }

    fn build(
        path: &Path,
        all: Group,
        extra: crate::ini_inventory::VarsDirs,
    ) -> Result<Inventory, InventoryError> {
        let mut walk = Walk {
            extra,
            ..Walk::default()
        };
        walk.group("all", all, &[], 0, path)?;
        walk.finish(path)
    }

    fn parse_yaml(path: &Path, text: &str) -> Result<Group, InventoryError> {
        let top: IndexMap<String, Option<RawGroup>> =
            serde_saphyr::from_str(text).map_err(|e| InventoryError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "{e}\nhint: the layout is Ansible's YAML inventory: `all:` with `hosts:`, `vars:` and `children:`"
                ),
            })?;
        // Top-level groups other than `all` are children of `all`, as in Ansible.
        let mut all = RawGroup::default();
        let mut others = IndexMap::new();
        for (name, group) in top {
            if name == "all" {
                all = group.unwrap_or_default();
            } else {
                others.insert(name, group);
            }
        }
        if !others.is_empty() {
            all.children
                .get_or_insert_with(IndexMap::new)
                .extend(others);
        }
        Ok(Group::from(all))
    }

    /// The hosts that `--limit` patterns select, with Ansible's syntax: names of hosts or
    /// groups and `*`/`?` globs, separated by `,` or `:`; `&pattern` keeps only hosts also in
    /// it, `!pattern` removes its hosts (regular patterns are taken first, then `&`, then `!`,
    /// as Ansible orders them; with only `&`/`!` patterns the start is every host);
    /// `@FILE` reads host names from a file, one a line (a retry file). All hosts when there
    /// is no `--limit`. A `--limit` with no pattern in it (`''`) or a pattern that names
    /// nothing is an error.
    pub fn limit(&self, raw: &[String]) -> Result<Vec<&Host>, InventoryError> {
        let mut patterns: Vec<String> = Vec::new();
        for piece in raw.iter().flat_map(|p| p.split(',')) {
            let piece = piece.trim();
            if let Some(file) = piece.strip_prefix('@') {
                let text =
                    std::fs::read_to_string(file).map_err(|source| InventoryError::Read {
                        path: PathBuf::from(file),
                        source,
                    })?;
                patterns.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string),
                );
                continue;
            }
            // `web:!db` is two patterns; an IPv6 address is one.
            if piece.contains(':') && piece.parse::<std::net::Ipv6Addr>().is_err() {
                patterns.extend(piece.split(':').map(|p| p.trim().to_string()));
            } else {
                patterns.push(piece.to_string());
            }
        }
        patterns.retain(|p| !p.is_empty() && p != "!" && p != "&");
        if patterns.is_empty() {
            // `--limit ''` is a mistake (an unset shell variable), not "every host".
            if !raw.is_empty() {
                return Err(InventoryError::LimitEmpty);
            }
            return Ok(self.hosts.iter().collect());
        }
        let regular: Vec<&str> = patterns
            .iter()
            .map(String::as_str)
            .filter(|p| !p.starts_with(['!', '&']))
            .collect();
        let mut chosen: BTreeSet<usize> = if regular.is_empty() {
            (0..self.hosts.len()).collect()
        } else {
            let mut chosen = BTreeSet::new();
            for pattern in regular {
                chosen.extend(self.matching(pattern)?);
            }
            chosen
        };
        for pattern in &patterns {
            if let Some(p) = pattern.strip_prefix('&') {
                let keep = self.matching(p)?;
                chosen.retain(|i| keep.contains(i));
            }
        }
        for pattern in &patterns {
            if let Some(p) = pattern.strip_prefix('!') {
                for i in self.matching(p)? {
                    chosen.remove(&i);
                }
            }
        }
        Ok(chosen.into_iter().map(|i| &self.hosts[i]).collect())
    }

    /// The hosts one pattern names (a host, a group, or a glob over either).
    fn matching(&self, pattern: &str) -> Result<BTreeSet<usize>, InventoryError> {
        let mut chosen = BTreeSet::new();
        let mut matched = false;
        for (i, host) in self.hosts.iter().enumerate() {
            if glob_match(pattern, &host.name, Syntax::Names) {
                chosen.insert(i);
                matched = true;
            }
        }
        for (group, members) in &self.groups {
            if glob_match(pattern, group, Syntax::Names) {
                matched = true;
                for m in members {
                    if let Some(i) = self.hosts.iter().position(|h| &h.name == m) {
                        chosen.insert(i);
                    }
                }
            }
        }
        if !matched {
            return Err(InventoryError::LimitMatchesNothing {
                pattern: pattern.to_string(),
                hosts: self
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                groups: self
                    .groups
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(chosen)
    }
}

impl Inventory {
    /// Fills in what the inventory leaves unset from the operator's OpenSSH config, as `ssh
    /// NAME` would: the host's `address` (else its name) is looked up; HostName, Port and User
    /// apply where the inventory names none; IdentityFile, IdentitiesOnly, ProxyCommand,
    /// ConnectTimeout, StrictHostKeyChecking and (unless `--known-hosts` was given,
    /// `cli_known_hosts`) UserKnownHostsFile are added; ProxyJump applies when the inventory
    /// has no `jump` (each hop resolved through the config too, with its own ProxyJump).
    pub fn apply_ssh_config(
        &mut self,
        config: &SshConfig,
        cli_known_hosts: bool,
    ) -> Result<(), InventoryError> {
        let ctx = Ctx {
            config,
            cli_known_hosts,
        };
        for host in &mut self.hosts {
            let has = |key: &str| host.vars.contains_key(key);
            let lookup = if has("address") {
                host.address.clone()
            } else {
                host.name.clone()
            };
            let explicit_user = has("user").then(|| host.user.clone());
            let config_error = |e: ssh_config::ConfigError| InventoryError::SshConfig {
                host: host.name.clone(),
                message: e.to_string(),
            };
            let r = config
                .resolve(&lookup, explicit_user.as_deref())
                .map_err(config_error)?;
            // The address (or name) is what `ssh` is given: the config's HostName maps it.
            host.address = r.hostname.clone().unwrap_or(lookup);
            if !has("port")
                && let Some(port) = r.port
            {
                host.port = port;
            }
            if !has("user")
                && let Some(user) = &r.user
            {
                host.user = user.clone();
                if !has("become") {
                    host.become_root = user != "root";
                }
            }
            host.ssh = ctx.settings_of(&r);
            host.jump = Vec::new();
            if host.jump_spec.is_some() {
                // The inventory's `jump` beats the config's ProxyJump and ProxyCommand.
                host.ssh.proxy_command = None;
            } else if let Some(hops) = &r.proxy_jump
                && !hops.is_empty()
            {
                host.jump = ctx
                    .hop_chain(hops, &host.user, host.identity.as_ref(), 0)
                    .map_err(|message| InventoryError::SshConfig {
                        host: host.name.clone(),
                        message,
                    })?;
            }
        }
        resolve_jumps(&mut self.hosts, &ctx, &self.path)
    }
}

/// The ssh config and whether `--known-hosts` was given (it beats UserKnownHostsFile).
struct Ctx<'a> {
    config: &'a SshConfig,
    cli_known_hosts: bool,
}

/// How many jump hosts deep a chain may go before it is taken for a loop.
const MAX_HOPS: usize = 16;

impl Ctx<'_> {
    fn settings_of(&self, r: &ssh_config::Resolved) -> FromConfig {
        FromConfig {
            identities: r.identity_files.clone(),
            identities_only: r.identities_only.unwrap_or(false),
            known_hosts: if self.cli_known_hosts {
                None
            } else {
                r.user_known_hosts.as_ref().and_then(|f| f.first().cloned())
            },
            accept_new: r.strict.map(|s| s == ssh_config::Strict::AcceptNew),
            proxy_command: r.proxy_command.clone().filter(|c| !c.is_empty()),
            connect_timeout: r.connect_timeout,
        }
    }

    /// The endpoints of a ProxyJump list (`a,b`: `a` first), as `ssh -J a,b` reaches them:
    /// each hop resolved through the config; the first hop's own ProxyJump (or ProxyCommand)
    /// honoured, the later hops' overridden by the list.
    fn hop_chain(
        &self,
        hops: &[String],
        fallback_user: &str,
        fallback_identity: Option<&PathBuf>,
        depth: usize,
    ) -> Result<Vec<Endpoint>, String> {
        if depth > MAX_HOPS {
            return Err(format!(
                "ProxyJump goes more than {MAX_HOPS} hosts deep (a loop?)
hint: check the ProxyJump lines of the ssh config"
            ));
        }
        let Some((last, before)) = hops.split_last() else {
            return Ok(Vec::new());
        };
        let (user, name, port) = ssh_config::parse_jump(last).ok_or_else(|| {
            format!(
                "ProxyJump hop `{last}` is not `[user@]host[:port]`
hint: fix the ssh config's ProxyJump"
            )
        })?;
        let r = self
            .config
            .resolve(&name, user.as_deref())
            .map_err(|e| e.to_string())?;
        let user = user
            .or_else(|| r.user.clone())
            .unwrap_or_else(|| fallback_user.to_string());
        let mut ep = Endpoint {
            name: name.clone(),
            address: r.hostname.clone().unwrap_or_else(|| name.clone()),
            port: port.or(r.port).unwrap_or(22),
            user: user.clone(),
            identity: fallback_identity.cloned(),
            ssh: self.settings_of(&r),
        };
        let mut chain = if !before.is_empty() {
            ep.ssh.proxy_command = None;
            self.hop_chain(before, &user, fallback_identity, depth + 1)?
        } else {
            match &r.proxy_jump {
                Some(own) if !own.is_empty() => {
                    ep.ssh.proxy_command = None;
                    self.hop_chain(own, &user, fallback_identity, depth + 1)?
                }
                _ => Vec::new(),
            }
        };
        chain.push(ep);
        Ok(chain)
    }
}

/// Turns each host's `jump` into its chain of endpoints: a `jump` naming another inventory
/// host goes through that host's own chain, then that host (with its address and login); a
/// `jump` naming no inventory host is resolved like a ProxyJump hop.
fn resolve_jumps(hosts: &mut [Host], ctx: &Ctx<'_>, path: &Path) -> Result<(), InventoryError> {
    let by_name: HashMap<String, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.clone(), i))
        .collect();
    let mut chains = Vec::with_capacity(hosts.len());
    for i in 0..hosts.len() {
        chains.push(chain_of(i, hosts, ctx, &by_name, &mut Vec::new(), path)?);
    }
    for (host, chain) in hosts.iter_mut().zip(chains) {
        host.jump = chain;
    }
    Ok(())
}

fn chain_of(
    i: usize,
    hosts: &[Host],
    ctx: &Ctx<'_>,
    by_name: &HashMap<String, usize>,
    seen: &mut Vec<String>,
    path: &Path,
) -> Result<Vec<Endpoint>, InventoryError> {
    let host = &hosts[i];
    if seen.contains(&host.name) {
        return Err(InventoryError::Structure {
            path: path.to_path_buf(),
            message: format!(
                "jump hosts form a loop: {} -> {}
hint: a host cannot be reached through itself",
                seen.join(" -> "),
                host.name
            ),
        });
    }
    let Some(spec) = &host.jump_spec else {
        return Ok(host.jump.clone());
    };
    seen.push(host.name.clone());
    let chain = if let Some(&j) = by_name.get(&spec.address) {
        let mut chain = chain_of(j, hosts, ctx, by_name, seen, path)?;
        let other = &hosts[j];
        let user = if spec.user.is_empty() {
            &other.user
        } else {
            &spec.user
        };
        let mut ep = other.target(user).endpoint;
        if spec.port != 22 {
            ep.port = spec.port;
        }
        chain.push(ep);
        chain
    } else {
        let mut hop = String::new();
        if !spec.user.is_empty() {
            hop.push_str(&spec.user);
            hop.push('@');
        }
        hop.push_str(&spec.address);
        if spec.port != 22 {
            hop.push_str(&format!(":{}", spec.port));
        }
        ctx.hop_chain(&[hop], &host.user, host.identity.as_ref(), 0)
            .map_err(|message| InventoryError::SshConfig {
                host: host.name.clone(),
                message,
            })?
    };
    seen.pop();
    Ok(chain)
}

impl Host {
    /// The SSH target for logging in as `user` (the admin login or the bootstrap login).
    pub fn target(&self, user: &str) -> Target {
        Target {
            endpoint: Endpoint {
                name: self.name.clone(),
                address: self.address.clone(),
                port: self.port,
                user: user.to_string(),
                identity: self.identity.clone(),
                ssh: self.ssh.clone(),
            },
            jump: self.jump.clone(),
        }
    }
}

/// Collects hosts, groups and variable layers while walking the group tree.
#[derive(Default)]
struct Walk {
    /// Host names in first-seen order, with their own variables.
    hosts: IndexMap<String, Vars>,
    /// Group name -> (depth, own vars, member hosts).
    groups: IndexMap<String, (usize, Vars, Vec<String>)>,
    /// `group_vars/` and `host_vars/` beside the inventory.
    extra: crate::ini_inventory::VarsDirs,
    /// `-e`: above everything.
    extra_vars: Vars,
    /// Group name -> parent groups.
    parents: HashMap<String, Vec<String>>,
}

impl Walk {
    fn group(
        &mut self,
        name: &str,
        raw: Group,
        ancestry: &[String],
        depth: usize,
        path: &Path,
    ) -> Result<(), InventoryError> {
        if ancestry.iter().any(|a| a == name) {
            return Err(InventoryError::Structure {
                path: path.to_path_buf(),
                message: format!(
                    "group `{name}` is its own ancestor ({} -> {name})",
                    ancestry.join(" -> ")
                ),
            });
        }
        if let Some(parent) = ancestry.last() {
            self.parents
                .entry(name.to_string())
                .or_default()
                .push(parent.clone());
        }
        let entry = self
            .groups
            .entry(name.to_string())
            .or_insert_with(|| (depth, IndexMap::new(), Vec::new()));
        // A group reached along a longer path is deeper: its vars beat its shallower peers.
        entry.0 = entry.0.max(depth);
        entry.1.extend(raw.vars);
        for (host, vars) in raw.hosts {
            if !entry.2.contains(&host) {
                entry.2.push(host.clone());
            }
            let own = self.hosts.entry(host).or_default();
            own.extend(vars);
        }
        let mut below = ancestry.to_vec();
        below.push(name.to_string());
        for (child, group) in raw.children {
            self.group(&child, group, &below, depth + 1, path)?;
        }
        Ok(())
    }

    /// Every group a host is in, directly or through children.
    fn groups_of(&self, host: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut todo: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, (_, _, members))| members.iter().any(|m| m == host))
            .map(|(name, _)| name.clone())
            .collect();
        while let Some(g) = todo.pop() {
            if found.contains(&g) {
                continue;
            }
            if let Some(parents) = self.parents.get(&g) {
                todo.extend(parents.iter().cloned());
            }
            found.push(g);
        }
        if !found.iter().any(|g| g == "all") {
            found.push("all".to_string());
        }
        // Lower precedence first: by depth, then by name (as Ansible does for peers).
        found.sort_by(|a, b| {
            let da = self.groups.get(a).map(|g| g.0).unwrap_or(0);
            let db = self.groups.get(b).map(|g| g.0).unwrap_or(0);
            da.cmp(&db).then_with(|| a.cmp(b))
        });
        found
    }

    fn finish(self, path: &Path) -> Result<Inventory, InventoryError> {
        let mut hosts = Vec::new();
        let mut warnings = Vec::new();
        for (name, own) in &self.hosts {
            let groups = self.groups_of(name);
            let mut vars: IndexMap<String, Var> = IndexMap::new();
            // Ansible's order: the inventory's group vars (by depth), group_vars/all,
            // group_vars/GROUP (by depth), the inventory's host vars, host_vars/HOST.
            let inline = groups
                .iter()
                .filter_map(|g| self.groups.get(g).map(|entry| &entry.1));
            let files = groups.iter().filter_map(|g| self.extra.groups.get(g));
            let layers = inline
                .chain(files)
                .chain(std::iter::once(own))
                .chain(self.extra.hosts.get(name))
                .chain(std::iter::once(&self.extra_vars));
            for layer in layers {
                for (key, value) in layer {
                    // An Ansible alias and rampart's own name are one setting.
                    let key = ALIASES
                        .iter()
                        .find(|(_, alias)| alias == key)
                        .map(|(own, _)| own.to_string())
                        .unwrap_or_else(|| key.clone());
                    vars.insert(key, value.clone());
                }
            }
            ansible_keys(name, &vars, path, &mut warnings)?;
            hosts.push(settings(name, groups, vars, path)?);
        }
        let no_config = SshConfig::default();
        resolve_jumps(
            &mut hosts,
            &Ctx {
                config: &no_config,
                cli_known_hosts: true,
            },
            path,
        )?;
        // A group holds its own hosts and its children's, in inventory order (as Ansible's
        // `groups['all']` holds every host).
        let mut groups: IndexMap<String, Vec<String>> = self
            .groups
            .keys()
            .map(|g| (g.clone(), Vec::new()))
            .collect();
        for host in &hosts {
            for g in &host.groups {
                if let Some(members) = groups.get_mut(g) {
                    members.push(host.name.clone());
                }
            }
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            warnings,
            hosts,
            groups,
        })
    }
}

/// `ansible_*` keys rampart does not read: ones that would change how Ansible connects or
/// becomes root are errors (never silently ignored), others a warning.
fn ansible_keys(
    host: &str,
    vars: &IndexMap<String, Var>,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), InventoryError> {
    const HARMLESS: &[&str] = &["ansible_python_interpreter"];
    let mut unknown = Vec::new();
    for (key, var) in vars {
        if !key.starts_with("ansible_") || HARMLESS.contains(&key.as_str()) {
            continue;
        }
        let text = match &var.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let refuse = |message: &str| InventoryError::Value {
            path: var.file.clone().unwrap_or_else(|| path.to_path_buf()),
            line: var.line,
            column: var.column,
            host: host.to_string(),
            message: format!("`{key}`: {message}"),
        };
        match key.as_str() {
            "ansible_ssh_common_args" | "ansible_ssh_extra_args" | "ansible_ssh_args" => {
                return Err(refuse(
                    "rampart does not pass extra arguments to SSH (it is not OpenSSH)
hint: for a bastion set `jump: [user@]host[:port]` (or ProxyJump in ~/.ssh/config, which rampart reads); put other options in ~/.ssh/config",
                ));
            }
            "ansible_become_password" | "ansible_become_pass" | "ansible_sudo_pass" => {
                return Err(refuse(
                    "a sudo password is not supported: rampart runs `sudo -n`
hint: give the login passwordless sudo (NOPASSWD) or log in as root (`ansible_user: root`)",
                ));
            }
            "ansible_password" | "ansible_ssh_pass" | "ansible_ssh_password" => {
                return Err(refuse(
                    "password logins are not supported
hint: log in with a key: `ansible_ssh_private_key_file`, ssh-agent or IdentityFile in ~/.ssh/config",
                ));
            }
            "ansible_connection" if !matches!(text.as_str(), "ssh" | "smart" | "paramiko") => {
                return Err(refuse(&format!(
                    "rampart connects over SSH only, not `{text}`
hint: remove the host or set `ansible_connection: ssh`"
                )));
            }
            "ansible_become_user" if text != "root" => {
                return Err(refuse(&format!(
                    "rampart becomes root, not `{text}`
hint: remove it (hardening needs root)"
                )));
            }
            "ansible_become_method" if text != "sudo" => {
                return Err(refuse(&format!(
                    "rampart becomes root with sudo, not `{text}`
hint: use sudo, or log in as root"
                )));
            }
            "ansible_connection" | "ansible_become_user" | "ansible_become_method" => {}
            _ => unknown.push(key.clone()),
        }
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "{}: host `{host}`: rampart does not use {}",
            path.display(),
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

fn settings(
    name: &str,
    groups: Vec<String>,
    vars: IndexMap<String, Var>,
    path: &Path,
) -> Result<Host, InventoryError> {
    let bad = |var: &Var, message: String| InventoryError::Value {
        path: var.file.clone().unwrap_or_else(|| path.to_path_buf()),
        line: var.line,
        column: var.column,
        host: name.to_string(),
        message,
    };
    let text = |key: &str| -> Result<Option<String>, InventoryError> {
        match vars.get(key) {
            None
            | Some(Var {
                value: Value::Null, ..
            }) => Ok(None),
            Some(Var {
                value: Value::String(s),
                ..
            }) => Ok(Some(s.clone())),
            Some(Var {
                value: Value::Number(n),
                ..
            }) => Ok(Some(n.to_string())),
            Some(var) => Err(bad(
                var,
                format!("`{key}` must be a string, found {}", var.value),
            )),
        }
    };
    let address = text("address")?.unwrap_or_else(|| name.to_string());
    let port = match vars.get("port") {
        None => 22,
        Some(var) => match &var.value {
            Value::Number(n) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0),
            Value::String(s) => s.parse::<u16>().ok().filter(|p| *p > 0),
            _ => None,
        }
        .ok_or_else(|| {
            bad(
                var,
                format!(
                    "`port` must be a number from 1 to 65535, found {}",
                    var.value
                ),
            )
        })?,
    };
    let user = text("user")?.unwrap_or_else(|| "root".to_string());
    // Hardening needs root: a login other than root becomes root with `sudo -n` unless the
    // inventory says `become: false`.
    let become_root = match vars.get("become") {
        None => user != "root",
        Some(var) => match &var.value {
            Value::Bool(b) => *b,
            Value::String(s) if matches!(s.as_str(), "yes" | "true" | "True") => true,
            Value::String(s) if matches!(s.as_str(), "no" | "false" | "False") => false,
            _ => {
                return Err(bad(
                    var,
                    format!("`become` must be true or false, found {}", var.value),
                ));
            }
        },
    };
    let identity = text("identity")?.map(|p| expand_home(&p));
    let jump = match vars.get("jump") {
        None => None,
        Some(var) => {
            let spec = text("jump")?.unwrap_or_default();
            Some(parse_jump(&spec).ok_or_else(|| {
                bad(
                    var,
                    format!("`jump` must be `[user@]host[:port]`, found {:?}", spec),
                )
            })?)
        }
    };
    let backup_keep = match vars.get("backup_keep") {
        None
        | Some(Var {
            value: Value::Null, ..
        }) => None,
        Some(var) => Some(
            match &var.value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| {
                bad(
                    var,
                    format!(
                        "`backup_keep` must be a number of runs from 1 to 100000, found {}\n\
                         hint: the runs whose backups each host keeps; 10 when it is not set",
                        var.value
                    ),
                )
            })?,
        ),
    };
    Ok(Host {
        name: name.to_string(),
        groups,
        address,
        port,
        user,
        bootstrap_user: text("bootstrap_user")?,
        identity,
        become_root,
        jump_spec: jump,
        jump: Vec::new(),
        ssh: FromConfig::default(),
        backup_keep,
        vars,
    })
}

/// `[user@]host[:port]`; the user is left empty to be filled in from the host.
fn parse_jump(spec: &str) -> Option<Endpoint> {
    let spec = spec.trim();
    let (user, rest) = match spec.split_once('@') {
        Some((u, r)) => (u.to_string(), r),
        None => (String::new(), spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse::<u16>().ok()?),
        _ => (rest, 22),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(Endpoint {
        name: host.to_string(),
        address: host.to_string(),
        port,
        user,
        ..Endpoint::default()
    })
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Inventory {
        Inventory::parse(Path::new("inv.yaml"), text).unwrap()
    }

    const FLEET: &str = "\
all:
  vars:
    user: admin
    color: all
  hosts:
    solo: {ansible_host: 192.0.2.9}
  children:
    pis:
      vars: {color: pis, ansible_port: 2222}
      hosts:
        pi-1: {ansible_host: 192.0.2.10, color: host}
        pi-2:
      children:
        lab:
          vars: {color: lab}
          hosts:
            pi-2:
    vps:
      hosts:
        vps-1: {ansible_user: root, jump: pi-1}
";

    #[test]
    fn precedence_is_host_then_child_then_parent_then_all() {
        let inv = parse(FLEET);
        let get = |h: &str| inv.hosts.iter().find(|x| x.name == h).unwrap().clone();
        assert_eq!(get("pi-1").vars["color"].value, "host");
        assert_eq!(get("pi-2").vars["color"].value, "lab");
        assert_eq!(get("solo").vars["color"].value, "all");
        assert_eq!(get("pi-2").port, 2222);
        assert_eq!(get("solo").port, 22);
        assert_eq!(get("pi-2").groups, vec!["all", "pis", "lab"]);
    }

    #[test]
    fn ansible_names_are_aliases() {
        let inv = parse(FLEET);
        let vps = inv.hosts.iter().find(|h| h.name == "vps-1").unwrap();
        assert_eq!(vps.user, "root");
        assert_eq!(vps.address, "vps-1");
        let jump = vps.jump.last().unwrap();
        assert_eq!(
            (jump.address.as_str(), jump.port, jump.user.as_str()),
            ("192.0.2.10", 2222, "admin")
        );
    }

    #[test]
    fn limit_by_host_group_and_glob() {
        let inv = parse(FLEET);
        let names = |p: &[&str]| -> Vec<String> {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            inv.limit(&p)
                .unwrap()
                .iter()
                .map(|h| h.name.clone())
                .collect()
        };
        assert_eq!(names(&["pis"]), ["pi-1", "pi-2"]);
        assert_eq!(inv.groups["all"], ["solo", "pi-1", "pi-2", "vps-1"]);
        assert_eq!(names(&["lab"]), ["pi-2"]);
        assert_eq!(names(&["v*,solo"]), ["solo", "vps-1"]);
        assert_eq!(names(&[]).len(), 4);
        let err = inv.limit(&["nope".to_string()]).unwrap_err().to_string();
        assert!(
            err.contains("matches no host or group") && err.contains("pi-1"),
            "{err}"
        );
        // An empty --limit (an unset shell variable) is not "every host".
        for empty in [&[""][..], &[" , "][..]] {
            let p: Vec<String> = empty.iter().map(|s| s.to_string()).collect();
            assert!(matches!(inv.limit(&p), Err(InventoryError::LimitEmpty)));
        }
        // Ansible's operators: `:` and `,` separate, `&` intersects, `!` excludes, in that
        // order whatever the order written.
        assert_eq!(names(&["!pis:all"]), ["solo", "vps-1"]);
        assert_eq!(names(&["all:&pis:!pi-1"]), ["pi-2"]);
        assert_eq!(names(&["&lab"]), ["pi-2"]);
        let retry = std::env::temp_dir().join(format!("rampart-retry-{}", std::process::id()));
        std::fs::write(&retry, "vps-1\n\n# a comment\nsolo\n").unwrap();
        assert_eq!(
            names(&[&format!("@{}", retry.display())]),
            ["solo", "vps-1"]
        );
        std::fs::remove_file(&retry).unwrap();
        assert!(inv.limit(&["pis:!nope".to_string()]).is_err());
        // A pattern that makes a backtracking matcher explode is a regex here.
        assert!(inv.limit(&["*a*a*a*a*a*a*a*a*c".to_string()]).is_err());
    }

    #[test]
    fn several_inventories_merge_and_later_values_win() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.ini");
        std::fs::write(&a, "web:\n  hosts:\n    w1: {port: 2201}\n").unwrap();
        std::fs::write(&b, "[web]\nw1 port=2202\nw2\n[db]\nd1 port=banana\n").unwrap();
        let err = Inventory::load_all(&[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}:5:4:", b.display())), "{err}");
        std::fs::write(&b, "[web]\nw1 port=2202\nw2\n").unwrap();
        let inv = Inventory::load_all(&[a, b]).unwrap();
        assert_eq!(inv.groups["web"], ["w1", "w2"]);
        assert_eq!(inv.hosts[0].port, 2202);
    }

    #[test]
    fn extra_vars_beat_everything() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("hosts");
        std::fs::write(&a, "w1 port=2201 note=inline\n").unwrap();
        std::fs::create_dir_all(dir.path().join("host_vars")).unwrap();
        std::fs::write(dir.path().join("host_vars/w1.yml"), "note: file\n").unwrap();
        let vars_file = dir.path().join("extra.yml");
        std::fs::write(&vars_file, "ansible_port: 2203\n").unwrap();
        let extra = crate::ini_inventory::extra_vars(&[
            "note='from -e' other=x".to_string(),
            r#"{"list": [1, 2]}"#.to_string(),
            format!("@{}", vars_file.display()),
        ])
        .unwrap();
        let inv = Inventory::load_with(&[a], extra, None).unwrap();
        let w1 = &inv.hosts[0];
        assert_eq!(w1.vars["note"].value, Value::from("from -e"));
        assert_eq!(w1.vars["list"].value, serde_json::json!([1, 2]));
        assert_eq!(w1.port, 2203);
        assert!(crate::ini_inventory::extra_vars(&["novalue".to_string()]).is_err());
    }

    #[test]
    fn group_vars_beside_the_playbook_beat_the_inventorys() {
        let dir = tempfile::tempdir().unwrap();
        let inv_dir = dir.path().join("inv");
        let book_dir = dir.path().join("book");
        std::fs::create_dir_all(inv_dir.join("group_vars")).unwrap();
        std::fs::create_dir_all(book_dir.join("group_vars")).unwrap();
        std::fs::write(inv_dir.join("hosts"), "[web]\nw1\n").unwrap();
        std::fs::write(inv_dir.join("group_vars/web.yml"), "a: inv\nb: inv\n").unwrap();
        std::fs::write(book_dir.join("group_vars/all.yml"), "a: book-all\n").unwrap();
        std::fs::write(book_dir.join("group_vars/web.yml"), "b: book\n").unwrap();
        let inv =
            Inventory::load_with(&[inv_dir.join("hosts")], Vars::new(), Some(&book_dir)).unwrap();
        let w1 = &inv.hosts[0];
        // group_vars/web (either folder) beats group_vars/all; the playbook's beats the inventory's.
        assert_eq!(w1.vars["a"].value, Value::from("inv"));
        assert_eq!(w1.vars["b"].value, Value::from("book"));
    }

    #[test]
    fn ssh_config_fills_unset_settings_and_builds_jump_chains() {
        let config = SshConfig::parse_str(
            Path::new("config"),
            "Host pi\n  HostName 10.0.0.5\n  User pi\n  Port 2022\n  ProxyJump gw\n\
             Host gw\n  HostName 192.0.2.1\n  ProxyJump edge\n\
             Host edge\n  User jumper\n\
             Host deep\n  ProxyJump a,b\n\
             Host a\n  ProxyJump a-own-jump\n\
             Host b\n  ProxyJump ignored-for-the-last-hop\n\
             Host loop1\n  ProxyJump loop2\nHost loop2\n  ProxyJump loop1\n",
        )
        .unwrap();
        let mut inv = parse(
            "all:\n  hosts:\n    pi:\n    deep:\n    vps: {ansible_host: 198.51.100.7, ansible_user: admin, jump: pi}\n    pinned: {ansible_host: pi, ansible_port: 22}\n",
        );
        inv.apply_ssh_config(&config, false).unwrap();
        let host = |n: &str| inv.hosts.iter().find(|h| h.name == n).unwrap().clone();
        let pi = host("pi");
        assert_eq!(
            (pi.address.as_str(), pi.port, pi.user.as_str()),
            ("10.0.0.5", 2022, "pi")
        );
        assert!(pi.become_root, "a login other than root becomes root");
        // pi's ProxyJump gw, whose own ProxyJump edge is honoured.
        let hops: Vec<(String, String)> = pi
            .jump
            .iter()
            .map(|e| (e.address.clone(), e.user.clone()))
            .collect();
        assert_eq!(
            hops,
            [
                ("edge".into(), "jumper".into()),
                ("192.0.2.1".into(), "pi".into())
            ]
        );
        // `a,b` as `ssh -J a,b` reaches it (`ssh -J a -W … b`): the first hop's own ProxyJump
        // applies, the last hop's is overridden by the list.
        let deep: Vec<String> = host("deep")
            .jump
            .iter()
            .map(|e| e.address.clone())
            .collect();
        assert_eq!(deep, ["a-own-jump", "a", "b"]);
        // The inventory's `jump` names an inventory host: its chain, then it.
        let vps: Vec<String> = host("vps").jump.iter().map(|e| e.address.clone()).collect();
        assert_eq!(vps, ["edge", "192.0.2.1", "10.0.0.5"]);
        assert_eq!(
            host("vps").user,
            "admin",
            "the inventory's user beats the config's"
        );
        // The inventory's own values win over the config's.
        assert_eq!(host("pinned").port, 22);
        assert_eq!(host("pinned").address, "10.0.0.5");
        // A loop of ProxyJumps is an error, not a hang.
        let mut looped = parse("all:\n  hosts:\n    loop1:\n");
        let err = looped
            .apply_ssh_config(&config, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("loop1") && err.contains("deep"), "{err}");
        // An inventory `jump` loop too.
        let err = Inventory::parse(
            Path::new("inv.yaml"),
            "all:\n  hosts:\n    hx: {jump: hy}\n    hy: {jump: hx}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("loop"), "{err}");
    }

    #[test]
    fn backup_keep_is_a_count_of_runs() {
        let inv = parse(
            "all:\n  vars: {backup_keep: 3}\n  hosts:\n    a: {}\n    b: {backup_keep: '25'}\n    c: {backup_keep: null}\n",
        );
        let keep: Vec<Option<u32>> = inv.hosts.iter().map(|h| h.backup_keep).collect();
        assert_eq!(keep, [Some(3), Some(25), None]);
        for bad in ["0", "-1", "ten", "[3]", "4294967296"] {
            let err = Inventory::parse(
                Path::new("inv.yaml"),
                &format!("all:\n  hosts:\n    a: {{backup_keep: {bad}}}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("inv.yaml:3:")
                    && err.contains("`backup_keep` must be")
                    && err.contains("hint:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_bad_port_names_file_line_and_column() {
        let err = Inventory::parse(
            Path::new("inv.yaml"),
            "all:\n  hosts:\n    a:\n      ansible_port: nope\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "inv.yaml:4:21: host `a`: `port` must be a number from 1 to 65535, found \"nope\""
        );
    }

    #[test]
    fn an_unknown_group_key_is_an_error_with_a_location() {
        let err = Inventory::parse(Path::new("inv.yaml"), "all:\n  host:\n    a:\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("inv.yaml: "), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("hosts"), "{err}");
    }

    #[test]
    fn group_cycles_are_refused() {
        let err = Inventory::parse(
            Path::new("inv.yaml"),
            "all:\n  children:\n    a:\n      children:\n        a:\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("own ancestor"), "{err}");
    }
}
