//! schedule: `rampart schedule`, the nightly `rampart drift` as a systemd service and timer,
//! or as a cron.d file (`--cron`). Prints it, or with `--install` writes it atomically and
//! enables the timer.
//!
//! Owns the unit and crontab text and its quoting: systemd's rules for `ExecStart=` and path
//! lists (quotes, C escapes, `%` specifiers, `$` variables) and, for cron, a `/bin/sh` line in
//! which cron itself turns `%` into a newline. Runs no drift itself: the service runs this very
//! binary (`std::env::current_exe`) with `drift -q --output FILE.prom --output FILE.json`,
//! and the cli picks each file's format by its extension.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::exit::Outcome;

/// The textfile the drift writes for node_exporter, in `--textfile-dir`.
pub const TEXTFILE_NAME: &str = "rampart.prom";

/// Print (or install) what runs `rampart drift` every night: a systemd service and timer by
/// default, a cron.d file with --cron.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// The inventory the nightly drift reads (made absolute).
    #[arg(short, long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// The playbook the hosts are compared with (made absolute).
    pub playbook: PathBuf,
    /// When: HH:MM (daily), or a systemd OnCalendar= expression, or with --cron a crontab time
    /// ("30 2 * * 1-5", @daily). [default: 03:00 daily]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// systemd: start up to this much later, at random, each night ("0" for never).
    /// [default: 15min]
    #[arg(long, value_name = "SPAN")]
    pub randomized_delay: Option<String>,
    /// Where node_exporter's textfile collector reads; the drift writes rampart.prom there.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/prometheus/node-exporter"
    )]
    pub textfile_dir: PathBuf,
    /// The drift's JSON report.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/rampart/drift.json"
    )]
    pub json: PathBuf,
    /// The known_hosts file the drift checks host keys against [default: the user's
    /// ~/.ssh/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// The unit (or cron.d file) name.
    #[arg(long, default_value = "rampart-drift")]
    pub name: String,
    /// The user the drift runs as (its ~/.ssh holds the keys).
    #[arg(long, default_value = "root")]
    pub user: String,
    /// A cron.d file instead of a systemd service and timer.
    #[arg(long)]
    pub cron: bool,
    /// Write the files (and for systemd, reload and enable the timer) instead of printing.
    #[arg(long)]
    pub install: bool,
    /// With --install: write the units, but do not reload systemd or enable the timer.
    #[arg(long, requires = "install")]
    pub no_enable: bool,
    /// Where --install writes the systemd units.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Where --install --cron writes the cron.d file.
    #[arg(long, value_name = "DIR", default_value = "/etc/cron.d")]
    pub cron_dir: PathBuf,
    /// What to print without --install: the files as text, or (json) the job and each file's
    /// path and content: `{"name", "scheduler": "systemd"|"cron", "when": {"calendar",
    /// "randomized_delay"} | {"cron"}, "user", "command": [...], "inventory", "playbook",
    /// "textfile", "json", "known_hosts", "files": [{"path", "content"}]}`.
    #[arg(long, value_enum, default_value_t = ScheduleFormat::Text)]
    pub format: ScheduleFormat,
    /// Print a Kubernetes CronJob instead: an Indexed Job of --shards pods, each running
    /// `drift` on its shard (JOB_COMPLETION_INDEX) and writing its JSON report beside --json,
    /// for `rampart report merge`. INVENTORY, PLAYBOOK and --known-hosts are paths in the pod
    /// (a ConfigMap NAME-config at /etc/rampart, the SSH key a Secret NAME-ssh at
    /// /etc/rampart/ssh, the reports a PersistentVolumeClaim NAME-reports).
    #[arg(long, requires = "image", conflicts_with_all = ["cron", "install"])]
    pub kubernetes: bool,
    /// With --kubernetes: how many shards (the Job's completions).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "kubernetes",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::shard::MAX_SHARDS)))]
    pub shards: u32,
    /// With --kubernetes: how many shards run at once [default: --shards].
    #[arg(long, value_name = "N", requires = "kubernetes",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub parallelism: Option<u32>,
    /// With --kubernetes: the container image holding the rampart binary.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

/// `rampart schedule --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleFormat {
    Text,
    Json,
}

/// The job and its files as JSON (`--format json`).
fn job_json(job: &Job) -> serde_json::Value {
    let (scheduler, when, files) = match &job.when {
        When::Systemd { calendar, delay } => (
            "systemd",
            serde_json::json!({"calendar": calendar, "randomized_delay": delay}),
            vec![
                (
                    format!("/etc/systemd/system/{}.service", job.name),
                    service_unit(job),
                ),
                (
                    format!("/etc/systemd/system/{}.timer", job.name),
                    timer_unit(job),
                ),
            ],
        ),
        When::Cron(time) => (
            "cron",
            serde_json::json!({"cron": time}),
            vec![(format!("/etc/cron.d/{}", job.name), cron_file(job))],
        ),
    };
    serde_json::json!({
        "name": job.name,
        "scheduler": scheduler,
        "when": when,
        "user": job.user,
        "command": job.args(),
        "inventory": job.inventory,
        "playbook": job.playbook,
        "textfile": job.textfile,
        "json": job.json,
        "known_hosts": job.known_hosts,
        "files": files
            .into_iter()
            .map(|(path, content)| serde_json::json!({"path": path, "content": content}))
            .collect::<Vec<_>>(),
    })
}

/// When the drift runs, for the chosen scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// `OnCalendar=` and `RandomizedDelaySec=`.
    Systemd { calendar: String, delay: String },
    /// The five time fields of a crontab line, or an `@daily`-like word.
    Cron(String),
}

/// Everything the generated files say, resolved: absolute paths, a checked name and user.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub exe: PathBuf,
    pub inventory: PathBuf,
    pub playbook: PathBuf,
    pub textfile: PathBuf,
    pub json: PathBuf,
    pub known_hosts: Option<PathBuf>,
    pub user: String,
    pub when: When,
}

/// What `--install` does, beside the job.
#[derive(Debug)]
struct Install {
    enabled: bool,
    no_enable: bool,
    unit_dir: PathBuf,
    cron_dir: PathBuf,
}

pub fn run(args: ScheduleArgs) -> anyhow::Result<Outcome> {
    if args.kubernetes {
        let text = crate::kubernetes::manifest(&kubernetes_job(&args)?);
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(Outcome::Ok);
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let format = args.format;
    let (job, install) = resolve(args, exe)?;
    if !install.enabled && format == ScheduleFormat::Json {
        let mut text = serde_json::to_string_pretty(&job_json(&job))?;
        text.push('\n');
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(Outcome::Ok);
    }
    if !install.enabled {
        let text = match job.when {
            When::Systemd { .. } => print_systemd(&job),
            When::Cron(_) => cron_file(&job),
        };
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(Outcome::Ok);
    }
    match job.when {
        When::Systemd { .. } => install_systemd(&job, &install)?,
        When::Cron(_) => install_cron(&job, &install)?,
    }
    Ok(Outcome::Ok)
}

/// The CronJob of `--kubernetes`: paths in the pod, so absolute and not looked up here.
fn kubernetes_job(args: &ScheduleArgs) -> anyhow::Result<crate::kubernetes::CronJob> {
    let in_pod = |what: &str, p: &Path| -> anyhow::Result<String> {
        let s = text(p)?;
        if !p.is_absolute() {
            bail!("{what} {s:?}: with --kubernetes, give the absolute path in the pod");
        }
        Ok(s)
    };
    let name = &args.name;
    if name.is_empty()
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        bail!("--name {name:?}: a Kubernetes name: lowercase letters, digits and `-`, at most 40");
    }
    let image = args.image.clone().unwrap_or_default();
    if image.is_empty() || image.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("--image {image:?}: a container image reference, e.g. ghcr.io/you/rampart:1.0");
    }
    let json = in_pod("--json", &args.json)?;
    let reports_dir = match args.json.parent() {
        Some(d) if d != Path::new("/") => text(d)?,
        _ => bail!("--json {json:?}: name a file in a folder, e.g. /var/lib/rampart/drift.json"),
    };
    Ok(crate::kubernetes::CronJob {
        name: name.clone(),
        image,
        schedule: cron_time(args.at.as_deref().unwrap_or("03:00"))?,
        shards: args.shards,
        parallelism: args.parallelism.unwrap_or(args.shards).min(args.shards),
        inventory: in_pod("inventory", &args.inventory)?,
        playbook: in_pod("playbook", &args.playbook)?,
        known_hosts: in_pod(
            "--known-hosts",
            args.known_hosts
                .as_deref()
                .unwrap_or(Path::new("/etc/rampart/known_hosts")),
        )?,
        reports_dir,
    })
}

/// Checks the arguments and makes every path absolute.
fn resolve(args: ScheduleArgs, exe: PathBuf) -> anyhow::Result<(Job, Install)> {
    let ScheduleArgs {
        inventory,
        playbook,
        at,
        randomized_delay,
        textfile_dir,
        json,
        known_hosts,
        name,
        user,
        cron,
        install,
        no_enable,
        unit_dir,
        cron_dir,
        format: _,
        ..
    } = args;
    let existing = |what: &str, p: &Path| -> anyhow::Result<PathBuf> {
        let abs = absolute(p)?;
        if !abs.is_file() {
            bail!(
                "{what} {} not found (it is read at every run)",
                abs.display()
            );
        }
        Ok(abs)
    };
    let inventory = existing("inventory", &inventory)?;
    let playbook = existing("playbook", &playbook)?;
    let known_hosts = known_hosts.map(|p| absolute(&p)).transpose()?;
    let textfile = absolute(&textfile_dir)?.join(TEXTFILE_NAME);
    let json = absolute(&json)?;
    if json.extension() != Some(OsStr::new("json")) {
        bail!(
            "--json {}: the file name must end in .json (the drift picks the format by it)",
            json.display()
        );
    }
    // Both a systemd unit name and a cron.d file name (run-parts skips names with a dot).
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--name {name:?}: use letters, digits, `-` and `_` only");
    }
    if user.is_empty()
        || user.starts_with('-')
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("--user {user:?}: not a user name");
    }
    let when = if cron {
        if randomized_delay.is_some() {
            bail!("--randomized-delay is for systemd timers, not with --cron");
        }
        When::Cron(cron_time(at.as_deref().unwrap_or("03:00"))?)
    } else {
        let delay = randomized_delay.unwrap_or_else(|| "15min".into());
        if delay.is_empty()
            || !delay
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '.')
        {
            bail!("--randomized-delay {delay:?}: a time span such as 15min, 1h or 0");
        }
        When::Systemd {
            calendar: on_calendar(at.as_deref().unwrap_or("03:00"))?,
            delay,
        }
    };
    let job = Job {
        name,
        exe,
        inventory,
        playbook,
        textfile,
        json,
        known_hosts,
        user,
        when,
    };
    // Every path goes into a unit or a shell line: reject what neither can carry.
    for arg in job.drift_args() {
        arg?;
    }
    let install = Install {
        enabled: install,
        no_enable,
        unit_dir,
        cron_dir,
    };
    Ok((job, install))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// `HH:MM` as (hour, minute).
fn hh_mm(at: &str) -> Option<(u32, u32)> {
    let (h, m) = at.split_once(':')?;
    let ok = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !ok(h, 1..=2) || !ok(m, 2..=2) {
        return None;
    }
    let (h, m) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// `--at` as an `OnCalendar=` value: `HH:MM` daily, anything else as systemd reads it.
fn on_calendar(at: &str) -> anyhow::Result<String> {
    if let Some((h, m)) = hh_mm(at) {
        return Ok(format!("*-*-* {h:02}:{m:02}:00"));
    }
    if at.trim().is_empty() || at.chars().any(|c| c.is_control() || c == '%') {
        bail!("--at {at:?}: HH:MM or a systemd calendar expression (man systemd.time)");
    }
    Ok(at.trim().to_string())
}

/// `--at` as a crontab time: `HH:MM` daily, `daily`-like words, `@daily`-like words, or five
/// fields.
fn cron_time(at: &str) -> anyhow::Result<String> {
    if let Some((h, m)) = hh_mm(at) {
        return Ok(format!("{m} {h} * * *"));
    }
    const WORDS: [&str; 6] = ["hourly", "daily", "weekly", "monthly", "yearly", "annually"];
    let word = at.trim().trim_start_matches('@');
    if WORDS.contains(&word) {
        return Ok(format!("@{word}"));
    }
    let fields: Vec<&str> = at.split_whitespace().collect();
    let field_ok = |f: &&str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-'))
    };
    if fields.len() != 5 || !fields.iter().all(field_ok) {
        bail!(
            "--at {at:?}: with --cron, HH:MM, @daily (or hourly, weekly, monthly) or five \
             crontab fields such as \"30 2 * * *\""
        );
    }
    Ok(fields.join(" "))
}

impl Job {
    /// The drift's command line, executable first; an error for a path no unit can carry.
    fn drift_args(&self) -> Vec<anyhow::Result<String>> {
        let mut args: Vec<anyhow::Result<String>> = vec![
            text(&self.exe),
            Ok("drift".into()),
            Ok("-i".into()),
            text(&self.inventory),
            text(&self.playbook),
            Ok("-q".into()),
            Ok("--output".into()),
            text(&self.textfile),
            Ok("--output".into()),
            text(&self.json),
        ];
        if let Some(kh) = &self.known_hosts {
            args.push(Ok("--known-hosts".into()));
            args.push(text(kh));
        }
        args
    }

    fn args(&self) -> Vec<String> {
        self.drift_args()
            .into_iter()
            .map(|a| a.expect("checked by resolve"))
            .collect()
    }

    /// The folders the drift writes into.
    fn output_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = [&self.textfile, &self.json]
            .into_iter()
            .filter_map(|p| p.parent())
            .collect();
        dirs.dedup();
        dirs
    }
}

/// A path as UTF-8 text without control characters (a newline would end the unit's line).
fn text(p: &Path) -> anyhow::Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{}: the path is not UTF-8", p.display()))?;
    if s.chars().any(char::is_control) {
        bail!("{s:?}: a path with control characters cannot go into a unit or crontab");
    }
    Ok(s.to_string())
}

/// One word of a unit's command line or path list: quoted when it needs to be, with `\` and
/// `"` escaped (systemd unescapes C-style) and `%` doubled (specifiers); with `variables` (the
/// arguments of `ExecStart=`, not its executable, not `ReadWritePaths=`) `$` doubled too.
pub fn systemd_word(s: &str, variables: bool) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if variables => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One word of a `/bin/sh` command line.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `%` in a crontab command is cron's newline: escaped, cron hands the shell a plain `%`.
fn cron_escape(line: &str) -> String {
    line.replace('%', r"\%")
}

/// The `.service` unit.
pub fn service_unit(job: &Job) -> String {
    // systemd runs the executable's path as written; only its arguments see `$` variables.
    let exec: Vec<String> = job
        .args()
        .iter()
        .enumerate()
        .map(|(i, a)| systemd_word(a, i > 0))
        .collect();
    let playbook = job
        .playbook
        .file_name()
        .map(|f| f.to_string_lossy().replace('%', "%%"))
        .unwrap_or_default();
    let rw: Vec<String> = job
        .output_dirs()
        .iter()
        .map(|d| format!("-{}", systemd_word(&d.to_string_lossy(), false)))
        .collect();
    let mut u = String::new();
    let _ = writeln!(
        u,
        "# {}.service: generated by `rampart schedule`.",
        job.name
    );
    let _ = writeln!(
        u,
        "# The nightly `rampart drift` of the fleet; {}.timer starts it.",
        job.name
    );
    u.push_str("[Unit]\n");
    let _ = writeln!(u, "Description=rampart drift: the fleet against {playbook}");
    u.push_str("Wants=network-online.target\nAfter=network-online.target\n\n");
    u.push_str("[Service]\nType=oneshot\n");
    let _ = writeln!(u, "User={}", job.user);
    u.push_str(
        "# Exit status 2 means \"a host drifted\": that is news for the metrics and the JSON\n\
         # report, not a failure of this unit. Only errors (1: a host unreachable or failed,\n\
         # bad input) fail it, and rampart_host_unreachable says which host.\n\
         SuccessExitStatus=2\n",
    );
    let _ = writeln!(u, "ExecStart={}", exec.join(" "));
    u.push_str("# A hung run must not block tomorrow's.\nTimeoutStartSec=1h\n");
    u.push_str(
        "# The drift only reads the hosts over SSH and writes its two reports.\n\
         NoNewPrivileges=yes\nPrivateTmp=yes\nProtectSystem=strict\nProtectHome=read-only\n\
         # rampart's fact cache (a host that is down lends its last facts to its peers).\n\
         CacheDirectory=rampart\nEnvironment=XDG_CACHE_HOME=/var/cache\n",
    );
    let _ = writeln!(u, "ReadWritePaths={}", rw.join(" "));
    u
}

/// The `.timer` unit.
pub fn timer_unit(job: &Job) -> String {
    let When::Systemd { calendar, delay } = &job.when else {
        unreachable!("a timer for a systemd job only");
    };
    let mut u = String::new();
    let _ = writeln!(u, "# {}.timer: generated by `rampart schedule`.", job.name);
    u.push_str("[Unit]\n");
    let _ = writeln!(
        u,
        "Description=nightly rampart drift ({}.service)",
        job.name
    );
    u.push_str("\n[Timer]\n");
    let _ = writeln!(u, "OnCalendar={calendar}");
    let _ = writeln!(u, "RandomizedDelaySec={delay}");
    u.push_str("# A run missed while the machine was off starts at the next boot.\n");
    u.push_str("Persistent=true\n\n[Install]\nWantedBy=timers.target\n");
    u
}

/// What `rampart schedule` prints for systemd: how to install by hand, then both units.
fn print_systemd(job: &Job) -> String {
    let unit_dir = "/etc/systemd/system";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The nightly drift as a systemd service and timer. To install by hand, save the two\n\
         # units below as {unit_dir}/{name}.service and {unit_dir}/{name}.timer, then:\n\
         #   mkdir -p {dirs}\n\
         #   systemctl daemon-reload && systemctl enable --now {name}.timer\n\
         # Or run this command again with --install. Next run: systemctl list-timers {name}.timer;\n\
         # last run: journalctl -u {name}.service.",
        name = job.name,
        dirs = dirs_for_shell(job),
    );
    let _ = write!(
        out,
        "\n# ==> {unit_dir}/{}.service <==\n{}",
        job.name,
        service_unit(job)
    );
    let _ = write!(
        out,
        "\n# ==> {unit_dir}/{}.timer <==\n{}",
        job.name,
        timer_unit(job)
    );
    out
}

fn dirs_for_shell(job: &Job) -> String {
    job.output_dirs()
        .iter()
        .map(|d| shell_word(&d.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cron.d file: a header saying how to install it, and one line.
pub fn cron_file(job: &Job) -> String {
    let When::Cron(time) = &job.when else {
        unreachable!("a cron file for a cron job only");
    };
    let command: Vec<String> = job.args().iter().map(|a| shell_word(a)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {name}: the nightly `rampart drift`, generated by `rampart schedule --cron`.\n\
         # To install by hand, save this file as /etc/cron.d/{name} (owned by root, mode 0644)\n\
         # and create the report folders: mkdir -p {dirs}\n\
         # Or run this command again with --install.\n\
         # Exit status 2 (a host drifted) is reported by the metrics and the JSON report; the\n\
         # report on stdout is dropped, and cron mails only what goes wrong (stderr).",
        name = job.name,
        dirs = dirs_for_shell(job),
    );
    out.push_str(
        "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
    );
    let _ = writeln!(
        out,
        "{time} {} {} >/dev/null",
        job.user,
        cron_escape(&command.join(" "))
    );
    out
}

fn install_systemd(job: &Job, install: &Install) -> anyhow::Result<()> {
    let dir = &install.unit_dir;
    if !dir.is_dir() {
        bail!("unit folder {} not found (see --unit-dir)", dir.display());
    }
    let service = dir.join(format!("{}.service", job.name));
    let timer = dir.join(format!("{}.timer", job.name));
    write_atomic(&service, service_unit(job).as_bytes())?;
    println!("wrote {}", service.display());
    write_atomic(&timer, timer_unit(job).as_bytes())?;
    println!("wrote {}", timer.display());
    make_output_dirs(job)?;
    if install.no_enable {
        println!(
            "not enabled (--no-enable): systemctl daemon-reload && systemctl enable --now {}.timer",
            job.name
        );
        return Ok(());
    }
    systemctl(&["daemon-reload"])?;
    let timer_name = format!("{}.timer", job.name);
    systemctl(&["enable", "--now", &timer_name])?;
    println!("enabled {timer_name}; next run: systemctl list-timers {timer_name}");
    Ok(())
}

fn install_cron(job: &Job, install: &Install) -> anyhow::Result<()> {
    let dir = &install.cron_dir;
    if !dir.is_dir() {
        bail!("cron folder {} not found (see --cron-dir)", dir.display());
    }
    let file = dir.join(&job.name);
    write_atomic(&file, cron_file(job).as_bytes())?;
    println!("wrote {}", file.display());
    make_output_dirs(job)?;
    Ok(())
}

fn make_output_dirs(job: &Job) -> anyhow::Result<()> {
    for dir in job.output_dirs() {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            println!("created {}", dir.display());
        }
    }
    if job.user != "root" {
        println!(
            "note: {} must be able to write {}",
            job.user,
            job.output_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .context("cannot run systemctl")?;
    if !out.status.success() {
        bail!(
            "`systemctl {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// [`crate::localfs::write_atomically_mode`], mode 0644 (systemd and cron read these; they
/// hold no secret), with the path in the error.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::localfs::write_atomically_mode(path, bytes, 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(when: When) -> Job {
        Job {
            name: "rampart-drift".into(),
            exe: "/usr/local/bin/rampart".into(),
            inventory: "/etc/rampart/inventory.yaml".into(),
            playbook: "/etc/rampart/playbooks/site.yaml".into(),
            textfile: "/var/lib/prometheus/node-exporter/rampart.prom".into(),
            json: "/var/lib/rampart/drift.json".into(),
            known_hosts: None,
            user: "root".into(),
            when,
        }
    }

    fn systemd() -> When {
        When::Systemd {
            calendar: on_calendar("03:00").unwrap(),
            delay: "15min".into(),
        }
    }

    /// A job whose paths need quoting everywhere.
    fn awkward(when: When) -> Job {
        Job {
            exe: "/opt/my tools/rampart".into(),
            inventory: "/srv/fleet's inventory/hosts.yaml".into(),
            playbook: "/srv/100% \"safe\"/$HOME/a\\b.yaml".into(),
            known_hosts: Some("/srv/keys/known hosts".into()),
            ..job(when)
        }
    }

    #[test]
    fn service_and_timer() {
        insta::assert_snapshot!(service_unit(&job(systemd())), @r#"
        # rampart-drift.service: generated by `rampart schedule`.
        # The nightly `rampart drift` of the fleet; rampart-drift.timer starts it.
        [Unit]
        Description=rampart drift: the fleet against site.yaml
        Wants=network-online.target
        After=network-online.target

        [Service]
        Type=oneshot
        User=root
        # Exit status 2 means "a host drifted": that is news for the metrics and the JSON
        # report, not a failure of this unit. Only errors (1: a host unreachable or failed,
        # bad input) fail it, and rampart_host_unreachable says which host.
        SuccessExitStatus=2
        ExecStart=/usr/local/bin/rampart drift -i /etc/rampart/inventory.yaml /etc/rampart/playbooks/site.yaml -q --output /var/lib/prometheus/node-exporter/rampart.prom --output /var/lib/rampart/drift.json
        # A hung run must not block tomorrow's.
        TimeoutStartSec=1h
        # The drift only reads the hosts over SSH and writes its two reports.
        NoNewPrivileges=yes
        PrivateTmp=yes
        ProtectSystem=strict
        ProtectHome=read-only
        # rampart's fact cache (a host that is down lends its last facts to its peers).
        CacheDirectory=rampart
        Environment=XDG_CACHE_HOME=/var/cache
        ReadWritePaths=-/var/lib/prometheus/node-exporter -/var/lib/rampart
        "#);
        insta::assert_snapshot!(timer_unit(&job(systemd())), @r"
        # rampart-drift.timer: generated by `rampart schedule`.
        [Unit]
        Description=nightly rampart drift (rampart-drift.service)

        [Timer]
        OnCalendar=*-*-* 03:00:00
        RandomizedDelaySec=15min
        # A run missed while the machine was off starts at the next boot.
        Persistent=true

        [Install]
        WantedBy=timers.target
        ");
    }

    #[test]
    fn cron() {
        let j = job(When::Cron(cron_time("03:00").unwrap()));
        insta::assert_snapshot!(cron_file(&j), @r"
        # rampart-drift: the nightly `rampart drift`, generated by `rampart schedule --cron`.
        # To install by hand, save this file as /etc/cron.d/rampart-drift (owned by root, mode 0644)
        # and create the report folders: mkdir -p /var/lib/prometheus/node-exporter /var/lib/rampart
        # Or run this command again with --install.
        # Exit status 2 (a host drifted) is reported by the metrics and the JSON report; the
        # report on stdout is dropped, and cron mails only what goes wrong (stderr).
        SHELL=/bin/sh
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        0 3 * * * root /usr/local/bin/rampart drift -i /etc/rampart/inventory.yaml /etc/rampart/playbooks/site.yaml -q --output /var/lib/prometheus/node-exporter/rampart.prom --output /var/lib/rampart/drift.json >/dev/null
        ");
    }

    #[test]
    fn systemd_quoting() {
        let service = service_unit(&awkward(systemd()));
        let exec = service
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        assert_eq!(
            exec,
            r#""/opt/my tools/rampart" drift -i "/srv/fleet's inventory/hosts.yaml" "/srv/100%% \"safe\"/$$HOME/a\\b.yaml" -q --output /var/lib/prometheus/node-exporter/rampart.prom --output /var/lib/rampart/drift.json --known-hosts "/srv/keys/known hosts""#
        );
        assert!(service.contains("Description=rampart drift: the fleet against a\\b.yaml\n"));
        assert_eq!(systemd_word("/a $b%c", false), r#""/a $b%%c""#);
        assert_eq!(systemd_word("/a $b", true), r#""/a $$b""#);
        assert_eq!(systemd_word(";", true), r#"";""#);
        assert_eq!(systemd_word("", true), r#""""#);
    }

    /// The cron line, run by `sh` after cron's own `%` handling, hands the drift each path
    /// as one argument, unchanged.
    #[test]
    fn cron_quoting_survives_the_shell() {
        let j = awkward(When::Cron("@daily".into()));
        let file = cron_file(&j);
        let line = file
            .lines()
            .find(|l| l.starts_with("@daily root "))
            .unwrap();
        let command = line
            .strip_prefix("@daily root ")
            .unwrap()
            .strip_suffix(" >/dev/null")
            .unwrap();
        assert!(!command.replace(r"\%", "").contains('%'), "{command}");
        // What cron does: `\%` becomes `%`; then the executable is replaced by printf.
        let command = command.replace(r"\%", "%");
        let exe = shell_word("/opt/my tools/rampart");
        let command = command.replacen(&exe, "printf '%s\\n'", 1);
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}");
        let args: Vec<String> = j.args()[1..].to_vec();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            args.join("\n") + "\n"
        );
    }

    #[test]
    fn times() {
        assert_eq!(on_calendar("03:00").unwrap(), "*-*-* 03:00:00");
        assert_eq!(on_calendar("2:30").unwrap(), "*-*-* 02:30:00");
        assert_eq!(on_calendar("Mon..Fri 04:00").unwrap(), "Mon..Fri 04:00");
        assert!(on_calendar("daily\nExecStart=/bin/evil").is_err());
        assert_eq!(cron_time("03:00").unwrap(), "0 3 * * *");
        assert_eq!(cron_time("23:59").unwrap(), "59 23 * * *");
        assert_eq!(cron_time("daily").unwrap(), "@daily");
        assert_eq!(cron_time("@weekly").unwrap(), "@weekly");
        assert_eq!(cron_time(" 30  2 * * 1-5 ").unwrap(), "30 2 * * 1-5");
        assert!(cron_time("24:00").is_err());
        assert!(cron_time("* * * *").is_err());
        assert!(cron_time("0 3 * * * root rm -rf /").is_err());
        assert!(cron_time("0 3 * * ;id").is_err());
    }

    #[test]
    fn resolve_checks_names_paths_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yaml");
        let book = dir.path().join("site.yaml");
        std::fs::write(&inv, "all: {}\n").unwrap();
        std::fs::write(&book, "steps: []\n").unwrap();
        let args = |extra: &[&str]| {
            use clap::{Args, FromArgMatches};
            let cmd = ScheduleArgs::augment_args(clap::Command::new("schedule"));
            let mut argv = vec![
                "schedule",
                "-i",
                inv.to_str().unwrap(),
                book.to_str().unwrap(),
            ];
            argv.extend(extra);
            let m = cmd.try_get_matches_from(argv).unwrap();
            ScheduleArgs::from_arg_matches(&m).unwrap()
        };
        let exe = PathBuf::from("/usr/bin/rampart");
        let (job, install) = resolve(args(&[]), exe.clone()).unwrap();
        assert!(!install.enabled);
        assert_eq!(
            job.textfile,
            Path::new("/var/lib/prometheus/node-exporter/rampart.prom")
        );
        assert_eq!(job.json, Path::new("/var/lib/rampart/drift.json"));
        let (job, _) = resolve(args(&["--cron", "--at", "04:15"]), exe.clone()).unwrap();
        assert_eq!(job.when, When::Cron("15 4 * * *".into()));

        let err = |extra: &[&str]| resolve(args(extra), exe.clone()).unwrap_err().to_string();
        assert!(err(&["--name", "a.b"]).contains("letters, digits"));
        assert!(err(&["--name", "a b"]).contains("letters, digits"));
        assert!(err(&["--user", "root\nx"]).contains("not a user name"));
        assert!(err(&["--json", "/tmp/x.txt"]).contains(".json"));
        assert!(err(&["--cron", "--randomized-delay", "1h"]).contains("systemd timers"));
        assert!(err(&["--textfile-dir", "/tmp/a\nb"]).contains("control characters"));

        std::fs::remove_file(&book).unwrap();
        assert!(err(&[]).contains("not found"));
    }
}
