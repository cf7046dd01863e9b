//! host: one host's whole run, over any [`Session`] a [`Connector`] opens. Prepare (variables,
//! render before connecting), connect, probe (facts, verdicts, the scan of `drift`/`audit`),
//! then, when the run applies and the fleet lets it: apply (risky changes confirmed midway over
//! a new connection), handlers, the confirmation of what is left, rollback reporting, and the
//! verify probe. It says what happens as [`HostEvent`]s and returns a [`HostReport`].

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{ApplyWork, HostStep, Midway, RenderFailure, RunSettings, StepWork};
use crate::connector::{Connected, Connector};
use crate::event::{EventSink, HostEvent};
use crate::facts::Facts;
use crate::inspect::scan::ScanParams;
use crate::inventory::{Host, Inventory};
use crate::playbook::Playbook;
use crate::remote::Script;
use crate::resource::{ApplyContext, Verdict};
use crate::secrets::Secrets;
use crate::summary::{HostReport, HostStatus, StepStatus};
use crate::template::Templates;
use crate::transport::Session;
use crate::transport::ssh::ConnectError;

/// Marks a host whose failure is bad input (not the host's fault).
pub const INPUT_HINT: &str = "fix the playbook or inventory: nothing was applied on any host";

/// How long `audit`'s outside probe waits for a TCP connect to a forbidden port.
const OUTSIDE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What one host's run reads; the same for every host of the run.
pub struct HostJob<'a, C> {
    pub inventory: &'a Inventory,
    pub playbook: &'a Playbook,
    pub templates: &'a Templates,
    pub secrets: &'a Secrets,
    pub settings: &'a RunSettings,
    pub connector: &'a C,
    pub events: &'a dyn EventSink,
}

/// What the fleet learned before this host's probe: every host's variables and facts
/// (`hostvars`), this host's facts, and the connection that gathered them.
pub struct Known<S> {
    pub hostvars: Option<Value>,
    pub facts: Option<Facts>,
    pub connection: Option<Result<Connected<S>, ConnectError>>,
}

impl<S> Known<S> {
    /// Nothing known: render without `hostvars`, connect anew.
    pub fn nothing() -> Known<S> {
        Known {
            hostvars: None,
            facts: None,
            connection: None,
        }
    }
}

/// One host between the phases: its connection, rendered steps and verdicts.
pub struct Probed<S> {
    host: Host,
    report: HostReport,
    session: Option<S>,
    become_root: bool,
    steps: Vec<HostStep>,
    handlers: Vec<HostStep>,
    verdicts: Vec<Option<Verdict>>,
    started: Instant,
}

impl<S> Probed<S> {
    /// A host whose probe never ended (its task panicked): `report` says why.
    pub fn lost(host: &Host, report: HostReport) -> Probed<S> {
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
    }

    pub fn report(&self) -> &HostReport {
        &self.report
    }

    /// The host failed on bad input (a template error, a bad parameter): the fleet applies
    /// nowhere.
    pub fn bad_input(&self) -> bool {
        self.report.status == HostStatus::Failed && self.report.hint.as_deref() == Some(INPUT_HINT)
    }
}

/// A host's steps and handlers, rendered.
type Rendered = (Vec<HostStep>, Vec<HostStep>);

/// Connects, renders and probes one host (read-only). The report says what differs.
pub async fn probe_host<C: Connector>(
    job: &HostJob<'_, C>,
    host: Host,
    known: Known<C::Session>,
) -> Probed<C::Session> {
    job.events.event(&host.name, HostEvent::Started);
    let mut p = Probed {
        become_root: job.playbook.become_root.unwrap_or(host.become_root),
        report: HostReport::new(&host),
        host,
        session: None,
        steps: Vec::new(),
        handlers: Vec::new(),
        verdicts: Vec::new(),
        started: Instant::now(),
    };
    probe_into(job, &mut p, known).await;
    let status = p.report.status;
    job.events.event(
        &p.host.name,
        HostEvent::Probed {
            status,
            applies: job.settings.apply && status == HostStatus::Differs,
        },
    );
    p
}

async fn probe_into<C: Connector>(
    job: &HostJob<'_, C>,
    p: &mut Probed<C::Session>,
    known: Known<C::Session>,
) {
    let mut vars = match super::host_vars(
        &p.host,
        job.inventory,
        job.playbook,
        job.secrets,
        job.templates,
    ) {
        Ok(v) => v,
        Err(e) => {
            return p
                .report
                .fail(HostStatus::Failed, e, Some(INPUT_HINT.into()));
        }
    };
    if let Some(hostvars) = known.hostvars {
        vars.insert("hostvars".into(), hostvars);
    }
    // Render before connecting: bad input is found without touching any host.
    let rendered = match render(job, &vars, known.facts.as_ref()) {
        Ok(r) => Some(r),
        Err(e) if e.needs_facts => None,
        Err(e) => {
            return p
                .report
                .fail(HostStatus::Failed, e.message, Some(INPUT_HINT.into()));
        }
    };
    job.events.event(&p.host.name, HostEvent::Connecting);
    connect(job, p, known.connection).await;
    let Some(session) = &p.session else {
        return;
    };
    let (steps, handlers) = match rendered {
        Some(r) => r,
        // The steps use facts: one more round trip, for this host only.
        None => match render_with_facts(job, session, p.become_root, &vars).await {
            Ok(r) => r,
            Err((error, hint)) => return p.report.fail(HostStatus::Failed, error, hint),
        },
    };
    let scan = match scan_for(job.settings, &vars, &steps) {
        Ok(scan) => scan,
        Err(e) => {
            return p
                .report
                .fail(HostStatus::Failed, e, Some(INPUT_HINT.into()));
        }
    };
    job.events.event(&p.host.name, HostEvent::Probing);
    let probed = super::probe_with_scan(
        session,
        p.become_root,
        &steps,
        scan.as_ref().map(|s| &s.script),
        job.settings.timeout,
    )
    .await;
    match probed {
        Err(e) => p.report.fail(HostStatus::Failed, e, None),
        Ok((facts, verdicts, scanned)) => {
            if let Some(scan) = &scan {
                inspect(job, p, scan, scanned, &facts).await;
            }
            p.report.facts = Some(facts);
            record_verdicts(p, &steps, verdicts);
        }
    }
    p.steps = steps;
    p.handlers = handlers;
}

/// Sets the host's session: the connection the fleet opened, else a new one. On failure the
/// report says why and there is none.
async fn connect<C: Connector>(
    job: &HostJob<'_, C>,
    p: &mut Probed<C::Session>,
    given: Option<Result<Connected<C::Session>, ConnectError>>,
) {
    let connection = match given {
        Some(c) => c,
        None => job.connector.connect(&p.host).await,
    };
    let connected = match connection {
        Ok(c) => c,
        Err(e) => {
            let status = if e.kind() == "unreachable" {
                HostStatus::Unreachable
            } else {
                HostStatus::Failed
            };
            return p.report.fail(status, e.to_string(), e.hint());
        }
    };
    p.report.login = Some(connected.login.clone());
    // root needs no sudo: the bootstrap login of a fresh host is usually root.
    p.become_root = p.become_root && connected.login != "root";
    p.report.note = connected.note;
    p.session = Some(connected.session);
}

/// Renders with the host's facts, probed first; the error and its hint otherwise (bad input
/// when the facts are there and the render still fails).
async fn render_with_facts<C: Connector>(
    job: &HostJob<'_, C>,
    session: &C::Session,
    become_root: bool,
    vars: &Map<String, Value>,
) -> Result<Rendered, (String, Option<String>)> {
    let (facts, _) = super::probe(session, become_root, &[], job.settings.timeout)
        .await
        .map_err(|e| (e, None))?;
    render(job, vars, Some(&facts)).map_err(|e| (e.message, Some(INPUT_HINT.into())))
}

/// The playbook's steps and handlers for this host.
fn render<C>(
    job: &HostJob<'_, C>,
    vars: &Map<String, Value>,
    facts: Option<&Facts>,
) -> Result<Rendered, RenderFailure> {
    let steps = super::render_steps(
        &job.playbook.steps,
        job.templates,
        job.secrets,
        vars,
        facts,
        job.settings,
    )?;
    let handlers = super::render_steps(
        &job.playbook.handlers,
        job.templates,
        job.secrets,
        vars,
        facts,
        job.settings,
    )?;
    Ok((steps, handlers))
}

/// The read-only scan of `drift`/`audit`, with the frame marker of its output.
struct Scan {
    params: ScanParams,
    marker: String,
    script: Script,
}

/// The scan the run asks for, if any; its parameters come from the host's variables (bad
/// ones are bad input).
fn scan_for(
    settings: &RunSettings,
    vars: &Map<String, Value>,
    steps: &[HostStep],
) -> Result<Option<Scan>, String> {
    let Some(kind) = settings.inspect else {
        return Ok(None);
    };
    let mut params = ScanParams::from_vars(vars)?;
    params.openclaw_audit = kind == crate::inspect::Kind::Audit;
    params.managed_paths = steps
        .iter()
        .filter_map(|s| match &s.work {
            StepWork::Run(r) => r.fs_path().map(String::from),
            StepWork::Skip(_) => None,
        })
        .collect();
    let marker = format!("@@{}", super::nonce());
    let script = params.script(&marker);
    Ok(Some(Scan {
        params,
        marker,
        script,
    }))
}

/// Findings from the scan's output; for `audit`, the checklist with the outside probe.
async fn inspect<C, S>(
    job: &HostJob<'_, C>,
    p: &mut Probed<S>,
    scan: &Scan,
    scanned: Option<String>,
    facts: &Facts,
) {
    let Some(text) = scanned else {
        return p
            .report
            .fail(HostStatus::Failed, "the scan did not run".into(), None);
    };
    let obs = crate::inspect::scan::parse(&scan.marker, &text);
    let findings = crate::inspect::findings::findings(&obs, &scan.params);
    if job.settings.inspect == Some(crate::inspect::Kind::Audit) {
        job.events.event(&p.host.name, HostEvent::OutsideProbe);
        let outside = crate::inspect::checks::outside_probe(
            &p.host.address,
            &scan.params.forbidden_ports,
            OUTSIDE_PROBE_TIMEOUT,
        )
        .await;
        p.report.checks =
            crate::inspect::checks::checks(&obs, &scan.params, facts, &findings, Some(&outside));
    }
    p.report.findings = findings;
}

/// Each step's status from its verdict, and the host's: failed, differs or in line.
fn record_verdicts<S>(
    p: &mut Probed<S>,
    steps: &[HostStep],
    verdicts: Vec<Option<Result<Verdict, String>>>,
) {
    let mut differs = false;
    let mut failed = false;
    for (step, verdict) in steps.iter().zip(verdicts) {
        let (status, v) = match (&step.work, verdict) {
            (StepWork::Skip(reason), _) => (StepStatus::Skipped(reason.clone()), None),
            (_, Some(Ok(v))) if v.is_in_line() => (StepStatus::InLine, Some(v)),
            (_, Some(Ok(v))) => {
                differs = true;
                (StepStatus::Differs, Some(v))
            }
            (_, Some(Err(e))) => {
                failed = true;
                (StepStatus::Failed(e), None)
            }
            (_, None) => (StepStatus::NotRun, None),
        };
        p.report
            .steps
            .push(super::step_report(step, status, v.as_ref()));
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

/// Ends a host without applying: its report with time and stats; its session closed.
pub async fn close<C: Connector>(connector: &C, p: Probed<C::Session>) -> HostReport {
    finish(connector, p.report, p.started, p.session).await
}

async fn finish<C: Connector>(
    connector: &C,
    mut report: HostReport,
    started: Instant,
    session: Option<C::Session>,
) -> HostReport {
    if let Some(s) = &session {
        report.stats = s.stats().snapshot();
    }
    report.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    if let Some(s) = session {
        connector.close(s).await;
    }
    report
}

/// Which handlers run: those a differing step notifies.
pub fn notified_handlers(
    steps: &[HostStep],
    verdicts: &[Option<Verdict>],
    handlers: &[HostStep],
) -> Vec<bool> {
    handlers
        .iter()
        .map(|h| {
            steps.iter().zip(verdicts).any(|(s, v)| {
                s.notify.contains(&h.name) && v.as_ref().is_some_and(|v| !v.is_in_line())
            })
        })
        .collect()
}

/// Marked risky, or risky by its type (a firewall, sshd).
fn is_risky(step: &HostStep) -> bool {
    step.risky || matches!(&step.work, StepWork::Run(r) if r.risky())
}

/// Whether a risky step is to change.
fn risky_change<S>(p: &Probed<S>) -> bool {
    p.steps
        .iter()
        .zip(&p.verdicts)
        .any(|(s, v)| is_risky(s) && v.as_ref().is_some_and(|v| !v.is_in_line()))
}

/// A confirming connection and whether it uses sudo, or why there is none.
type Confirmation<S> = Result<(S, bool), String>;

/// What the midway confirmations came to: the last good one's connection (for the verify),
/// the first lost one, and the last step confirmed.
struct MidwayOutcome<S> {
    fresh: Option<(S, bool)>,
    lost: Option<(usize, String)>,
    confirmed_upto: Option<usize>,
}

/// Applies what differs and the notified handlers, confirms risky changes, verifies.
/// Hosts that do not differ only close.
pub async fn apply_host<C: Connector>(
    job: &HostJob<'_, C>,
    mut p: Probed<C::Session>,
) -> HostReport {
    let Some(session) = p.session.take() else {
        return finish(job.connector, p.report, p.started, None).await;
    };
    if p.report.status != HostStatus::Differs {
        return finish(job.connector, p.report, p.started, Some(session)).await;
    }
    job.events.event(&p.host.name, HostEvent::Applying);
    let mut ctx = ApplyContext::new(job.settings.run_id.clone());
    ctx.deadman_seconds = job.settings.deadman_seconds;
    ctx.keep_backups = job.settings.keep_backups_for(&p.host);
    if let Some(root) = job.connector.backup_root(&p.host) {
        ctx.backup_root = root;
    }
    let applied = apply_watched(job, &p, &session, &ctx).await;
    match applied {
        (Err(e), midway) => apply_lost(job, &mut p, &ctx, e, midway).await,
        (Ok((done, handlers_done)), midway) => {
            let mut failed = record_apply(job, &mut p, &done, &handlers_done);
            let confirmed = confirm_rest(job, &mut p, &ctx, midway, &mut failed).await;
            if failed {
                if p.report.error.is_none() {
                    p.report.status = HostStatus::Failed;
                    p.report.error = Some("a step failed; the steps after it did not run".into());
                }
            } else if let Some((fresh, become_root)) = &confirmed {
                // The new login may differ from the old (root closed, admin now): so may sudo.
                p.become_root = *become_root;
                verify(job, fresh, &mut p).await;
            } else {
                verify(job, &session, &mut p).await;
            }
            if let Some((fresh, _)) = confirmed {
                job.connector.close(fresh).await;
            }
        }
    }
    let status = p.report.status;
    let report = finish(job.connector, p.report, p.started, Some(session)).await;
    job.events
        .event(&report.name, HostEvent::Finished { status });
    report
}

/// The apply script, with a watcher that confirms each risky change midway: it sees the
/// script's `armed` marker and confirms over a new connection while the script waits, so
/// each risky change is confirmed within the switch's time of its own change and the steps
/// after it may take as long as they need.
async fn apply_watched<C: Connector>(
    job: &HostJob<'_, C>,
    p: &Probed<C::Session>,
    session: &C::Session,
    ctx: &ApplyContext,
) -> (
    Result<(super::Applied, super::Applied), String>,
    MidwayOutcome<C::Session>,
) {
    let run_handler = notified_handlers(&p.steps, &p.verdicts, &p.handlers);
    let any_risky = risky_change(p);
    let (seen, watched) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let nonce = super::nonce();
    let midway = any_risky.then(|| Midway {
        nonce: nonce.clone(),
        seen,
    });
    let watcher = confirm_at_markers(job, &p.host, ctx, &nonce, watched);
    let applying = super::apply_with(
        session,
        p.become_root,
        ApplyWork {
            steps: &p.steps,
            verdicts: &p.verdicts,
            handlers: &p.handlers,
            run_handler: &run_handler,
        },
        ctx,
        job.settings.timeout,
        midway,
    );
    let (applied, confirmations) = tokio::join!(applying, watcher);
    let outcome = settle(job, &p.host, confirmations).await;
    (applied, outcome)
}

/// Reads the apply script's stdout as it comes and confirms at each `armed` marker, while the
/// script waits. What each confirmation said, per risky step, in order.
async fn confirm_at_markers<C: Connector>(
    job: &HostJob<'_, C>,
    host: &Host,
    ctx: &ApplyContext,
    nonce: &str,
    mut watched: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) -> Vec<(usize, Confirmation<C::Session>)> {
    let mut confirmations = Vec::new();
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
            if let Some(i) = super::armed_step(nonce, &text) {
                let result = confirm(job, host, ctx).await;
                confirmations.push((i, result));
            }
        }
    }
    confirmations
}

/// The last good confirmation's connection serves the verify; a lost one decides the host.
async fn settle<C: Connector>(
    job: &HostJob<'_, C>,
    host: &Host,
    confirmations: Vec<(usize, Confirmation<C::Session>)>,
) -> MidwayOutcome<C::Session> {
    let mut outcome = MidwayOutcome {
        fresh: None,
        lost: None,
        confirmed_upto: None,
    };
    for (i, result) in confirmations {
        match result {
            Ok(fresh) => {
                job.events
                    .event(&host.name, HostEvent::Confirmed { step: Some(i) });
                if let Some((old, _)) = outcome.fresh.replace(fresh) {
                    job.connector.close(old).await;
                }
                outcome.confirmed_upto = Some(i);
            }
            Err(e) => {
                if outcome.lost.is_none() {
                    outcome.lost = Some((i, e));
                }
            }
        }
    }
    outcome
}

/// The apply's own connection failed (a firewall change can do that): a risky step that was
/// to change still decides by the confirmation over a new connection.
async fn apply_lost<C: Connector>(
    job: &HostJob<'_, C>,
    p: &mut Probed<C::Session>,
    ctx: &ApplyContext,
    error: String,
    midway: MidwayOutcome<C::Session>,
) {
    p.report.fail(HostStatus::Failed, error, None);
    if let Some((fresh, _)) = midway.fresh {
        job.connector.close(fresh).await;
    }
    let any_risky = risky_change(p);
    let lost = match midway.lost {
        Some((_, lost)) => lost,
        None if any_risky => match confirm(job, &p.host, ctx).await {
            Ok((fresh, _)) => {
                job.events
                    .event(&p.host.name, HostEvent::Confirmed { step: None });
                p.report.note = Some("the risky change was confirmed over a new connection".into());
                job.connector.close(fresh).await;
                return;
            }
            Err(lost) => lost,
        },
        None => return,
    };
    p.report.error = Some(format!(
        "rolled back: lost access: {lost}; the host restores the previous state {} s after the change",
        ctx.deadman_seconds
    ));
    job.events
        .event(&p.host.name, HostEvent::ConfirmationLost { error: lost });
    p.report.note = Some(after_rollback(job, &p.host, ctx).await);
}

/// Each step's and handler's status from what the apply script said; whether any failed.
fn record_apply<C, S>(
    job: &HostJob<'_, C>,
    p: &mut Probed<S>,
    done: &super::Applied,
    handlers_done: &super::Applied,
) -> bool {
    let mut failed = false;
    for (i, result) in done.iter().enumerate() {
        let report = &mut p.report.steps[i];
        match result {
            Some(Ok(())) => report.status = StepStatus::Changed,
            Some(Err(e)) => {
                failed = true;
                report.status = StepStatus::Failed(format!("apply failed: {e}"));
            }
            None if report.status == StepStatus::Differs => report.status = StepStatus::NotRun,
            None => continue,
        }
        if result.is_some() {
            let status = p.report.steps[i].status.clone();
            job.events.event(
                &p.host.name,
                HostEvent::StepApplied {
                    index: i,
                    handler: false,
                    status,
                },
            );
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
            let report = super::step_report(&p.handlers[j], status, None);
            job.events.event(
                &p.host.name,
                HostEvent::StepApplied {
                    index: j,
                    handler: true,
                    status: report.status.clone(),
                },
            );
            p.report.handlers.push(report);
        }
    }
    failed
}

/// A change that can cut us off is confirmed over a NEW connection, which disarms the host's
/// dead-man switch; without it the host restores itself. Those confirmed midway are done; a
/// risky step that failed before its marker (or a lost midway confirmation) decides here.
/// Returns the confirming connection, for the verify.
async fn confirm_rest<C: Connector>(
    job: &HostJob<'_, C>,
    p: &mut Probed<C::Session>,
    ctx: &ApplyContext,
    midway: MidwayOutcome<C::Session>,
    failed: &mut bool,
) -> Option<(C::Session, bool)> {
    let risky: Vec<usize> = p
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            is_risky(s)
                && matches!(
                    p.report.steps[*i].status,
                    StepStatus::Changed | StepStatus::Failed(_)
                )
        })
        .map(|(i, _)| i)
        .collect();
    let confirmed_upto = midway.confirmed_upto;
    let after_confirmed = |i: &usize| confirmed_upto.is_none_or(|c| *i > c);
    let mut confirmed = midway.fresh;
    let lost = match midway.lost {
        Some((upto, e)) => Some((Some(upto), e)),
        None if risky.iter().any(after_confirmed) => match confirm(job, &p.host, ctx).await {
            Ok(fresh) => {
                job.events
                    .event(&p.host.name, HostEvent::Confirmed { step: None });
                if let Some((old, _)) = confirmed.replace(fresh) {
                    job.connector.close(old).await;
                }
                None
            }
            Err(e) => Some((None, e)),
        },
        None => None,
    };
    let (upto, e) = lost?;
    *failed = true;
    if let Some((old, _)) = confirmed.take() {
        job.connector.close(old).await;
    }
    for &i in risky
        .iter()
        .filter(|i| after_confirmed(i) && upto.is_none_or(|u| **i <= u))
    {
        p.report.steps[i].status = StepStatus::Failed(format!("rolled back: lost access: {e}"));
    }
    p.report.fail(
        HostStatus::Failed,
        format!(
            "rolled back: lost access after a risky change; the host restores the previous state {} s after the change",
            ctx.deadman_seconds
        ),
        None,
    );
    job.events
        .event(&p.host.name, HostEvent::ConfirmationLost { error: e });
    p.report.note = Some(after_rollback(job, &p.host, ctx).await);
    None
}

/// Opens a NEW connection (the same logins as any connection of the run) and disarms the
/// run's dead-man switches over it. The new session is returned for the verify probe.
///
/// A refused or timed-out connection is retried for a while within the switch's time (sshd
/// re-executes itself on reload and is briefly away); a refused login or a wrong host key is
/// final.
async fn confirm<C: Connector>(
    job: &HostJob<'_, C>,
    host: &Host,
    ctx: &ApplyContext,
) -> Confirmation<C::Session> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.deadman_seconds) / 2);
    let connected = loop {
        match job.connector.connect(host).await {
            Ok(c) => break c,
            Err(e) if e.kind() == "unreachable" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let become_root =
        job.playbook.become_root.unwrap_or(host.become_root) && connected.login != "root";
    disarm(&connected.session, become_root, ctx, job.settings.timeout).await?;
    Ok((connected.session, become_root))
}

/// Confirms a risky change over `session` (a NEW connection): disarms the run's dead-man
/// switches, and says plainly when the switch had already fired. Shared by the playbook's
/// risky steps and `rampart quarantine`.
pub async fn disarm<S: crate::transport::Session>(
    session: &S,
    become_root: bool,
    ctx: &ApplyContext,
    timeout: Duration,
) -> Result<(), String> {
    let script = crate::resource::deadman_disarm(ctx)
        .render()
        .map_err(|e| e.to_string())?;
    let out = session
        .exec(
            &crate::remote::exec_command(become_root),
            script.as_bytes(),
            timeout,
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
    Ok(())
}

/// After a lost confirmation: waits until the host has run its restore (the run's switches are
/// gone), then says whether access is back.
async fn after_rollback<C: Connector>(
    job: &HostJob<'_, C>,
    host: &Host,
    ctx: &ApplyContext,
) -> String {
    let note = wait_for_restore(job, host, ctx).await;
    job.events.event(
        &host.name,
        HostEvent::RolledBack {
            note: note.to_string(),
        },
    );
    note.to_string()
}

async fn wait_for_restore<C: Connector>(
    job: &HostJob<'_, C>,
    host: &Host,
    ctx: &ApplyContext,
) -> &'static str {
    let dir = crate::resource::deadman_dir(ctx);
    let check = Script::new()
        .raw("for f in ")
        .arg(&dir)
        .raw("/*.armed; do [ -e \"$f\" ] && { echo armed; exit 0; }; done; echo restored\n");
    let check = check.render().unwrap_or_default();
    let give_up = Instant::now() + Duration::from_secs(u64::from(ctx.deadman_seconds) + 60);
    tokio::time::sleep(Duration::from_secs(u64::from(ctx.deadman_seconds))).await;
    while Instant::now() < give_up {
        if let Ok(c) = job.connector.connect(host).await {
            let become_root =
                job.playbook.become_root.unwrap_or(host.become_root) && c.login != "root";
            let out = c
                .session
                .exec(
                    &crate::remote::exec_command(become_root),
                    check.as_bytes(),
                    job.settings.timeout,
                )
                .await;
            job.connector.close(c.session).await;
            if let Ok(out) = out
                && String::from_utf8_lossy(&out.stdout).contains("restored")
            {
                return "the host restored the previous state; access is back";
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    "the host is still unreachable (or not restored) after its restore time"
}

/// The verify probe: every changed step must now be in line ("not idempotent" otherwise).
async fn verify<C: Connector>(
    job: &HostJob<'_, C>,
    session: &C::Session,
    p: &mut Probed<C::Session>,
) {
    match super::probe(session, p.become_root, &p.steps, job.settings.timeout).await {
        Err(e) => p
            .report
            .fail(HostStatus::Failed, format!("verify probe: {e}"), None),
        Ok((_, verdicts)) => {
            let failed = record_verify(&mut p.report, &verdicts);
            job.events
                .event(&p.host.name, HostEvent::Verified { in_line: !failed });
        }
    }
}

/// Each changed step's verdict after its apply: in line, or "not idempotent". Whether any
/// step failed.
fn record_verify(report: &mut HostReport, verdicts: &[Option<Result<Verdict, String>>]) -> bool {
    let mut failed = false;
    for (i, v) in verdicts.iter().enumerate() {
        if report.steps[i].status != StepStatus::Changed {
            continue;
        }
        match v {
            Some(Ok(v)) if v.is_in_line() => {}
            Some(Ok(v)) => {
                failed = true;
                let fields: Vec<&str> = v.changes().iter().map(|c| c.field.as_str()).collect();
                report.steps[i].status = StepStatus::Failed(format!(
                    "not idempotent: still differs after apply ({})",
                    fields.join(", ")
                ));
            }
            Some(Err(e)) => {
                failed = true;
                report.steps[i].status = StepStatus::Failed(format!("verify probe: {e}"));
            }
            None => {}
        }
    }
    report.status = if failed || report.status == HostStatus::Failed {
        HostStatus::Failed
    } else {
        HostStatus::Changed
    };
    if failed {
        report.error = Some("a step still differs after its apply".into());
    }
    failed
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::event::Recorded;
    use crate::testkit::{self, LocalConnector};

    /// Probes and (when `apply`) applies `playbook` on the one host `h1`, a local shell whose
    /// state is under `dir`.
    async fn run_host(
        dir: &Path,
        connector: &LocalConnector,
        events: &Recorded,
        playbook: &str,
        run_id: &str,
    ) -> HostReport {
        let (inventory, hosts, book) = testkit::load(dir, "all:\n  hosts:\n    h1: {}\n", playbook);
        let settings = testkit::settings(true, run_id);
        let templates = Templates::new(vec![]);
        let secrets = Secrets::default();
        let job = HostJob {
            inventory: &inventory,
            playbook: &book,
            templates: &templates,
            secrets: &secrets,
            settings: &settings,
            connector,
            events,
        };
        let probed = probe_host(&job, hosts[0].clone(), Known::nothing()).await;
        assert_eq!(
            probed.report().status,
            HostStatus::Differs,
            "{:?}",
            probed.report()
        );
        apply_host(&job, probed).await
    }

    fn status(report: &HostReport, i: usize) -> &StepStatus {
        &report.steps[i].status
    }

    #[tokio::test]
    async fn only_the_handlers_a_changing_step_notifies_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let book = format!(
            "steps:\n  - command: {{run: 'touch {d}/a', creates: '{d}/a'}}\n    notify: changed\n  - command: {{run: 'true', creates: '{d}'}}\n    notify: untouched\nhandlers:\n  - name: changed\n    command: {{run: 'echo ran > {d}/changed'}}\n  - name: untouched\n    command: {{run: 'echo ran > {d}/untouched'}}\n"
        );
        let connector = LocalConnector::new(dir.path());
        let events = Recorded::default();
        let report = run_host(
            dir.path(),
            &connector,
            &events,
            &book,
            &testkit::run_id("h"),
        )
        .await;
        assert_eq!(report.status, HostStatus::Changed, "{report:?}");
        assert_eq!(status(&report, 0), &StepStatus::Changed);
        assert_eq!(status(&report, 1), &StepStatus::InLine);
        let handlers: Vec<(&str, &StepStatus)> = report
            .handlers
            .iter()
            .map(|h| (h.name.as_str(), &h.status))
            .collect();
        assert_eq!(handlers, [("changed", &StepStatus::Changed)]);
        assert!(dir.path().join("changed").exists());
        assert!(!dir.path().join("untouched").exists());
        // One connection: probe, apply and verify over it; no confirmation (nothing risky).
        assert_eq!(connector.calls("h1"), 1);
        assert_eq!(report.stats.round_trips, 3);
        assert_eq!(
            events.of("h1"),
            [
                HostEvent::Started,
                HostEvent::Connecting,
                HostEvent::Probing,
                HostEvent::Probed {
                    status: HostStatus::Differs,
                    applies: true
                },
                HostEvent::Applying,
                HostEvent::StepApplied {
                    index: 0,
                    handler: false,
                    status: StepStatus::Changed
                },
                HostEvent::StepApplied {
                    index: 0,
                    handler: true,
                    status: StepStatus::Changed
                },
                HostEvent::Verified { in_line: true },
                HostEvent::Finished {
                    status: HostStatus::Changed
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_step_that_still_differs_after_its_apply_is_not_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // The command "succeeds" but never makes what it claims to.
        let book = format!("steps:\n  - command: {{run: 'true', creates: '{d}/never'}}\n");
        let connector = LocalConnector::new(dir.path());
        let events = Recorded::default();
        let report = run_host(
            dir.path(),
            &connector,
            &events,
            &book,
            &testkit::run_id("n"),
        )
        .await;
        assert_eq!(report.status, HostStatus::Failed);
        assert_eq!(
            report.error.as_deref(),
            Some("a step still differs after its apply")
        );
        match status(&report, 0) {
            StepStatus::Failed(text) => assert!(
                text.starts_with("not idempotent: still differs after apply ("),
                "{text}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            events
                .of("h1")
                .contains(&HostEvent::Verified { in_line: false })
        );
    }

    /// A risky file step (its old content `old`), then a plain one.
    fn risky_book(d: &str) -> String {
        std::fs::write(format!("{d}/a"), "old\n").unwrap();
        format!(
            "steps:\n  - file: {{path: '{d}/a', content: \"new\\n\"}}\n    risky: true\n  - command: {{run: 'touch {d}/b', creates: '{d}/b'}}\n"
        )
    }

    #[tokio::test]
    async fn a_risky_change_is_confirmed_over_a_new_connection_and_verified_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let book = risky_book(&d);
        let connector = LocalConnector::new(dir.path());
        let events = Recorded::default();
        let run_id = testkit::run_id("c");
        let report = run_host(dir.path(), &connector, &events, &book, &run_id).await;
        assert_eq!(report.status, HostStatus::Changed, "{report:?}");
        assert_eq!(status(&report, 0), &StepStatus::Changed);
        assert_eq!(status(&report, 1), &StepStatus::Changed);
        assert_eq!(std::fs::read_to_string(format!("{d}/a")).unwrap(), "new\n");
        // The confirmation removed the run's switches: nothing is left to restore.
        assert!(!testkit::deadman_dir(dir.path(), "h1", &run_id).exists());
        // The probe's connection, and the confirming one.
        assert_eq!(connector.calls("h1"), 2);
        let seen = events.of("h1");
        assert!(
            seen.contains(&HostEvent::Confirmed { step: Some(0) }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&HostEvent::Verified { in_line: true }),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_lost_confirmation_rolls_back_and_says_whether_access_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let book = risky_book(&d);
        // The confirming connection (the host's second) is refused; later ones are not.
        let connector = LocalConnector::refusing(dir.path(), |_, n| n == 1);
        let events = Recorded::default();
        let report = run_host(
            dir.path(),
            &connector,
            &events,
            &book,
            &testkit::run_id("r"),
        )
        .await;
        assert_eq!(report.status, HostStatus::Failed);
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("rolled back: lost access after a risky change")),
            "{report:?}"
        );
        match status(&report, 0) {
            StepStatus::Failed(text) => {
                assert!(text.starts_with("rolled back: lost access: "), "{text}")
            }
            other => panic!("{other:?}"),
        }
        // The step after the rolled back change never ran.
        assert_eq!(status(&report, 1), &StepStatus::NotRun);
        assert!(!dir.path().join("b").exists());
        assert_eq!(std::fs::read_to_string(format!("{d}/a")).unwrap(), "old\n");
        assert_eq!(
            report.note.as_deref(),
            Some("the host restored the previous state; access is back")
        );
        let seen = events.of("h1");
        assert!(
            seen.iter()
                .any(|e| matches!(e, HostEvent::ConfirmationLost { .. })),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, HostEvent::RolledBack { .. })),
            "{seen:?}"
        );
        assert!(!seen.iter().any(|e| matches!(e, HostEvent::Verified { .. })));
    }
}
