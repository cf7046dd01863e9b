//! fleet: the dispatcher of many hosts. Owns `--forks` (how many hosts run concurrently), the
//! rule that nothing is applied anywhere while any host's input is bad, the passes over the
//! fleet (`hostvars` gathered first, the WireGuard second pass), and each host's fate, so that
//! one failure (a panic included) never stops the others. One host's own pipeline is
//! [`crate::engine::host`].

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use std::time::Instant;

use crate::connector::{Connected, Connector};
use crate::engine::RunSettings;
use crate::engine::host::{self, HostJob, Known, Probed};
use crate::event::{EventSink, HostEvent};
use crate::hostvars::{self, FleetFacts};
use crate::inventory::{Host, Inventory};
use crate::playbook::Playbook;
use crate::secrets::Secrets;
use crate::summary::{HostReport, HostStatus, StepStatus};
use crate::template::Templates;
use crate::transport::ssh::{ConnectError, ConnectOptions, SshSession};
use crate::untrusted::{PANIC_HINT, panic_error};

pub use crate::connector::connect_host;
pub use crate::summary::{ERROR_REPORT_LIMIT, FleetSummary, SCHEMA_VERSION};

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

impl Run {
    /// One host's view of the run, connecting with `connector` and reporting to `events`.
    fn job<'a, C>(&'a self, connector: &'a C, events: &'a dyn EventSink) -> HostJob<'a, C> {
        HostJob {
            inventory: &self.inventory,
            playbook: &self.playbook,
            templates: &self.templates,
            secrets: &self.secrets,
            settings: &self.settings,
            connector,
            events,
        }
    }
}

/// The run's own connector: SSH with the run's options.
struct RunSsh(Arc<Run>);

impl Connector for RunSsh {
    type Session = SshSession;

    async fn connect(&self, host: &Host) -> Result<Connected<SshSession>, ConnectError> {
        connect_host(host, &self.0.options).await
    }

    async fn close(&self, session: SshSession) {
        session.close().await
    }
}

/// Plans or applies the playbook on every host.
///
/// Phase 1, all hosts at once: connect, render (with facts if the steps use them), probe and
/// diff. If any host's input is bad (a template error, a bad parameter), the run stops there:
/// nothing is applied on any host. Phase 2 (apply only), all hosts at once: apply what differs,
/// run notified handlers, verify with a fresh probe.
pub async fn run_playbook(run: Arc<Run>) -> FleetSummary {
    let connector = Arc::new(RunSsh(run.clone()));
    let events: Arc<dyn EventSink> = Arc::new(run.progress.clone());
    run_playbook_with(run, connector, events).await
}

/// [`run_playbook`] over any connector, with events to any sink.
pub async fn run_playbook_with<C: Connector + 'static>(
    run: Arc<Run>,
    connector: Arc<C>,
    events: Arc<dyn EventSink>,
) -> FleetSummary {
    let started = Instant::now();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut summary = run_passes(Pass {
        run,
        connector,
        events,
    })
    .await;
    summary.bound_errors();
    summary.started = since_epoch;
    summary.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    summary
}

/// What every pass over the fleet shares.
struct Pass<C> {
    run: Arc<Run>,
    connector: Arc<C>,
    events: Arc<dyn EventSink>,
}

async fn run_passes<C: Connector + 'static>(pass: Pass<C>) -> FleetSummary {
    let run = &pass.run;
    if !hostvars::uses_hostvars(run) {
        return run_once(&pass, None).await;
    }
    // Read-only runs (the nightly drift) render with the facts cached last time, so each host
    // costs one round trip. The probe gathers every host's facts anyway: when any differs
    // from the cache, the run is made again with facts gathered first.
    if !run.settings.apply
        && let Some(cached) = hostvars::cached(run)
    {
        let cached = Arc::new(cached);
        let summary = run_once(&pass, Some(cached.clone())).await;
        let stale: Vec<&str> = summary
            .hosts
            .iter()
            .filter(|h| {
                h.facts
                    .as_ref()
                    .is_some_and(|f| cached.facts(&h.name) != Some(f))
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
    let fleet = Arc::new(hostvars::gather(run, &pass.connector).await);
    let first = run_once(&pass, Some(fleet)).await;
    // A host that made its WireGuard key in this run has peers that could not know it yet:
    // one more pass, with every host's facts gathered again, gives them the key.
    if run.settings.apply && first.aborted.is_none() && made_wireguard_keys(&first) {
        let fleet = Arc::new(hostvars::gather(run, &pass.connector).await);
        let second = run_once(&pass, Some(fleet)).await;
        return second_pass(first, second);
    }
    first
}

/// Whether a host made its WireGuard private key in this run.
fn made_wireguard_keys(summary: &FleetSummary) -> bool {
    summary.hosts.iter().flat_map(|h| &h.steps).any(|s| {
        s.status == StepStatus::Changed
            && s.resource
                .as_deref()
                .is_some_and(|r| r.starts_with("wireguard"))
            && s.changes.iter().any(|c| c.field == "private key")
    })
}

/// The second pass's summary, where a host changed by the first pass stays changed.
fn second_pass(first: FleetSummary, mut second: FleetSummary) -> FleetSummary {
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
    second
}

/// A host's report when its task panicked (a bug, found by a host's odd output).
fn panicked(host: &Host, message: &str) -> HostReport {
    let mut report = HostReport::new(host);
    report.fail(
        HostStatus::Failed,
        panic_error(message),
        Some(PANIC_HINT.into()),
    );
    report
}

/// A probed host, taken once by its apply task.
type Slot<S> = Arc<tokio::sync::Mutex<Option<Probed<S>>>>;

/// One pass: every host probed; then, unless the run only looks or any host's input is bad,
/// every host applied.
async fn run_once<C: Connector + 'static>(
    pass: &Pass<C>,
    fleet: Option<Arc<FleetFacts<C::Session>>>,
) -> FleetSummary {
    let run = &pass.run;
    let probed = probe_all(pass, fleet).await;
    let summary = |hosts, aborted| FleetSummary {
        schema_version: SCHEMA_VERSION,
        run_id: run.settings.run_id.clone(),
        mode: run.settings.mode(),
        started: 0,
        seconds: 0.0,
        hosts,
        aborted,
    };

    let bad_input: Vec<String> = probed
        .iter()
        .filter(|p| p.bad_input())
        .map(|p| p.report().name.clone())
        .collect();
    if !run.settings.apply || !bad_input.is_empty() {
        let aborted = (!bad_input.is_empty()).then(|| {
            format!(
                "bad input for {}: nothing was applied on any host",
                bad_input.join(", ")
            )
        });
        let mut hosts = Vec::new();
        for p in probed {
            hosts.push(host::close(&*pass.connector, p).await);
        }
        pass.events.pass_finished();
        return summary(hosts, aborted);
    }

    let reports = apply_all(pass, probed).await;
    pass.events.pass_finished();
    summary(reports, None)
}

/// Every host probed, at most `forks` at once.
async fn probe_all<C: Connector + 'static>(
    pass: &Pass<C>,
    fleet: Option<Arc<FleetFacts<C::Session>>>,
) -> Vec<Probed<C::Session>> {
    let run = &pass.run;
    let probe_panicked = |host: &Host, message: String| {
        let report = panicked(host, &message);
        pass.events.event(
            &host.name,
            HostEvent::Probed {
                status: report.status,
                applies: false,
            },
        );
        Probed::lost(host, report)
    };
    for_each_host_or(&run.hosts, run.forks, probe_panicked, |host| {
        let run = run.clone();
        let fleet = fleet.clone();
        let connector = pass.connector.clone();
        let events = pass.events.clone();
        async move {
            let known = match &fleet {
                Some(f) => f.known(&host.name),
                None => Known::nothing(),
            };
            host::probe_host(&run.job(&*connector, &*events), host, known).await
        }
    })
    .await
}

/// Every probed host applied (those that differ), at most `forks` at once.
async fn apply_all<C: Connector + 'static>(
    pass: &Pass<C>,
    probed: Vec<Probed<C::Session>>,
) -> Vec<HostReport> {
    let run = &pass.run;
    let slots: Vec<Slot<C::Session>> = probed
        .into_iter()
        .map(|p| Arc::new(tokio::sync::Mutex::new(Some(p))))
        .collect();
    let slots = Arc::new(slots);
    let apply_panicked = |host: &Host, message: String| panicked(host, &message);
    for_each_host_or(&run.hosts, run.forks, apply_panicked, |host| {
        let run = run.clone();
        let slots = slots.clone();
        let connector = pass.connector.clone();
        let events = pass.events.clone();
        let i = run
            .hosts
            .iter()
            .position(|h| h.name == host.name)
            .expect("known host");
        async move {
            let probed = slots[i].lock().await.take().expect("each host once");
            host::apply_host(&run.job(&*connector, &*events), probed).await
        }
    })
    .await
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

    fn run_of(inventory: Inventory, hosts: Vec<Host>, playbook: Playbook, apply: bool) -> Run {
        let dir = std::env::temp_dir();
        Run {
            progress: crate::progress::Progress::new(hosts.len(), true),
            inventory,
            hosts,
            playbook,
            templates: Templates::new(vec![]),
            secrets: Secrets::default(),
            options: ConnectOptions::new(
                dir.join("no-known-hosts"),
                false,
                std::time::Duration::from_secs(1),
            ),
            settings: crate::testkit::settings(apply, &crate::testkit::run_id("fleet")),
            forks: 4,
        }
    }

    #[tokio::test]
    async fn one_hosts_bad_input_means_nothing_is_applied_on_any_host() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // `b` has no `dir`: its step cannot render (undefined variables are errors).
        let (inventory, hosts, book) = crate::testkit::load(
            dir.path(),
            &format!("all:\n  hosts:\n    a:\n      dir: '{d}'\n    b: {{}}\n"),
            "steps:\n  - command: {run: 'touch {{ dir }}/{{ inventory_hostname }}', creates: '{{ dir }}/{{ inventory_hostname }}'}\n",
        );
        let connector = Arc::new(crate::testkit::LocalConnector::new(dir.path()));
        let events = Arc::new(crate::event::Recorded::default());
        let summary = run_playbook_with(
            Arc::new(run_of(inventory, hosts, book, true)),
            connector.clone(),
            events.clone(),
        )
        .await;
        assert_eq!(
            summary.aborted.as_deref(),
            Some("bad input for b: nothing was applied on any host")
        );
        let a = &summary.hosts[0];
        let b = &summary.hosts[1];
        assert_eq!((a.name.as_str(), b.name.as_str()), ("a", "b"));
        // `a` was probed (it differs) and left alone.
        assert_eq!(a.status, HostStatus::Differs, "{a:?}");
        assert!(!dir.path().join("a").exists());
        assert!(!events.of("a").contains(&HostEvent::Applying));
        // `b` failed on its input before any connection.
        assert_eq!(b.status, HostStatus::Failed);
        assert_eq!(b.hint.as_deref(), Some(host::INPUT_HINT));
        assert!(
            b.error.as_deref().is_some_and(|e| e.contains("dir")),
            "{b:?}"
        );
        assert_eq!(connector.calls("b"), 0);
        assert_eq!(connector.calls("a"), 1);
        assert_eq!(summary.outcome(), crate::exit::Outcome::Failed);
    }

    #[tokio::test]
    async fn with_good_input_every_host_is_applied_and_plan_applies_none() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let load = || {
            crate::testkit::load(
                dir.path(),
                &format!("all:\n  vars:\n    dir: '{d}'\n  hosts:\n    a: {{}}\n    b: {{}}\n"),
                "steps:\n  - command: {run: 'touch {{ dir }}/{{ inventory_hostname }}', creates: '{{ dir }}/{{ inventory_hostname }}'}\n",
            )
        };
        let (inventory, hosts, book) = load();
        let connector = Arc::new(crate::testkit::LocalConnector::new(dir.path()));
        let events: Arc<dyn EventSink> = Arc::new(crate::event::NoEvents);
        let plan = run_of(inventory, hosts, book, false);
        let summary = run_playbook_with(Arc::new(plan), connector.clone(), events.clone()).await;
        assert_eq!(summary.mode, "plan");
        assert!(
            summary
                .hosts
                .iter()
                .all(|h| h.status == HostStatus::Differs)
        );
        assert_eq!(summary.outcome(), crate::exit::Outcome::Differs);
        assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
        let (inventory, hosts, book) = load();
        let apply = run_of(inventory, hosts, book, true);
        let summary = run_playbook_with(Arc::new(apply), connector, events).await;
        assert!(summary.aborted.is_none());
        assert!(
            summary
                .hosts
                .iter()
                .all(|h| h.status == HostStatus::Changed),
            "{summary:?}"
        );
        assert_eq!(summary.outcome(), crate::exit::Outcome::Ok);
        assert!(dir.path().join("a").exists() && dir.path().join("b").exists());
    }

    fn wireguard_host(name: &str, status: HostStatus, step: StepStatus, field: &str) -> HostReport {
        let mut h = HostReport::new(&crate::testkit::host(name));
        h.status = status;
        h.steps.push(crate::summary::StepReport {
            name: "wg".into(),
            resource: Some("wireguard wg0".into()),
            location: "p.yaml:2:5".into(),
            status: step,
            action: Some("modify".into()),
            changes: vec![crate::summary::ChangeReport {
                field: field.into(),
                before: None,
                after: Some("(new key)".into()),
            }],
            note: None,
        });
        h
    }

    fn summary_of(hosts: Vec<HostReport>) -> FleetSummary {
        FleetSummary {
            schema_version: SCHEMA_VERSION,
            run_id: "r".into(),
            mode: "apply",
            started: 0,
            seconds: 0.0,
            hosts,
            aborted: None,
        }
    }

    #[test]
    fn a_new_wireguard_key_asks_for_a_second_pass_that_keeps_the_first_changes() {
        let changed = |name| {
            wireguard_host(
                name,
                HostStatus::Changed,
                StepStatus::Changed,
                "private key",
            )
        };
        let first = summary_of(vec![
            changed("hub"),
            wireguard_host(
                "spoke",
                HostStatus::InLine,
                StepStatus::InLine,
                "private key",
            ),
        ]);
        assert!(made_wireguard_keys(&first));
        // A key that did not change, or a peer list that did, asks for nothing more.
        assert!(!made_wireguard_keys(&summary_of(vec![wireguard_host(
            "hub",
            HostStatus::InLine,
            StepStatus::InLine,
            "private key"
        )])));
        assert!(!made_wireguard_keys(&summary_of(vec![wireguard_host(
            "hub",
            HostStatus::Changed,
            StepStatus::Changed,
            "peers"
        )])));
        // The second pass finds the hub in line (its key was made before) and changes the
        // spoke (the hub's new key): both changed in this run.
        let second = summary_of(vec![
            wireguard_host("hub", HostStatus::InLine, StepStatus::InLine, "peers"),
            changed("spoke"),
        ]);
        let merged = second_pass(first, second);
        assert_eq!(merged.hosts[0].status, HostStatus::Changed);
        assert_eq!(merged.hosts[1].status, HostStatus::Changed);
        assert_eq!(
            merged.hosts[0].note.as_deref(),
            Some("second pass: peers' new WireGuard keys")
        );
    }
}
