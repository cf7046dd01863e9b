//! fleet: many hosts at once. Owns `--forks` (how many hosts run concurrently), connecting
//! each host with its admin login or, when that is refused, its bootstrap login, and keeping
//! each host's fate so that one failure never stops the others.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::inventory::Host;
use crate::transport::ssh::{self, ConnectError, ConnectOptions, SshSession};
use crate::untrusted::{PANIC_HINT, panic_error};

/// Runs `work` for every host, at most `forks` at once, and returns the results in the
/// order of `hosts`. A panic in one host's task is resumed here, after every host ended;
/// [`for_each_host_or`] turns it into that host's failure instead.
pub async fn for_each_host<T, F, Fut>(hosts: &[Host], forks: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Host) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut results = Vec::with_capacity(hosts.len());
    for r in run_tasks(hosts, forks, work).await {
        match r {
            Ok(t) => results.push(t),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
    results
}

/// [`for_each_host`], where a host whose task panicked (a bug, found by a host's odd output)
/// gets `on_panic(host, message)` as its result: that host fails, the others' results stay.
pub async fn for_each_host_or<T, F, Fut, P>(
    hosts: &[Host],
    forks: usize,
    on_panic: P,
    work: F,
) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Host) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    P: Fn(&Host, String) -> T,
{
    run_tasks(hosts, forks, work)
        .await
        .into_iter()
        .zip(hosts)
        .map(|(r, host)| match r {
            Ok(t) => t,
            Err(payload) => on_panic(host, crate::untrusted::panic_message(&*payload)),
        })
        .collect()
}

/// Each host's task, spawned at most `forks` at once; its result, or its panic's payload.
async fn run_tasks<T, F, Fut>(
    hosts: &[Host],
    forks: usize,
    work: F,
) -> Vec<Result<T, Box<dyn std::any::Any + Send>>>
where
    T: Send + 'static,
    F: Fn(Host) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(forks.max(1)));
    let mut tasks = Vec::with_capacity(hosts.len());
    for host in hosts {
        let permits = permits.clone();
        let job = work(host.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            job.await
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(|e| {
            if e.is_panic() {
                e.into_panic()
            } else {
                Box::new("the host's task was cancelled") as Box<dyn std::any::Any + Send>
            }
        }));
    }
    results
}

/// An open session and the login it used.
pub struct Connected {
    pub session: SshSession,
    pub login: String,
    /// Set when the admin login was refused and the bootstrap login was used instead.
    pub note: Option<String>,
}

/// Logs in as the host's `user`; only when that login is refused (not when the host is
/// unreachable or its key is wrong), as its `bootstrap_user`, and says so.
pub async fn connect_host(
    host: &Host,
    options: &ConnectOptions,
) -> Result<Connected, ConnectError> {
    match ssh::connect(&host.target(&host.user), options).await {
        Ok(session) => Ok(Connected {
            session,
            login: host.user.clone(),
            note: None,
        }),
        Err(ConnectError::AuthRefused { login, tried }) => match &host.bootstrap_user {
            Some(boot) if boot != &host.user => {
                let session = ssh::connect(&host.target(boot), options).await?;
                Ok(Connected {
                    session,
                    login: boot.clone(),
                    note: Some(format!(
                        "login as {} refused; logged in as bootstrap user {boot}",
                        host.user
                    )),
                })
            }
            _ => Err(ConnectError::AuthRefused { login, tried }),
        },
        Err(e) => Err(e),
    }
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::{self, HostReport, HostStatus, HostStep, RunSettings, StepStatus, StepWork};
use crate::facts::Facts;
use crate::inspect::scan::ScanParams;
use crate::inventory::Inventory;
use crate::playbook::Playbook;
use crate::resource::{ApplyContext, Verdict};
use crate::secrets::Secrets;
use crate::template::Templates;
use crate::transport::Session;
use serde_json::Value;

/// What a run needs, shared by every host.
pub struct Run {
    pub inventory: Inventory,
    pub hosts: Vec<Host>,
    pub playbook: Playbook,
    pub templates: Templates,
    pub secrets: Secrets,
    pub options: ConnectOptions,
    pub settings: RunSettings,
    pub forks: usize,
    pub progress: crate::progress::Progress,
}

/// How long `audit`'s outside probe waits for a TCP connect to a forbidden port.
const OUTSIDE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub use crate::summary::{ERROR_REPORT_LIMIT, FleetSummary, SCHEMA_VERSION};

/// One host between the phases: its connection, rendered steps and verdicts.
struct Probed {
    host: Host,
    report: HostReport,
    session: Option<SshSession>,
    become_root: bool,
    steps: Vec<HostStep>,
    handlers: Vec<HostStep>,
    verdicts: Vec<Option<Verdict>>,
    started: Instant,
}

/// Plans or applies the playbook on every host.
///
/// Phase 1, all hosts at once: connect, render (with facts if the steps use them), probe and
/// diff. If any host's input is bad (a template error, a bad parameter), the run stops there:
/// nothing is applied on any host. Phase 2 (apply only), all hosts at once: apply what differs,
/// run notified handlers, verify with a fresh probe.
pub async fn run_playbook(run: Arc<Run>) -> FleetSummary {
    let started = Instant::now();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut summary = run_passes(run).await;
    summary.bound_errors();
    summary.started = since_epoch;
    summary.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    summary
}

async fn run_passes(run: Arc<Run>) -> FleetSummary {
    if !uses_hostvars(&run) {
        return run_once(run, None).await;
    }
    // Read-only runs (the nightly drift) render with the facts cached last time, so each host
    // costs one round trip. The probe gathers every host's facts anyway: when any differs
    // from the cache, the run is made again with facts gathered first.
    if !run.settings.apply
        && let Some(cached) = cached_fleet_facts(&run)
    {
        let cached = Arc::new(cached);
        let summary = run_once(run.clone(), Some(cached.clone())).await;
        let stale: Vec<&str> = summary
            .hosts
            .iter()
            .filter(|h| {
                h.facts
                    .as_ref()
                    .is_some_and(|f| cached.facts.get(&h.name) != Some(f))
            })
            .map(|h| h.name.as_str())
            .collect();
        if stale.is_empty() {
            return summary;
        }
        tracing::info!(
            "facts changed since the cache on {}: gathering them first",
            stale.join(", ")
        );
    }
    let fleet = Arc::new(fleet_facts(&run).await);
    let first = run_once(run.clone(), Some(fleet)).await;
    // A host that made its WireGuard key in this run has peers that could not know it yet:
    // one more pass, with every host's facts gathered again, gives them the key.
    let new_keys = first.hosts.iter().flat_map(|h| &h.steps).any(|s| {
        s.status == StepStatus::Changed
            && s.resource
                .as_deref()
                .is_some_and(|r| r.starts_with("wireguard"))
            && s.changes.iter().any(|c| c.field == "private key")
    });
    if run.settings.apply && first.aborted.is_none() && new_keys {
        let fleet = Arc::new(fleet_facts(&run).await);
        let mut second = run_once(run, Some(fleet)).await;
        for (h, before) in second.hosts.iter_mut().zip(&first.hosts) {
            if before.status == HostStatus::Changed && h.status == HostStatus::InLine {
                h.status = HostStatus::Changed;
            }
            let pass = "second pass: peers' new WireGuard keys".to_string();
            h.note = Some(match h.note.take() {
                Some(n) => format!("{n}; {pass}"),
                None => pass,
            });
        }
        return second;
    }
    first
}

/// What every host knows of the others (`hostvars`): their variables and facts. The
/// connections the gathering opened stay open for the run's own probe: one SSH handshake per
/// host, whatever the number of passes over it.
struct FleetFacts {
    hostvars: Value,
    facts: HashMap<String, Facts>,
    /// Each host's connection (or why there is none), taken by its probe.
    connections: std::sync::Mutex<HashMap<String, Result<Connected, ConnectError>>>,
}

impl FleetFacts {
    fn take_connection(&self, host: &str) -> Option<Result<Connected, ConnectError>> {
        self.connections.lock().expect("not poisoned").remove(host)
    }
}

/// Whether a step (or a template it looks up) uses `hostvars`: then every host's facts are
/// gathered before any host is rendered, over one extra connection per host.
fn uses_hostvars(run: &Run) -> bool {
    let text: String = run
        .playbook
        .steps
        .iter()
        .chain(&run.playbook.handlers)
        .map(|s| {
            format!(
                "{} {}",
                s.params.to_json(),
                s.when
                    .as_ref()
                    .map(|w| w.to_json().to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    if text.contains("hostvars") {
        return true;
    }
    let lookups =
        regex::Regex::new(r#"lookup\(\s*'template'\s*,\s*'([^']+)'\s*\)|"template":"([^"]+)""#)
            .expect("valid");
    lookups.captures_iter(&text).any(|c| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .map(|m| m.as_str())
            .unwrap_or("");
        run.templates
            .source(name)
            .is_some_and(|t| t.contains("hostvars"))
    })
}

/// Connects to every host for its facts, then builds `hostvars`. A host that cannot be
/// reached lends the facts it had last time (the controller's fact cache): its WireGuard peers
/// keep it while it is down, and a drift check does not report them as drift.
async fn fleet_facts(run: &Arc<Run>) -> FleetFacts {
    let on_panic = |host: &Host, message: String| {
        let bug = ConnectError::Bug {
            message: panic_error(&message),
        };
        (host.name.clone(), None, Err(bug))
    };
    let gathered = for_each_host_or(&run.hosts, run.forks, on_panic, |host| {
        let run = run.clone();
        async move {
            let c = match connect_host(&host, &run.options).await {
                Ok(c) => c,
                Err(e) => return (host.name.clone(), None, Err(e)),
            };
            let become_root =
                run.playbook.become_root.unwrap_or(host.become_root) && c.login != "root";
            let f = engine::probe(&c.session, become_root, &[], run.settings.timeout)
                .await
                .ok()
                .map(|(f, _)| f);
            (host.name.clone(), f, Ok(c))
        }
    })
    .await;
    let cache = FactCache::new();
    let mut facts = HashMap::new();
    let mut connections = HashMap::new();
    for ((name, f, c), host) in gathered.into_iter().zip(&run.hosts) {
        if let Some(f) = f {
            cache.save(host, &f);
            facts.insert(name.clone(), f);
        }
        connections.insert(name, c);
    }
    with_hostvars(run, facts, connections)
}

/// Every host's cached facts, when the cache has them all.
fn cached_fleet_facts(run: &Run) -> Option<FleetFacts> {
    let cache = FactCache::new();
    let facts = run
        .hosts
        .iter()
        .map(|h| Some((h.name.clone(), cache.load(h)?)))
        .collect::<Option<HashMap<_, _>>>()?;
    Some(with_hostvars(run, facts, HashMap::new()))
}

/// `hostvars` of every host of the inventory (`--limit` or not): its variables, and its
/// facts as gathered, else as cached.
fn with_hostvars(
    run: &Run,
    mut facts: HashMap<String, Facts>,
    connections: HashMap<String, Result<Connected, ConnectError>>,
) -> FleetFacts {
    let cache = FactCache::new();
    let all = run.inventory.limit(&[]).unwrap_or_default();
    for host in &all {
        if !facts.contains_key(&host.name)
            && let Some(f) = cache.load(host)
        {
            tracing::info!("{}: facts from the cache", host.name);
            facts.insert(host.name.clone(), f);
        }
    }
    let mut hostvars = serde_json::Map::new();
    for host in all {
        let mut vars = engine::host_vars(
            host,
            &run.inventory,
            &run.playbook,
            &run.secrets,
            &run.templates,
        )
        .unwrap_or_default();
        vars.insert("address".into(), Value::String(host.address.clone()));
        if let Some(f) = facts.get(&host.name) {
            vars.insert(
                "facts".into(),
                serde_json::to_value(f).expect("facts serialize"),
            );
        }
        hostvars.insert(host.name.clone(), Value::Object(vars));
    }
    FleetFacts {
        hostvars: Value::Object(hostvars),
        facts,
        connections: std::sync::Mutex::new(connections),
    }
}

/// The controller's cache of each host's last facts, for `hostvars` of hosts that are down:
/// `$XDG_CACHE_HOME/rampart/facts/` (or `~/.cache/...`), one JSON file per host and address.
/// Facts hold no secret (WireGuard public keys, the OS); a cache that cannot be written or
/// read is skipped.
struct FactCache(Option<PathBuf>);

impl FactCache {
    fn new() -> FactCache {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        FactCache(base.map(|b| b.join("rampart/facts")))
    }

    fn path(&self, host: &Host) -> Option<PathBuf> {
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        Some(self.0.as_ref()?.join(format!(
            "{}@{}_{}.json",
            safe(&host.name),
            safe(&host.address),
            host.port
        )))
    }

    fn save(&self, host: &Host, facts: &Facts) {
        let Some(path) = self.path(host) else { return };
        let write = || -> std::io::Result<()> {
            crate::localfs::create_private_dir_all(path.parent().expect("in the cache folder"))?;
            crate::localfs::write_atomically(&path, &serde_json::to_vec(facts)?)
        };
        if let Err(e) = write() {
            tracing::debug!("cannot cache the facts of {}: {e}", host.name);
        }
    }

    fn load(&self, host: &Host) -> Option<Facts> {
        let text = std::fs::read(self.path(host)?).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

async fn run_once(run: Arc<Run>, fleet: Option<Arc<FleetFacts>>) -> FleetSummary {
    let mode = run.settings.mode();
    let probe_panicked = |host: &Host, message: String| {
        run.progress.done(run.progress.host(&host.name), "failed");
        let mut report = HostReport::new(host);
        report.fail(
            HostStatus::Failed,
            panic_error(&message),
            Some(PANIC_HINT.into()),
        );
        Probed {
            host: host.clone(),
            report,
            session: None,
            become_root: false,
            steps: Vec::new(),
            handlers: Vec::new(),
            verdicts: Vec::new(),
            started: Instant::now(),
        }
    };
    let probed = for_each_host_or(&run.hosts, run.forks, probe_panicked, |host| {
        let run = run.clone();
        let fleet = fleet.clone();
        async move {
            let line = run.progress.host(&host.name);
            let p = probe_host(&run, host, &line, fleet.as_deref()).await;
            let outcome = status_word(p.report.status);
            if run.settings.apply && p.report.status == HostStatus::Differs {
                // Counted when its apply ends.
                run.progress.pause(line);
            } else {
                run.progress.done(line, outcome);
            }
            p
        }
    })
    .await;

    let bad_input: Vec<String> = probed
        .iter()
        .filter(|p| {
            p.report.status == HostStatus::Failed && p.report.hint.as_deref() == Some(INPUT_HINT)
        })
        .map(|p| p.report.name.clone())
        .collect();
    if !run.settings.apply || !bad_input.is_empty() {
        let aborted = (!bad_input.is_empty()).then(|| {
            format!(
                "bad input for {}: nothing was applied on any host",
                bad_input.join(", ")
            )
        });
        let hosts = close_all(probed).await;
        run.progress.finish();
        return FleetSummary {
            schema_version: SCHEMA_VERSION,
            run_id: run.settings.run_id.clone(),
            mode,
            started: 0,
            seconds: 0.0,
            hosts,
            aborted,
        };
    }

    let slots: Vec<Arc<tokio::sync::Mutex<Option<Probed>>>> = probed
        .into_iter()
        .map(|p| Arc::new(tokio::sync::Mutex::new(Some(p))))
        .collect();
    let slots = Arc::new(slots);
    let apply_panicked = |host: &Host, message: String| {
        let mut report = HostReport::new(host);
        report.fail(
            HostStatus::Failed,
            panic_error(&message),
            Some(PANIC_HINT.into()),
        );
        report
    };
    let reports = for_each_host_or(&run.hosts, run.forks, apply_panicked, |host| {
        let run = run.clone();
        let slots = slots.clone();
        let i = run
            .hosts
            .iter()
            .position(|h| h.name == host.name)
            .expect("known host");
        async move {
            let probed = slots[i].lock().await.take().expect("each host once");
            let line = (probed.report.status == HostStatus::Differs)
                .then(|| run.progress.host(&host.name));
            if let Some(line) = &line {
                run.progress.phase(line, "applying");
            }
            let report = apply_host(&run, probed).await;
            if let Some(line) = line {
                run.progress
                    .done(line, &format!("{:?}", report.status).to_lowercase());
            }
            report
        }
    })
    .await;
    run.progress.finish();
    FleetSummary {
        schema_version: SCHEMA_VERSION,
        run_id: run.settings.run_id.clone(),
        mode,
        started: 0,
        seconds: 0.0,
        hosts: reports,
        aborted: None,
    }
}

/// A host's fate in a progress line.
fn status_word(status: HostStatus) -> &'static str {
    match status {
        HostStatus::InLine => "in line",
        HostStatus::Differs => "differs",
        HostStatus::Changed => "changed",
        HostStatus::Failed => "failed",
        HostStatus::Unreachable => "unreachable",
    }
}

/// Marks a host whose failure is bad input (not the host's fault).
const INPUT_HINT: &str = "fix the playbook or inventory: nothing was applied on any host";

async fn probe_host(
    run: &Run,
    host: Host,
    line: &crate::progress::HostLine,
    fleet: Option<&FleetFacts>,
) -> Probed {
    let started = Instant::now();
    let mut p = Probed {
        host: host.clone(),
        report: HostReport::new(&host),
        session: None,
        become_root: run.playbook.become_root.unwrap_or(host.become_root),
        steps: Vec::new(),
        handlers: Vec::new(),
        verdicts: Vec::new(),
        started,
    };
    let settings = &run.settings;
    let vars = match engine::host_vars(
        &host,
        &run.inventory,
        &run.playbook,
        &run.secrets,
        &run.templates,
    ) {
        Ok(v) => v,
        Err(e) => {
            p.report
                .fail(HostStatus::Failed, e, Some(INPUT_HINT.into()));
            return p;
        }
    };
    let mut vars = vars;
    if let Some(f) = fleet {
        vars.insert("hostvars".into(), f.hostvars.clone());
    }
    // Render before connecting: bad input is found without touching any host.
    let render = |facts: Option<&crate::facts::Facts>| {
        let steps = engine::render_steps(
            &run.playbook.steps,
            &run.templates,
            &run.secrets,
            &vars,
            facts,
            settings,
        )?;
        let handlers = engine::render_steps(
            &run.playbook.handlers,
            &run.templates,
            &run.secrets,
            &vars,
            facts,
            settings,
        )?;
        Ok::<_, engine::RenderFailure>((steps, handlers))
    };
    let own_facts = fleet.and_then(|f| f.facts.get(&host.name));
    let mut rendered = match render(own_facts) {
        Ok(r) => Some(r),
        Err(e) if e.needs_facts => None,
        Err(e) => {
            p.report
                .fail(HostStatus::Failed, e.message, Some(INPUT_HINT.into()));
            return p;
        }
    };
    run.progress.phase(line, "connecting");
    let connection = match fleet.and_then(|f| f.take_connection(&host.name)) {
        Some(c) => c,
        None => connect_host(&host, &run.options).await,
    };
    let connected = match connection {
        Ok(c) => c,
        Err(e) => {
            let status = if e.kind() == "unreachable" {
                HostStatus::Unreachable
            } else {
                HostStatus::Failed
            };
            p.report.fail(status, e.to_string(), e.hint());
            return p;
        }
    };
    p.report.login = Some(connected.login.clone());
    // root needs no sudo: the bootstrap login of a fresh host is usually root.
    p.become_root = p.become_root && connected.login != "root";
    p.report.note = connected.note.clone();
    let session = connected.session;
    if rendered.is_none() {
        // The steps use facts: one more round trip, for this host only.
        match engine::probe(&session, p.become_root, &[], settings.timeout).await {
            Ok((facts, _)) => match render(Some(&facts)) {
                Ok(r) => rendered = Some(r),
                Err(e) => {
                    p.report
                        .fail(HostStatus::Failed, e.message, Some(INPUT_HINT.into()));
                    p.session = Some(session);
                    return p;
                }
            },
            Err(e) => {
                p.report.fail(HostStatus::Failed, e, None);
                p.session = Some(session);
                return p;
            }
        }
    }
    let (steps, handlers) = rendered.expect("rendered above");
    let scan = match settings.inspect {
        None => None,
        Some(kind) => match ScanParams::from_vars(&vars) {
            Ok(mut params) => {
                params.openclaw_audit = kind == crate::inspect::Kind::Audit;
                params.managed_paths = steps
                    .iter()
                    .filter_map(|s| match &s.work {
                        StepWork::Run(r) => r.fs_path().map(String::from),
                        StepWork::Skip(_) => None,
                    })
                    .collect();
                let marker = format!("@@{}", engine::nonce());
                let script = params.script(&marker);
                Some((params, marker, script))
            }
            Err(e) => {
                p.report
                    .fail(HostStatus::Failed, e, Some(INPUT_HINT.into()));
                p.session = Some(session);
                return p;
            }
        },
    };
    run.progress.phase(line, "probing");
    let probed = engine::probe_with_scan(
        &session,
        p.become_root,
        &steps,
        scan.as_ref().map(|(_, _, script)| script),
        settings.timeout,
    )
    .await;
    match probed {
        Err(e) => p.report.fail(HostStatus::Failed, e, None),
        Ok((facts, verdicts, scanned)) => {
            if let Some((params, marker, _)) = &scan {
                match scanned {
                    None => {
                        p.report
                            .fail(HostStatus::Failed, "the scan did not run".into(), None);
                    }
                    Some(text) => {
                        let obs = crate::inspect::scan::parse(marker, &text);
                        let findings = crate::inspect::findings::findings(&obs, params);
                        if settings.inspect == Some(crate::inspect::Kind::Audit) {
                            run.progress.phase(line, "outside probe");
                            let outside = crate::inspect::checks::outside_probe(
                                &host.address,
                                &params.forbidden_ports,
                                OUTSIDE_PROBE_TIMEOUT,
                            )
                            .await;
                            p.report.checks = crate::inspect::checks::checks(
                                &obs,
                                params,
                                &facts,
                                &findings,
                                Some(&outside),
                            );
                        }
                        p.report.findings = findings;
                    }
                }
            }
            p.report.facts = Some(facts);
            let mut differs = false;
            let mut failed = false;
            for (step, verdict) in steps.iter().zip(&verdicts) {
                let (status, v) = match (&step.work, verdict) {
                    (StepWork::Skip(reason), _) => (StepStatus::Skipped(reason.clone()), None),
                    (_, Some(Ok(v))) if v.is_in_line() => (StepStatus::InLine, Some(v.clone())),
                    (_, Some(Ok(v))) => {
                        differs = true;
                        (StepStatus::Differs, Some(v.clone()))
                    }
                    (_, Some(Err(e))) => {
                        failed = true;
                        (StepStatus::Failed(e.clone()), None)
                    }
                    (_, None) => (StepStatus::NotRun, None),
                };
                p.report
                    .steps
                    .push(engine::step_report(step, status, v.as_ref()));
                p.verdicts.push(v);
            }
            p.report.status = if failed || p.report.status == HostStatus::Failed {
                p.report.error = Some("a step's probe failed".into());
                HostStatus::Failed
            } else if differs {
                HostStatus::Differs
            } else {
                HostStatus::InLine
            };
        }
    }
    p.steps = steps;
    p.handlers = handlers;
    p.session = Some(session);
    p
}

async fn apply_host(run: &Run, mut p: Probed) -> HostReport {
    let Some(session) = p.session.take() else {
        return finish(p.report, p.started, None).0;
    };
    if p.report.status != HostStatus::Differs {
        return finish(p.report, p.started, Some(session))
            .await_close()
            .await;
    }
    let mut ctx = ApplyContext::new(run.settings.run_id.clone());
    ctx.deadman_seconds = run.settings.deadman_seconds;
    ctx.keep_backups = run.settings.keep_backups_for(&p.host);
    // Handlers run when a step that notifies them changes.
    let run_handler: Vec<bool> = p
        .handlers
        .iter()
        .map(|h| {
            p.steps.iter().zip(&p.verdicts).any(|(s, v)| {
                s.notify.contains(&h.name) && v.as_ref().is_some_and(|v| !v.is_in_line())
            })
        })
        .collect();
    let timeout = run.settings.timeout;
    // Risky changes are confirmed midway, each within the switch's time of its own change:
    // the watcher sees the script's `armed` marker and confirms over a new connection while
    // the script waits; the steps after it may then take as long as they need.
    let any_risky = p.steps.iter().zip(&p.verdicts).any(|(s, v)| {
        (s.risky || matches!(&s.work, StepWork::Run(r) if r.risky()))
            && v.as_ref().is_some_and(|v| !v.is_in_line())
    });
    let (seen, mut watched) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let nonce = engine::nonce();
    let midway = any_risky.then(|| engine::Midway {
        nonce: nonce.clone(),
        seen,
    });
    let watcher = async {
        // (step, what the confirmation said) for each risky step, in order.
        let mut confirmations: Vec<(usize, Confirmation)> = Vec::new();
        let mut line = Vec::new();
        while let Some(chunk) = watched.recv().await {
            for byte in chunk {
                if byte != b'\n' {
                    // A marker is short: a longer line is step output, not kept whole.
                    if line.len() < 256 {
                        line.push(byte);
                    }
                    continue;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if let Some(i) = engine::armed_step(&nonce, &text) {
                    let result = confirm(run, &p.host, &ctx).await;
                    confirmations.push((i, result));
                }
            }
        }
        confirmations
    };
    let applying = engine::apply_with(
        &session,
        p.become_root,
        engine::ApplyWork {
            steps: &p.steps,
            verdicts: &p.verdicts,
            handlers: &p.handlers,
            run_handler: &run_handler,
        },
        &ctx,
        timeout,
        midway,
    );
    let (applied, confirmations) = tokio::join!(applying, watcher);
    // The last good confirmation's connection serves the verify; a lost one decides the host.
    let mut midway_fresh: Option<(SshSession, bool)> = None;
    let mut midway_lost: Option<(usize, String)> = None;
    let mut confirmed_upto: Option<usize> = None;
    for (i, result) in confirmations {
        match result {
            Ok(fresh) => {
                if let Some((old, _)) = midway_fresh.replace(fresh) {
                    old.close().await;
                }
                confirmed_upto = Some(i);
            }
            Err(e) => {
                if midway_lost.is_none() {
                    midway_lost = Some((i, e));
                }
            }
        }
    }
    match applied {
        Err(e) => {
            // The apply's own connection failed (a firewall change can do that): a risky step
            // that was to change still decides by the confirmation over a new connection.
            p.report.fail(HostStatus::Failed, e, None);
            if let Some((fresh, _)) = midway_fresh {
                fresh.close().await;
            }
            if let Some((_, lost)) = midway_lost {
                p.report.error = Some(format!(
                    "rolled back: lost access: {lost}; the host restores the previous state {} s after the change",
                    ctx.deadman_seconds
                ));
                p.report.note = Some(after_rollback(run, &p.host, &ctx).await);
            } else if any_risky {
                match confirm(run, &p.host, &ctx).await {
                    Ok((fresh, _)) => {
                        p.report.note =
                            Some("the risky change was confirmed over a new connection".into());
                        fresh.close().await;
                    }
                    Err(lost) => {
                        p.report.error = Some(format!(
                            "rolled back: lost access: {lost}; the host restores the previous state {} s after the change",
                            ctx.deadman_seconds
                        ));
                        p.report.note = Some(after_rollback(run, &p.host, &ctx).await);
                    }
                }
            }
        }
        Ok((done, handlers_done)) => {
            let mut failed = false;
            for (i, result) in done.iter().enumerate() {
                let report = &mut p.report.steps[i];
                match result {
                    Some(Ok(())) => report.status = StepStatus::Changed,
                    Some(Err(e)) => {
                        failed = true;
                        report.status = StepStatus::Failed(format!("apply failed: {e}"));
                    }
                    None if report.status == StepStatus::Differs => {
                        report.status = StepStatus::NotRun
                    }
                    None => {}
                }
            }
            for (j, result) in handlers_done.iter().enumerate() {
                if let Some(result) = result {
                    let status = match result {
                        Ok(()) => StepStatus::Changed,
                        Err(e) => {
                            failed = true;
                            StepStatus::Failed(format!("handler failed: {e}"))
                        }
                    };
                    p.report
                        .handlers
                        .push(engine::step_report(&p.handlers[j], status, None));
                }
            }
            // A change that can cut us off is confirmed over a NEW connection, which disarms
            // the host's dead-man switch; without it the host restores itself.
            let risky: Vec<usize> = p
                .steps
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    (s.risky || matches!(&s.work, StepWork::Run(r) if r.risky()))
                        && matches!(
                            p.report.steps[*i].status,
                            StepStatus::Changed | StepStatus::Failed(_)
                        )
                })
                .map(|(i, _)| i)
                .collect();
            // Those confirmed midway are done; a risky step that failed before its marker (or
            // a lost midway confirmation) still decides here.
            let after_confirmed = |i: &usize| confirmed_upto.is_none_or(|c| *i > c);
            let mut confirmed = midway_fresh;
            let lost = match midway_lost {
                Some((upto, e)) => Some((Some(upto), e)),
                None if risky.iter().any(after_confirmed) => {
                    match confirm(run, &p.host, &ctx).await {
                        Ok(fresh) => {
                            if let Some((old, _)) = confirmed.replace(fresh) {
                                old.close().await;
                            }
                            None
                        }
                        Err(e) => Some((None, e)),
                    }
                }
                None => None,
            };
            if let Some((upto, e)) = lost {
                failed = true;
                if let Some((old, _)) = confirmed.take() {
                    old.close().await;
                }
                for &i in risky
                    .iter()
                    .filter(|i| after_confirmed(i) && upto.is_none_or(|u| **i <= u))
                {
                    p.report.steps[i].status =
                        StepStatus::Failed(format!("rolled back: lost access: {e}"));
                }
                p.report.fail(
                    HostStatus::Failed,
                    format!(
                        "rolled back: lost access after a risky change; the host restores the previous state {} s after the change",
                        ctx.deadman_seconds
                    ),
                    None,
                );
                p.report.note = Some(after_rollback(run, &p.host, &ctx).await);
            }
            if failed {
                if p.report.error.is_none() {
                    p.report.status = HostStatus::Failed;
                    p.report.error = Some("a step failed; the steps after it did not run".into());
                }
            } else if let Some((fresh, become_root)) = &confirmed {
                // The new login may differ from the old (root closed, admin now): so may sudo.
                p.become_root = *become_root;
                verify(fresh, &mut p, timeout).await;
            } else {
                verify(&session, &mut p, timeout).await;
            }
            if let Some((fresh, _)) = confirmed {
                fresh.close().await;
            }
        }
    }
    finish(p.report, p.started, Some(session))
        .await_close()
        .await
}

/// A confirming connection and whether it uses sudo, or why there is none.
type Confirmation = Result<(SshSession, bool), String>;

/// Opens a NEW connection (the same logins as any connection of the run) and disarms the
/// run's dead-man switches over it. The new session is returned for the verify probe.
///
/// A refused or timed-out connection is retried for a while within the switch's time (sshd
/// re-executes itself on reload and is briefly away); a refused login or a wrong host key is
/// final.
async fn confirm(run: &Run, host: &Host, ctx: &ApplyContext) -> Confirmation {
    let deadline =
        Instant::now() + std::time::Duration::from_secs(u64::from(ctx.deadman_seconds) / 2);
    let connected = loop {
        match connect_host(host, &run.options).await {
            Ok(c) => break c,
            Err(e) if e.kind() == "unreachable" && Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let become_root =
        run.playbook.become_root.unwrap_or(host.become_root) && connected.login != "root";
    let script = crate::resource::deadman_disarm(ctx)
        .render()
        .map_err(|e| e.to_string())?;
    let out = connected
        .session
        .exec(
            &crate::remote::exec_command(become_root),
            script.as_bytes(),
            run.settings.timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(late) = text.lines().find(|l| l.starts_with("too late:")) {
        return Err(format!(
            "the dead-man switch fired before the confirmation arrived ({}); the host restored the previous state",
            late.trim_start_matches("too late:").trim()
        ));
    }
    if !out.success() || !text.contains("disarmed") {
        return Err(format!(
            "could not disarm the dead-man switch: {}\n{}",
            out.status_text(),
            out.stderr_block()
        ));
    }
    Ok((connected.session, become_root))
}

/// After a lost confirmation: waits until the host has run its restore (the run's switches are
/// gone), then says whether access is back.
async fn after_rollback(run: &Run, host: &Host, ctx: &ApplyContext) -> String {
    let dir = crate::resource::deadman_dir(ctx);
    let check = crate::remote::Script::new()
        .raw("for f in ")
        .arg(&dir)
        .raw("/*.armed; do [ -e \"$f\" ] && { echo armed; exit 0; }; done; echo restored\n");
    let check = check.render().unwrap_or_default();
    let give_up =
        Instant::now() + std::time::Duration::from_secs(u64::from(ctx.deadman_seconds) + 60);
    tokio::time::sleep(std::time::Duration::from_secs(u64::from(
        ctx.deadman_seconds,
    )))
    .await;
    while Instant::now() < give_up {
        if let Ok(c) = connect_host(host, &run.options).await {
            let become_root =
                run.playbook.become_root.unwrap_or(host.become_root) && c.login != "root";
            let out = c
                .session
                .exec(
                    &crate::remote::exec_command(become_root),
                    check.as_bytes(),
                    run.settings.timeout,
                )
                .await;
            c.session.close().await;
            if let Ok(out) = out
                && String::from_utf8_lossy(&out.stdout).contains("restored")
            {
                return "the host restored the previous state; access is back".to_string();
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    "the host is still unreachable (or not restored) after its restore time".to_string()
}

/// The verify probe: every changed step must now be in line ("not idempotent" otherwise).
async fn verify(session: &SshSession, p: &mut Probed, timeout: std::time::Duration) {
    match engine::probe(session, p.become_root, &p.steps, timeout).await {
        Err(e) => p
            .report
            .fail(HostStatus::Failed, format!("verify probe: {e}"), None),
        Ok((_, verdicts)) => {
            let mut failed = false;
            for (i, v) in verdicts.iter().enumerate() {
                if p.report.steps[i].status != StepStatus::Changed {
                    continue;
                }
                match v {
                    Some(Ok(v)) if v.is_in_line() => {}
                    Some(Ok(v)) => {
                        failed = true;
                        let fields: Vec<&str> =
                            v.changes().iter().map(|c| c.field.as_str()).collect();
                        p.report.steps[i].status = StepStatus::Failed(format!(
                            "not idempotent: still differs after apply ({})",
                            fields.join(", ")
                        ));
                    }
                    Some(Err(e)) => {
                        failed = true;
                        p.report.steps[i].status = StepStatus::Failed(format!("verify probe: {e}"));
                    }
                    None => {}
                }
            }
            p.report.status = if failed || p.report.status == HostStatus::Failed {
                HostStatus::Failed
            } else {
                HostStatus::Changed
            };
            if failed {
                p.report.error = Some("a step still differs after its apply".into());
            }
        }
    }
}

/// A report with its time and stats, waiting for its session to close.
struct Finished(HostReport, Option<SshSession>);

impl Finished {
    async fn await_close(self) -> HostReport {
        if let Some(s) = self.1 {
            s.close().await;
        }
        self.0
    }
}

fn finish(mut report: HostReport, started: Instant, session: Option<SshSession>) -> Finished {
    if let Some(s) = &session {
        report.stats = s.stats().snapshot();
    }
    report.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Finished(report, session)
}

async fn close_all(probed: Vec<Probed>) -> Vec<HostReport> {
    let mut out = Vec::new();
    for p in probed {
        out.push(finish(p.report, p.started, p.session).await_close().await);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_one_hosts_task_fails_that_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(&path, "all:\n  hosts:\n    a: {}\n    b: {}\n    c: {}\n").unwrap();
        let inv = Inventory::load(&path).unwrap();
        let hosts: Vec<Host> = inv.limit(&[]).unwrap().into_iter().cloned().collect();
        let results = for_each_host_or(
            &hosts,
            2,
            |h, message| format!("{} failed: {message}", h.name),
            |h| async move {
                if h.name == "b" {
                    let blob = "AAAAAAAAAAAé€€€€€€€€€€€€€€€€\u{1b}[2J";
                    // The slicing bug of issue 9, item 6.
                    let cut = &blob[..12];
                    return cut.to_string();
                }
                format!("{} ok", h.name)
            },
        )
        .await;
        assert_eq!(results[0], "a ok");
        assert_eq!(results[2], "c ok");
        assert!(
            results[1].starts_with("b failed: end byte index 12 is not a char boundary"),
            "{}",
            results[1]
        );
        // The panic's message quotes the text: shown escaped.
        assert!(results[1].contains("\\x1b[2J"), "{}", results[1]);
    }

    #[test]
    fn error_texts_in_a_report_are_bounded() {
        let report = HostReport {
            name: "h".into(),
            address: "h:22".into(),
            status: HostStatus::Failed,
            error: Some("é".repeat(ERROR_REPORT_LIMIT)),
            hint: None,
            login: None,
            note: None,
            steps: vec![],
            handlers: vec![],
            findings: vec![],
            checks: vec![],
            facts: None,
            stats: Default::default(),
            seconds: 0.0,
        };
        let mut summary = FleetSummary {
            schema_version: SCHEMA_VERSION,
            run_id: "r".into(),
            mode: "plan",
            started: 0,
            seconds: 0.0,
            hosts: vec![report],
            aborted: None,
        };
        summary.bound_errors();
        let e = summary.hosts[0].error.as_deref().unwrap();
        assert!(e.len() < ERROR_REPORT_LIMIT + 64, "{}", e.len());
        assert!(
            e.ends_with(&format!("… {} bytes more", ERROR_REPORT_LIMIT)),
            "{e}"
        );
    }
}
