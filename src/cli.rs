//! cli: arguments, and turning each command's result into output and an exit code.
//!
//! The only module that prints or reads the environment for settings. Library modules return
//! typed errors; here they become messages with a `hint:` line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::text::Style;
use serde::Serialize;

use crate::exit::Outcome;
use crate::facts::{self, Facts};
use crate::fleet;
use crate::inventory::{Host, Inventory};
use crate::transport::ssh::ConnectOptions;
use crate::transport::ssh_config::SshConfig;
use crate::transport::{Session, StatsSnapshot};

/// Declarative hardening provisioner and fleet controller over SSH.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v info, -vv debug); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe every host and show what the playbook would change, as diffs. Read-only.
    /// Exit 0 when every host is in line, 2 when something differs, 1 on any error.
    #[command(alias = "check")]
    Plan(PlaybookArgs),
    /// Converge every host to the playbook, then verify. Exit 0 when every host is in line
    /// afterwards, 1 when any host failed or could not be reached.
    Apply(PlaybookArgs),
    /// Nightly mode: probe every host read-only (one round trip each), report each step that
    /// moved away from the playbook and the unmanaged drift the scan finds (public listeners,
    /// uid-0 accounts, sudo members, unknown SSH keys, plaintext secrets, loose secrets files,
    /// unpinned skills, the agent bound off loopback or without auth). Exit 0 in line, 2 drift,
    /// 1 when a host failed or could not be reached.
    Drift(PlaybookArgs),
    /// The guide's security checklist and the baseline's key controls per host, pass, fail or
    /// unknown with evidence, including a TCP connect from here to each host's agent port
    /// (it must fail). Read-only. Exit 0 nothing fails, 2 a check fails, 1 errors.
    Audit(PlaybookArgs),
    /// Connect to every host and show what rampart sees: OS, architecture, init system,
    /// package manager and the tools the hardening needs.
    Facts(FactsArgs),
    /// Print (or install) a systemd timer and service, or a cron line, that runs the nightly
    /// `rampart drift` with Prometheus and JSON reports.
    Schedule(crate::schedule::ScheduleArgs),
    /// Forward a local port (127.0.0.1 only) to the agent's loopback port on HOST over
    /// rampart's own SSH connection (host key checked, the inventory's logins and jump host),
    /// print the local URL, and stay until Ctrl-C or SIGTERM (exit 0). The firewall never
    /// opens the agent's port: this is the way in.
    Tunnel(TunnelArgs),
    /// Read-only evidence from each HOST after a suspected compromise, streamed into one tar
    /// archive per host in DIR (mode 0600) with a manifest: sha256 of every member, the
    /// collection time, the host key fingerprint rampart verified, rampart's version. Nothing
    /// on the host changes. Exit 0 every archive complete, 1 otherwise.
    Collect(CollectArgs),
    /// Stop and disable the agent on each HOST and block all its traffic, in and out, except
    /// SSH from this controller's address, under the dead-man switch. Idempotent. Exit 0 every
    /// host quarantined, 1 otherwise.
    Quarantine(IncidentArgs),
    /// Undo `quarantine`: remove its firewall table and start the agent again. Exit 0 every host
    /// released, 1 otherwise.
    Release(IncidentArgs),
    /// Print a shell completion script: `rampart completions bash >
    /// /etc/bash_completion.d/rampart` (also zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `rampart man > /usr/local/share/man/man1/rampart.1`.
    Man,
    /// Work on saved JSON reports: `report merge` joins the reports of `--shard` runs.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Join the JSON reports of shards 1..N of one run (`--shard I/N`) into the fleet's report,
    /// as the unsharded run would have made it; exit as that run would (0, 2 or 1). Refuses a
    /// missing or repeated shard, or shards of other playbooks or inventories.
    Merge {
        /// The shards' JSON reports.
        #[arg(required = true, value_name = "IN.json")]
        reports: Vec<PathBuf>,
        /// Write the fleet report to FILE (repeatable), format by extension (.txt .json
        /// .xml=JUnit .prom=Prometheus .html) or `FORMAT:FILE`. Without one, text on stdout.
        #[arg(short, long, value_name = "[FORMAT:]FILE", value_parser = parse_output)]
        output: Vec<Output>,
    },
}

/// The hosts of `quarantine` and `release`.
#[derive(Debug, Args)]
struct IncidentArgs {
    #[command(flatten)]
    hosts: HostArgs,
    /// The hosts or groups (names or globs); at least one: never the whole fleet by default.
    #[arg(required = true, value_name = "HOST")]
    targets: Vec<String>,
    /// Seconds a host waits for the confirmation over a new connection before it lifts the
    /// quarantine's firewall by itself (5 to 86400).
    #[arg(long, default_value_t = crate::resource::DEADMAN_SECONDS, value_name = "SECS",
          value_parser = in_range::<u32>(5, 86_400))]
    deadman_seconds: u32,
    /// The format of the report on stdout.
    #[arg(long, value_enum, default_value_t = FactsFormat::Text)]
    format: FactsFormat,
}

/// `rampart collect`.
#[derive(Debug, Args)]
struct CollectArgs {
    #[command(flatten)]
    hosts: HostArgs,
    /// The hosts or groups (names or globs); at least one.
    #[arg(required = true, value_name = "HOST")]
    targets: Vec<String>,
    /// The folder the archives go to (made 0700 when missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// The most MiB one host may send (1 to 65536); past it the archive keeps what came and
    /// is marked incomplete. The controller holds up to twice this per host in memory while
    /// it arrives (lower --forks for many hosts with a high cap).
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = in_range::<u64>(1, 65_536))]
    max_size: u64,
    /// The most KiB of one file or command output (1 to 1048576); longer ones are cut and
    /// marked.
    #[arg(long, default_value_t = 8192, value_name = "KIB", value_parser = in_range::<u64>(1, 1_048_576))]
    member_size: u64,
    /// Files changed in this many days under /etc /usr/local /home /root /tmp /var/tmp
    /// /dev/shm are listed (1 to 3650).
    #[arg(long, default_value_t = 14, value_name = "DAYS", value_parser = in_range::<u32>(1, 3650))]
    changed_days: u32,
    /// The format of the report on stdout.
    #[arg(long, value_enum, default_value_t = FactsFormat::Text)]
    format: FactsFormat,
}

/// Which hosts, and how to reach them.
#[derive(Debug, Args)]
struct HostArgs {
    /// The inventory: Ansible's YAML or INI layout, with group_vars/ and host_vars/ beside
    /// it (repeatable: several are merged, as Ansible does) [default: `inventory` in
    /// ~/.config/rampart/rampart.toml].
    #[arg(short, long, value_name = "FILE", env = "RAMPART_INVENTORY")]
    inventory: Vec<PathBuf>,
    /// Only these hosts or groups, with Ansible's syntax: names or globs separated by `,` or
    /// `:`, `&PATTERN` intersects, `!PATTERN` excludes, `@FILE` reads names from a file
    /// (repeatable).
    #[arg(short, long, value_name = "PATTERN")]
    limit: Vec<String>,
    /// Variables above every other, as Ansible's: `key=value ...`, a YAML/JSON mapping, or
    /// `@FILE` (repeatable).
    #[arg(short = 'e', long, value_name = "VARS")]
    extra_vars: Vec<String>,
    /// How many hosts run at once (1 to 4096) [default: rampart.toml's `forks`, else 64].
    #[arg(long, value_parser = in_range::<usize>(1, MAX_FORKS))]
    forks: Option<usize>,
    /// The OpenSSH client config to read, as `ssh -F` [default: ~/.ssh/config, then
    /// /etc/ssh/ssh_config]. Inventory hosts are looked up in it as `ssh NAME` would.
    #[arg(short = 'F', long, value_name = "FILE", env = "RAMPART_SSH_CONFIG")]
    ssh_config: Option<PathBuf>,
    /// The known_hosts file host keys are checked against [default: the ssh config's
    /// UserKnownHostsFile, else ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE", env = "RAMPART_KNOWN_HOSTS")]
    known_hosts: Option<PathBuf>,
    /// Record the keys of hosts not yet in known_hosts (hashed) instead of refusing them.
    /// A changed key is refused all the same.
    #[arg(long)]
    accept_new: bool,
    /// Seconds to connect, exchange keys and log in (1 to 3600) [default: rampart.toml's
    /// `connect_timeout`, else the ssh config's ConnectTimeout, else 10].
    #[arg(long, value_name = "SECS", value_parser = in_range::<u64>(1, 3600))]
    connect_timeout: Option<u64>,
    /// Seconds a remote script may run (1 to 604800, a week). Default 300, 600 for `collect`,
    /// and 1800 for `apply`, whose script may install packages and the agent (minutes on a Pi).
    /// Each step of an apply also has its own limit (a step's `timeout:`, default 900 s), and
    /// the apply script may run this long plus the limits of the steps it applies.
    #[arg(long, value_name = "SECS", value_parser = in_range::<u64>(1, 604_800))]
    timeout: Option<u64>,
}

/// `--connect-timeout` when nothing says.
const DEFAULT_CONNECT_TIMEOUT: u64 = 10;

/// `--forks` when neither the command line nor rampart.toml says.
const DEFAULT_FORKS: usize = 64;

/// Defaults users would otherwise repeat: `rampart.toml` beside the (first) inventory, and
/// `~/.config/rampart/rampart.toml` ($XDG_CONFIG_HOME). Paths in it are relative to the file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    inventory: Option<Inventories>,
    known_hosts: Option<PathBuf>,
    ssh_config: Option<PathBuf>,
    forks: Option<usize>,
    connect_timeout: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Inventories {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl ConfigFile {
    fn read(path: &std::path::Path) -> anyhow::Result<Option<ConfigFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let mut config: ConfigFile = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}\nhint: rampart.toml knows `inventory`, `known_hosts`, `ssh_config`, `forks` and `connect_timeout`",
                path.display()
            )
        })?;
        if let Some(forks) = config.forks
            && !(1..=MAX_FORKS).contains(&(forks as u64))
        {
            anyhow::bail!(
                "{}: `forks = {forks}` is not from 1 to {MAX_FORKS}",
                path.display()
            );
        }
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let fix = |p: PathBuf| -> PathBuf {
            let text = p.to_string_lossy();
            if let Some(rest) = text.strip_prefix("~/")
                && let Some(home) = std::env::var_os("HOME")
            {
                PathBuf::from(home).join(rest)
            } else if p.is_relative() {
                dir.join(p)
            } else {
                p
            }
        };
        config.inventory = config.inventory.map(|i| match i {
            Inventories::One(p) => Inventories::Many(vec![fix(p)]),
            Inventories::Many(v) => Inventories::Many(v.into_iter().map(fix).collect()),
        });
        config.known_hosts = config.known_hosts.map(fix);
        config.ssh_config = config.ssh_config.map(fix);
        Ok(Some(config))
    }
}

impl HostArgs {
    /// Fills what the command line (and the environment) left unset from rampart.toml files:
    /// the one beside the inventory beats the user's.
    fn apply_config_files(&mut self) -> anyhow::Result<()> {
        let user_dir = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        let user = match user_dir {
            Some(d) => ConfigFile::read(&d.join("rampart/rampart.toml"))?,
            None => None,
        };
        if self.inventory.is_empty()
            && let Some(Inventories::Many(list)) = user.as_ref().and_then(|u| u.inventory.as_ref())
        {
            self.inventory = list.clone();
        }
        if self.inventory.is_empty() {
            anyhow::bail!(
                "no inventory given\nhint: pass -i FILE, set RAMPART_INVENTORY, or write `inventory = \"FILE\"` in ~/.config/rampart/rampart.toml"
            );
        }
        let beside = match self.inventory[0].parent() {
            Some(d) => ConfigFile::read(&d.join("rampart.toml"))?,
            None => None,
        };
        for config in [beside, user].into_iter().flatten() {
            if self.known_hosts.is_none() {
                self.known_hosts = config.known_hosts;
            }
            if self.ssh_config.is_none() {
                self.ssh_config = config.ssh_config;
            }
            if self.forks.is_none() {
                self.forks = config.forks;
            }
            if self.connect_timeout.is_none() {
                self.connect_timeout = config.connect_timeout;
            }
        }
        Ok(())
    }
}

/// `--timeout`'s default for scripts that only read (facts, plan, drift, audit; an audit waits
/// for a gateway that is starting and runs OpenClaw's own audit).
const READ_TIMEOUT: u64 = 300;
/// `--timeout`'s default for `apply`: its one script holds every change, installs included
/// (the real OpenClaw's took 1-4 minutes on the testbed; a Pi is slower).
const APPLY_TIMEOUT: u64 = 1800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FactsFormat {
    Text,
    Json,
}

/// A report format of `plan`, `apply`, `drift` and `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    /// JUnit XML: one testsuite per host, one testcase per step, finding and check.
    Junit,
    /// A Prometheus textfile for node_exporter's textfile collector.
    Prometheus,
    /// One self-contained HTML page: hosts x steps/checks, click a cell for its detail.
    Html,
}

impl Format {
    /// The format a file's extension names.
    fn of_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "txt" | "text" | "log" => Some(Format::Text),
            "json" => Some(Format::Json),
            "xml" => Some(Format::Junit),
            "prom" => Some(Format::Prometheus),
            "html" | "htm" => Some(Format::Html),
            _ => None,
        }
    }
}

/// `--output [FORMAT:]FILE`.
#[derive(Debug, Clone)]
struct Output {
    format: Format,
    path: PathBuf,
}

fn parse_output(arg: &str) -> Result<Output, String> {
    if let Some((name, path)) = arg.split_once(':')
        && let Ok(format) = Format::from_str(name, true)
    {
        if path.is_empty() {
            return Err(format!("`{arg}` names no file after `{name}:`"));
        }
        return Ok(Output {
            format,
            path: PathBuf::from(path),
        });
    }
    let path = PathBuf::from(arg);
    match Format::of_path(&path) {
        Some(format) => Ok(Output { format, path }),
        None => Err(format!(
            "cannot tell the format of `{arg}` from its extension (.txt .json .xml .prom .html); \
             write FORMAT:FILE, e.g. `prometheus:{arg}`"
        )),
    }
}

#[derive(Debug, Args)]
struct PlaybookArgs {
    #[command(flatten)]
    hosts: HostArgs,
    /// The playbook.
    playbook: PathBuf,
    /// Only steps with one of these tags (comma-separated; repeatable).
    #[arg(short, long, value_delimiter = ',')]
    tags: Vec<String>,
    /// No step with one of these tags.
    #[arg(long, value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// The format of the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also write the report to FILE (repeatable), in the format its extension names
    /// (.txt .json .xml=JUnit .prom=Prometheus .html) or as `FORMAT:FILE`. Written
    /// atomically: a reader never sees half a file.
    #[arg(short, long, value_name = "[FORMAT:]FILE", value_parser = parse_output)]
    output: Vec<Output>,
    /// Show round trips and bytes per host (always in JSON).
    #[arg(long)]
    stats: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Seconds a host waits for the confirmation of a risky change (firewall, sshd) over a
    /// new connection before it restores the previous state by itself.
    /// 5 to 86400: fewer than 5 s would fire before a new connection can confirm.
    #[arg(long, default_value_t = crate::resource::DEADMAN_SECONDS, value_name = "SECS",
          value_parser = in_range::<u32>(5, 86_400))]
    deadman_seconds: u32,
    /// `apply`: keep the backups of the last N runs on each host
    /// (/var/lib/rampart/backups/<run>), older ones are removed in the apply's round trip.
    /// Beats the inventory variable `backup_keep`. [default: 10]
    #[arg(long, value_name = "N", value_parser = in_range::<u32>(1, 100_000))]
    keep_backups: Option<u32>,
    /// Run only shard I of N (1-based; a host's shard is 1 + FNV-1a-64(name) mod N); other
    /// hosts are not contacted. The JSON report records the shard for `rampart report merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::Shard::parse)]
    shard: Option<crate::shard::Shard>,
    /// The number of shards when the index comes from JOB_COMPLETION_INDEX (0-based; a
    /// Kubernetes Indexed Job's).
    #[arg(long, value_name = "N", env = "RAMPART_SHARDS")]
    shards: Option<u32>,
}

/// The most hosts one controller runs at once: far below what a tokio semaphore takes, and
/// about what one process's file descriptors allow (each connection holds a socket).
const MAX_FORKS: u64 = 4096;

/// A clap parser for a whole number from `min` to `max`, whose error says the range.
fn in_range<T>(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::fmt::Display + Send + Sync + 'static,
{
    clap::builder::RangedU64ValueParser::<T>::new().range(min..=max)
}

#[derive(Debug, Args)]
struct FactsArgs {
    #[command(flatten)]
    hosts: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FactsFormat::Text)]
    format: FactsFormat,
    /// Also write the facts to FILE (repeatable): JSON for `.json` or `json:FILE`, else
    /// text. Opened before any host is touched, written atomically (mode 0600).
    #[arg(short, long, value_name = "[FORMAT:]FILE")]
    output: Vec<String>,
    /// No progress on stderr (facts prints none; accepted like the other commands' `-q`).
    #[arg(short, long)]
    quiet: bool,
}

pub fn main() -> ExitCode {
    // clap exits 2 on bad arguments, which is rampart's "differs": bad arguments are errors.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Outcome::Failed.into()
            } else {
                Outcome::Ok.into()
            };
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "rampart", &mut std::io::stdout());
            return Outcome::Ok.into();
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => Outcome::Ok.into(),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Outcome::Ok.into(),
                Err(e) => {
                    eprintln!("error: cannot write the manual page: {e}");
                    Outcome::Failed.into()
                }
            };
        }
        _ => {}
    }
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Outcome::Failed.into();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Facts(args) => facts_command(args).await,
            Command::Plan(args) => playbook_command(args, false, None).await,
            Command::Apply(args) => playbook_command(args, true, None).await,
            Command::Drift(args) => {
                playbook_command(args, false, Some(crate::inspect::Kind::Drift)).await
            }
            Command::Audit(args) => {
                playbook_command(args, false, Some(crate::inspect::Kind::Audit)).await
            }
            Command::Schedule(args) => crate::schedule::run(args),
            Command::Tunnel(args) => tunnel_command(args).await,
            Command::Collect(args) => collect_command(args).await,
            Command::Quarantine(args) => quarantine_command(args, true).await,
            Command::Release(args) => quarantine_command(args, false).await,
            Command::Completions { .. } | Command::Man => Ok(Outcome::Ok),
            Command::Report(ReportCommand::Merge { reports, output }) => {
                merge_command(reports, output)
            }
        }
    });
    match result {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            // A closed pipe (`rampart facts | head`) is not an error.
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return Outcome::Ok.into();
            }
            eprintln!("error: {e:#}");
            Outcome::Failed.into()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "rampart=info",
        _ => "rampart=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".ssh/known_hosts"))
        .unwrap_or_else(|| PathBuf::from("known_hosts"))
}

/// The hosts chosen by `--limit`, and the options every connection of the run shares.
fn resolve(args: &HostArgs) -> anyhow::Result<(Inventory, Vec<Host>, ConnectOptions)> {
    resolve_for(args, None)
}

/// [`resolve`] for a playbook: the `group_vars/` and `host_vars/` beside it count too.
fn resolve_for(
    args: &HostArgs,
    playbook: Option<&std::path::Path>,
) -> anyhow::Result<(Inventory, Vec<Host>, ConnectOptions)> {
    let HostArgs {
        inventory,
        extra_vars,
        limit,
        forks: _,
        ssh_config,
        known_hosts,
        accept_new,
        connect_timeout,
        timeout: _,
    } = args;
    let mut inv = Inventory::load_with(
        inventory,
        crate::ini_inventory::extra_vars(extra_vars)?,
        playbook.and_then(std::path::Path::parent),
    )?;
    for warning in &inv.warnings {
        eprintln!("warning: {warning}");
    }
    inv.apply_ssh_config(
        &SshConfig::load(ssh_config.as_deref())?,
        known_hosts.is_some(),
    )?;
    // `--connect-timeout` (or rampart.toml's) beats the ssh config's ConnectTimeout.
    if connect_timeout.is_some() {
        for host in &mut inv.hosts {
            host.ssh.connect_timeout = None;
            for hop in &mut host.jump {
                hop.ssh.connect_timeout = None;
            }
        }
    }
    let hosts: Vec<Host> = inv.limit(limit)?.into_iter().cloned().collect();
    // A run over no host would report a healthy fleet (exit 0, an all-clear Prometheus file).
    if hosts.is_empty() {
        if inv.hosts.is_empty() {
            anyhow::bail!(
                "inventory {} lists no host: there is nothing to check\n\
                 hint: add hosts under `all: hosts:` (or a group's `hosts:`), e.g. \
                 `all: {{hosts: {{web1: {{ansible_host: 192.0.2.10}}}}}}`",
                inv.path.display()
            );
        }
        anyhow::bail!(
            "--limit {} selects no host of inventory {} (the groups it names have no hosts)\n\
             hint: hosts: {}",
            limit.join(","),
            inv.path.display(),
            inv.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let options = ConnectOptions::new(
        known_hosts.clone().unwrap_or_else(default_known_hosts),
        *accept_new,
        Duration::from_secs(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
    );
    Ok((inv, hosts, options))
}

/// One host's answer to `rampart facts`.
///
/// ## Wire format (`--format json`)
///
/// `{"hosts": [HostFacts, ...]}` where each is
/// `{"name", "address", "status": "ok"|"unreachable"|"host key"|"auth"|"error", "login"?,
/// "note"?, "facts"?: {os_id, os_version, os_name, arch, kernel, hostname, uid, init,
/// package_manager, virtualization, tools: {nft, wg, wg_quick, auditctl, sshd, sudo,
/// systemctl}, audit_usable, docker, tailscale, ufw, fail2ban, ip_forward, ssh_kex: [names]}, "error"?, "hint"?, "stats"?: {round_trips, bytes_sent,
/// bytes_received}, "seconds"}`.
#[derive(Debug, Serialize)]
struct HostFacts {
    name: String,
    address: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<Facts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsSnapshot>,
    seconds: f64,
}

async fn facts_command(args: FactsArgs) -> anyhow::Result<Outcome> {
    let mut args = args;
    args.hosts.apply_config_files()?;
    let (_, hosts, options) = resolve(&args.hosts)?;
    let _ = args.quiet;
    // Each file is opened before any host is touched: a bad path fails the run first.
    let mut files = Vec::new();
    for spec in &args.output {
        let (format, path) = match spec.split_once(':') {
            Some(("json", p)) => (FactsFormat::Json, p),
            Some(("text", p)) => (FactsFormat::Text, p),
            _ if spec.ends_with(".json") => (FactsFormat::Json, spec.as_str()),
            _ => (FactsFormat::Text, spec.as_str()),
        };
        let file = crate::localfs::PendingWrite::create(std::path::Path::new(path))
            .map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?;
        files.push((format, file));
    }
    let options = std::sync::Arc::new(options);
    let timeout = Duration::from_secs(args.hosts.timeout.unwrap_or(READ_TIMEOUT));
    let results = fleet::for_each_host(&hosts, args.hosts.forks.unwrap_or(DEFAULT_FORKS), |host| {
        let options = options.clone();
        async move { host_facts(host, &options, timeout).await }
    })
    .await;

    let render = |format: FactsFormat| -> anyhow::Result<Vec<u8>> {
        let mut buf = Vec::new();
        match format {
            FactsFormat::Json => {
                serde_json::to_writer_pretty(&mut buf, &serde_json::json!({ "hosts": results }))?;
                writeln!(buf)?;
            }
            FactsFormat::Text => write_facts_table(&mut buf, &results)?,
        }
        Ok(buf)
    };
    for (format, file) in files {
        let path = file.path().display().to_string();
        file.commit(&render(format)?)
            .map_err(|e| anyhow::anyhow!("cannot write {path}: {e}"))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&render(args.format)?)?;
    out.flush()?;
    Ok(if results.iter().all(|r| r.status == "ok") {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

async fn host_facts(host: Host, options: &ConnectOptions, timeout: Duration) -> HostFacts {
    let started = Instant::now();
    let mut answer = HostFacts {
        name: host.name.clone(),
        address: format!("{}:{}", host.address, host.port),
        status: "ok",
        login: None,
        note: None,
        facts: None,
        error: None,
        hint: None,
        stats: None,
        seconds: 0.0,
    };
    match fleet::connect_host(&host, options).await {
        Err(e) => {
            answer.status = e.kind();
            answer.error = Some(e.to_string());
            answer.hint = e.hint();
        }
        Ok(connected) => {
            answer.login = Some(connected.login.clone());
            answer.note = connected.note.clone();
            let session = connected.session;
            match session.exec(facts::PROBE, b"", timeout).await {
                Err(e) => {
                    answer.status = "error";
                    answer.error = Some(e.to_string());
                }
                Ok(out) if !out.success() => {
                    answer.status = "error";
                    answer.error = Some(format!(
                        "the facts probe ended with {}\n{}",
                        out.status_text(),
                        out.stderr_block()
                    ));
                }
                Ok(out) => match facts::parse(&String::from_utf8_lossy(&out.stdout)) {
                    Ok(f) => answer.facts = Some(f),
                    Err(e) => {
                        answer.status = "error";
                        answer.error = Some(e.to_string());
                    }
                },
            }
            answer.stats = Some(session.stats().snapshot());
            session.close().await;
        }
    }
    answer.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    answer
}

fn write_facts_table(out: &mut impl Write, results: &[HostFacts]) -> std::io::Result<()> {
    let yes = |p: &Option<String>| if p.is_some() { "yes" } else { "-" };
    let mut rows = vec![vec![
        "HOST".to_string(),
        "ADDRESS".to_string(),
        "OS".to_string(),
        "ARCH".to_string(),
        "INIT".to_string(),
        "PKG".to_string(),
        "VIRT".to_string(),
        "NFT".to_string(),
        "WG".to_string(),
        "AUDITCTL".to_string(),
        "AUDIT".to_string(),
        "SSHD".to_string(),
    ]];
    let mut problems = Vec::new();
    for r in results {
        match &r.facts {
            Some(f) => rows.push(vec![
                r.name.clone(),
                r.address.clone(),
                format!("{} {}", f.os_id, f.os_version),
                f.arch.clone(),
                f.init.clone(),
                f.package_manager.clone(),
                f.virtualization.clone(),
                yes(&f.tools.nft).into(),
                yes(&f.tools.wg).into(),
                yes(&f.tools.auditctl).into(),
                if f.audit_usable {
                    "usable"
                } else {
                    "unavailable"
                }
                .into(),
                yes(&f.tools.sshd).into(),
            ]),
            None => problems.push(r),
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    if rows.len() > 1 {
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            writeln!(out, "{}", line.join("  ").trim_end())?;
        }
    }
    for r in results.iter().filter(|r| r.note.is_some()) {
        writeln!(out, "note: {}: {}", r.name, r.note.as_deref().unwrap_or(""))?;
    }
    for r in problems {
        writeln!(
            out,
            "{} ({}): {}: {}",
            r.name,
            r.address,
            r.status,
            r.error.as_deref().unwrap_or("")
        )?;
        if let Some(hint) = &r.hint {
            writeln!(out, "  hint: {hint}")?;
        }
    }
    let ok = results.iter().filter(|r| r.status == "ok").count();
    let summary = format!("{ok} of {} hosts answered", results.len());
    if std::io::stdout().is_terminal() {
        writeln!(out, "\n{summary}")?;
    } else {
        writeln!(out, "{summary}")?;
    }
    Ok(())
}

/// A summary in one format.
fn render(
    report: &crate::shard::ShardedSummary,
    format: Format,
    style: Style,
) -> anyhow::Result<String> {
    let summary = &report.summary;
    let mut text = Vec::new();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut text, report)?;
            text.push(b'\n');
        }
        Format::Text => crate::report::text::write(&mut text, summary, style)?,
        Format::Junit => crate::report::junit::write(&mut text, summary)?,
        Format::Prometheus => crate::report::prometheus::write(&mut text, summary)?,
        Format::Html => crate::report::html::write(&mut text, summary)?,
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// A run id that sorts by time: `20261125T103000Z-4f2a9c`.
fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, secs) = (now / 86_400, now % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut rand = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut rand);
    }
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:02x}{:02x}{:02x}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        rand[0],
        rand[1],
        rand[2]
    )
}

async fn playbook_command(
    args: PlaybookArgs,
    apply: bool,
    inspect: Option<crate::inspect::Kind>,
) -> anyhow::Result<Outcome> {
    let mut args = args;
    args.hosts.apply_config_files()?;
    let PlaybookArgs {
        hosts: host_args,
        playbook,
        tags,
        skip_tags,
        format,
        output,
        stats,
        quiet,
        deadman_seconds,
        keep_backups,
        shard,
        shards,
    } = args;
    let job_index = std::env::var("JOB_COMPLETION_INDEX").ok();
    let shard = crate::shard::Shard::resolve(shard, shards, job_index.as_deref())
        .map_err(anyhow::Error::msg)?;
    // A report that cannot be written is bad input: found before any host is touched, by
    // opening each report's temporary file in its folder now.
    let mut pending = Vec::new();
    for out in &output {
        let dir = match out.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "--output {}: the folder {} does not exist\nhint: create it first",
                out.path.display(),
                dir.display()
            );
        }
        let file = crate::localfs::PendingWrite::create(&out.path).map_err(|e| {
            anyhow::anyhow!(
                "--output {}: cannot write there: {e}\nhint: choose a file in a folder you \
                 can write to",
                out.path.display()
            )
        })?;
        pending.push((out.format, file));
    }
    let (inventory, mut hosts, options) = resolve_for(&host_args, Some(&playbook))?;
    let book = crate::playbook::Playbook::load(&playbook)?;
    let shard = match shard {
        None => None,
        Some(s) => {
            let mut tags_key = tags.clone();
            tags_key.push("--skip-tags".into());
            tags_key.extend(skip_tags.iter().cloned());
            let record = crate::shard::ShardRecord {
                index: s.index,
                count: s.count,
                playbook_digest: crate::shard::digest(&playbook, &tags_key)?,
                inventory_digest: crate::shard::digest(&inventory.path, &host_args.limit)?,
                fleet_hosts: hosts.len(),
                positions: (0..hosts.len())
                    .filter(|i| s.contains(&hosts[*i].name))
                    .collect(),
            };
            hosts.retain(|h| s.contains(&h.name));
            if !quiet {
                eprintln!(
                    "shard {}/{}: {} of {} hosts",
                    s.index,
                    s.count,
                    hosts.len(),
                    record.fleet_hosts
                );
            }
            Some(record)
        }
    };
    let progress = crate::progress::Progress::new(hosts.len(), quiet);
    let run = crate::fleet::Run {
        progress,
        inventory,
        hosts,
        templates: crate::template::Templates::for_playbook(&playbook),
        playbook: book,
        secrets: crate::secrets::Secrets::default(),
        options,
        settings: crate::engine::RunSettings {
            apply,
            run_id: run_id(),
            timeout: Duration::from_secs(host_args.timeout.unwrap_or(if apply {
                APPLY_TIMEOUT
            } else {
                READ_TIMEOUT
            })),
            tags,
            skip_tags,
            deadman_seconds,
            keep_backups,
            inspect,
        },
        forks: host_args.forks.unwrap_or(DEFAULT_FORKS),
    };
    let run = std::sync::Arc::new(run);
    let mut summary = crate::fleet::run_playbook(run.clone()).await;
    // Secrets never leave in clear, whatever put them in a report: masked in the summary
    // every format is made from, and again in the finished text.
    summary.mask(&run.secrets);
    let style = crate::report::text::Style {
        stats,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let outcome = summary.outcome();
    let report = crate::shard::ShardedSummary { summary, shard };
    write_reports(
        &report,
        pending,
        (format, style),
        &run.secrets,
        &mut std::io::stdout().lock(),
    )?;
    Ok(outcome)
}

/// `rampart report merge`.
fn merge_command(inputs: Vec<PathBuf>, output: Vec<Output>) -> anyhow::Result<Outcome> {
    let mut pending = Vec::new();
    for out in &output {
        let file = crate::localfs::PendingWrite::create(&out.path).map_err(|e| {
            anyhow::anyhow!(
                "--output {}: cannot write there: {e}\nhint: choose a file in a folder you \
                 can write to",
                out.path.display()
            )
        })?;
        pending.push((out.format, file));
    }
    let mut reports = Vec::new();
    for path in &inputs {
        let name = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("cannot read {name}: {e}\nhint: name the shards' JSON reports")
        })?;
        let report = crate::shard::ShardedSummary::from_json(&text).map_err(|e| {
            // A schema error (read from a parsed value) has no position: line 0.
            let at = if e.line() == 0 {
                String::new()
            } else {
                format!(":{}:{}", e.line(), e.column())
            };
            anyhow::anyhow!(
                "{name}{at}: not a rampart JSON report: {e}\nhint: merge the files written \
                 by `--output FILE.json` of `plan`, `apply`, `drift` or `audit`"
            )
        })?;
        reports.push((name, report));
    }
    let summary = crate::shard::merge(reports)?;
    let outcome = summary.outcome();
    let style = Style {
        stats: false,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let report = crate::shard::ShardedSummary {
        summary,
        shard: None,
    };
    let mut stdout = std::io::stdout().lock();
    if pending.is_empty() {
        write_reports(
            &report,
            pending,
            (Format::Text, style),
            &crate::secrets::Secrets::default(),
            &mut stdout,
        )?;
    } else {
        write_reports(
            &report,
            pending,
            (Format::Text, style),
            &crate::secrets::Secrets::default(),
            &mut std::io::sink(),
        )?;
    }
    Ok(outcome)
}

/// Writes the report files opened up front, then the report on `stdout`. A file that fails
/// at the end does not cost the report on stdout: every file is tried, stdout is written,
/// then the files' failures are the error.
fn write_reports(
    summary: &crate::shard::ShardedSummary,
    files: Vec<(Format, crate::localfs::PendingWrite)>,
    (format, style): (Format, Style),
    secrets: &crate::secrets::Secrets,
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (file_format, file) in files {
        let path = file.path().display().to_string();
        let written = render(
            summary,
            file_format,
            Style {
                color: false,
                ..style
            },
        )
        .and_then(|text| Ok(file.commit(secrets.mask(&text).as_bytes())?));
        if let Err(e) = written {
            failed.push(format!("cannot write {path}: {e:#}"));
        }
    }
    let text = render(summary, format, style)?;
    stdout.write_all(secrets.mask(&text).as_bytes())?;
    stdout.flush()?;
    if !failed.is_empty() {
        anyhow::bail!(
            "{}\nhint: the report on stdout is complete; check the space and permissions \
             of the folder",
            failed.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localfs::PendingWrite;

    #[test]
    fn a_report_file_failing_at_the_end_keeps_the_stdout_report() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("drift.json");
        let bad = dir.path().join("rampart.prom");
        let files = vec![
            (Format::Prometheus, PendingWrite::create(&bad).unwrap()),
            (Format::Json, PendingWrite::create(&good).unwrap()),
        ];
        // Between the check and the end of the run, a folder took the report's place.
        std::fs::create_dir(&bad).unwrap();
        let summary = crate::shard::ShardedSummary {
            summary: crate::report::sample_summary("drift"),
            shard: None,
        };
        let style = Style {
            stats: false,
            color: false,
        };
        let mut stdout = Vec::new();
        let err = write_reports(
            &summary,
            files,
            (Format::Text, style),
            &crate::secrets::Secrets::default(),
            &mut stdout,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!("cannot write {}", bad.display())),
            "{err}"
        );
        assert!(err.contains("hint: "), "{err}");
        let shown = String::from_utf8(stdout).unwrap();
        assert!(shown.contains("gw-1") && shown.contains("gw-3"), "{shown}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
        assert_eq!(json["run_id"], summary.summary.run_id.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// `rampart tunnel`: self-contained (tunnel.rs does the work).

#[derive(Debug, Args)]
struct TunnelArgs {
    /// The inventory (Ansible's YAML layout).
    #[arg(short, long, value_name = "FILE")]
    inventory: PathBuf,
    /// The inventory host whose agent to reach.
    host: String,
    /// The local port on 127.0.0.1 [default: the agent's port; 0 picks a free one].
    #[arg(long, value_name = "LOCAL")]
    port: Option<u16>,
    /// The agent's port on the host [default: the inventory's agent_port, else 18789 for
    /// OpenClaw, 18860 for agent_flavor: starter].
    #[arg(long, value_name = "PORT")]
    agent_port: Option<u16>,
    /// The OpenSSH client config to read, as `ssh -F` [default: ~/.ssh/config, then
    /// /etc/ssh/ssh_config]. Inventory hosts are looked up in it as `ssh NAME` would.
    #[arg(short = 'F', long, value_name = "FILE", env = "RAMPART_SSH_CONFIG")]
    ssh_config: Option<PathBuf>,
    /// The known_hosts file host keys are checked against [default: the ssh config's
    /// UserKnownHostsFile, else ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE", env = "RAMPART_KNOWN_HOSTS")]
    known_hosts: Option<PathBuf>,
    /// Record the key of a host not yet in known_hosts (hashed) instead of refusing it.
    #[arg(long)]
    accept_new: bool,
    /// Seconds to connect, exchange keys and log in (1 to 3600).
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = in_range::<u64>(1, 3600))]
    connect_timeout: u64,
}

async fn tunnel_command(args: TunnelArgs) -> anyhow::Result<Outcome> {
    let TunnelArgs {
        inventory,
        host,
        port,
        agent_port,
        ssh_config,
        known_hosts,
        accept_new,
        connect_timeout,
    } = args;
    let mut inv = Inventory::load(&inventory)?;
    inv.apply_ssh_config(
        &SshConfig::load(ssh_config.as_deref())?,
        known_hosts.is_some(),
    )?;
    let Some(target) = inv.hosts.iter().find(|h| h.name == host).cloned() else {
        let known: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        anyhow::bail!(
            "{}: no host {host:?} (hosts: {})\nhint: name one host of the inventory",
            inventory.display(),
            known.join(", ")
        );
    };
    let remote = crate::tunnel::agent_port(&target, agent_port).map_err(anyhow::Error::msg)?;
    let options = ConnectOptions::new(
        known_hosts.unwrap_or_else(default_known_hosts),
        accept_new,
        Duration::from_secs(connect_timeout),
    );
    crate::tunnel::run(target, options, port.unwrap_or(remote), remote).await
}

async fn collect_command(args: CollectArgs) -> anyhow::Result<Outcome> {
    let CollectArgs {
        mut hosts,
        targets,
        output,
        max_size,
        member_size,
        changed_days,
        format,
    } = args;
    hosts.apply_config_files()?;
    hosts.limit.extend(targets);
    let (_, selected, mut options) = resolve(&hosts)?;
    options.max_output = max_size << 20;
    if !output.is_dir() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&output)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot make the evidence folder {}: {e}\nhint: -o must name a folder you can write",
                    output.display()
                )
            })?;
    }
    let limits = crate::incident::collect::Limits {
        member: member_size << 10,
        changed_days,
        timeout: Duration::from_secs(hosts.timeout.unwrap_or(600)),
        ..Default::default()
    };
    let shared = std::sync::Arc::new((options, output, limits));
    let results = fleet::for_each_host(&selected, hosts.forks.unwrap_or(DEFAULT_FORKS), |host| {
        let shared = shared.clone();
        async move {
            let (options, dir, limits) = &*shared;
            crate::incident::collect::collect_host(&host, options, dir, limits).await
        }
    })
    .await;
    let mut out = std::io::stdout().lock();
    match format {
        FactsFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "hosts": results }))?;
            writeln!(out)?;
        }
        FactsFormat::Text => {
            for r in &results {
                match (&r.archive, &r.error) {
                    (Some(a), _) => writeln!(
                        out,
                        "{}: {}: {} ({} members, {})",
                        r.host,
                        r.status,
                        a.display(),
                        r.members,
                        crate::transport::size_text(r.bytes)
                    )?,
                    (None, e) => writeln!(
                        out,
                        "{}: failed: {}",
                        r.host,
                        e.as_deref().unwrap_or("no archive")
                    )?,
                }
                for p in &r.problems {
                    writeln!(out, "  {}: {p}", r.host)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if results.iter().all(|r| r.status == "ok") {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

async fn quarantine_command(args: IncidentArgs, quarantine: bool) -> anyhow::Result<Outcome> {
    let IncidentArgs {
        mut hosts,
        targets,
        deadman_seconds,
        format,
    } = args;
    hosts.apply_config_files()?;
    hosts.limit.extend(targets);
    let (_, selected, options) = resolve(&hosts)?;
    let timeout = Duration::from_secs(hosts.timeout.unwrap_or(READ_TIMEOUT));
    let options = std::sync::Arc::new(options);
    let results = fleet::for_each_host(&selected, hosts.forks.unwrap_or(DEFAULT_FORKS), |host| {
        let options = options.clone();
        async move {
            crate::incident::quarantine::run_host(
                &host,
                &options,
                quarantine,
                deadman_seconds,
                timeout,
            )
            .await
        }
    })
    .await;
    let mut out = std::io::stdout().lock();
    match format {
        FactsFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "hosts": results }))?;
            writeln!(out)?;
        }
        FactsFormat::Text => {
            for r in &results {
                writeln!(out, "{}: {}", r.host, r.status)?;
                for line in &r.done {
                    writeln!(out, "  {line}")?;
                }
                if let Some(e) = &r.error {
                    writeln!(out, "  error: {e}")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if results.iter().all(|r| r.error.is_none()) {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
