//! engine: one host's pipeline. Renders the playbook for the host, probes every step in ONE
//! remote script (with the facts), diffs locally, applies what differs in ONE more script
//! (under a remote lock, handlers after), and verifies with a final probe.
//!
//! This file owns the scripts (probe, apply, lock, midway confirmation) and the verdict of
//! each step; [`host`] runs one host's whole sequence over any session a
//! [`crate::connector::Connector`] opens. It never prints and never reads the terminal: it
//! emits [`crate::event::HostEvent`]s and returns a [`HostReport`]. Running many hosts, and
//! the rule that nothing is applied anywhere while any host's input is bad, belong to `fleet`.

pub mod host;

use std::collections::BTreeMap;
use std::time::Duration;

use minijinja::Value as JValue;
use serde_json::Value;

use crate::facts::{self, Facts};
use crate::inventory::{Host, Inventory};
use crate::playbook::{Playbook, Step};
use crate::remote::{self, Script};
use crate::resource::{ApplyContext, Change, Resource, Verdict};
use crate::secrets::Secrets;
use crate::template::{RenderError, Templates};
use crate::transport::{ExecOutput, Session};

/// What one run does, for every host.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub apply: bool,
    pub run_id: String,
    /// How long one remote script may run.
    pub timeout: Duration,
    /// `--tags`: only steps with one of these (all steps when empty).
    pub tags: Vec<String>,
    /// `--skip-tags`: no step with one of these.
    pub skip_tags: Vec<String>,
    /// Seconds a risky change waits for confirmation before the host restores itself.
    pub deadman_seconds: u32,
    /// `--keep-backups`: how many runs' backups each host keeps (beats `backup_keep`).
    pub keep_backups: Option<u32>,
    /// `drift` or `audit`: the probe also scans the host for unmanaged drift (read-only).
    pub inspect: Option<crate::inspect::Kind>,
}

impl RunSettings {
    /// The run's name in reports: `plan`, `apply`, `drift` or `audit`.
    pub fn mode(&self) -> &'static str {
        match (self.apply, self.inspect) {
            (true, _) => "apply",
            (false, Some(crate::inspect::Kind::Drift)) => "drift",
            (false, Some(crate::inspect::Kind::Audit)) => "audit",
            (false, None) => "plan",
        }
    }

    /// How many runs' backups `host` keeps: `--keep-backups`, else the inventory's
    /// `backup_keep`, else [`crate::resource::KEEP_BACKUPS`].
    pub fn keep_backups_for(&self, host: &Host) -> u32 {
        self.keep_backups
            .or(host.backup_keep)
            .unwrap_or(crate::resource::KEEP_BACKUPS)
    }
}

/// One step, rendered for one host.
#[derive(Debug)]
pub struct HostStep {
    pub name: String,
    /// Marked `risky: true`: applied under the dead-man switch with the type's restore.
    pub risky: bool,
    pub location: String,
    pub notify: Vec<String>,
    /// `sensitive: true`, or its rendered parameters used a secret: reports show its values
    /// as size and sha256, never as text.
    pub sensitive: bool,
    /// How long its apply may run on the host ([`crate::playbook::STEP_TIMEOUT`] unless the
    /// step's `timeout:` says otherwise); past it the step is stopped and fails, named.
    pub timeout: Duration,
    pub work: StepWork,
}

#[derive(Debug)]
pub enum StepWork {
    /// Will be probed (and applied).
    Run(Box<dyn Resource>),
    /// Left out, and why (`when` is false, tags).
    Skip(String),
}

pub use crate::summary::{ChangeReport, HostReport, HostStatus, StepReport, StepStatus};

/// The variables of one host: playbook defaults, then inventory vars, with secrets resolved,
/// plus `inventory_hostname`, `groups`, `group_names` and (when known) `facts`.
pub fn host_vars(
    host: &Host,
    inventory: &Inventory,
    book: &Playbook,
    secrets: &Secrets,
    templates: &Templates,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut vars = serde_json::Map::new();
    for (name, node, _) in &book.vars {
        vars.insert(name.clone(), node.to_json());
    }
    for (name, var) in &host.vars {
        vars.insert(name.clone(), var.value.clone());
    }
    let _active = secrets.activate();
    // Secrets stay `{secret: ...}` here (resolved now, so that a bad one is found early):
    // renders see them as opaque values, never as template text.
    secrets
        .check_in(&Value::Object(vars.clone()))
        .map_err(|e| e.to_string())?;
    vars.insert(
        "inventory_hostname".into(),
        Value::String(host.name.clone()),
    );
    vars.insert("group_names".into(), serde_json::json!(host.groups));
    // The login settings are variables too (`user` even when the inventory left it unset).
    vars.entry("user")
        .or_insert_with(|| Value::String(host.user.clone()));
    let groups: BTreeMap<&String, &Vec<String>> = inventory.groups.iter().collect();
    vars.insert("groups".into(), serde_json::json!(groups));
    // The public half of the key rampart logs in with: the admin's default authorized key.
    if !vars.contains_key("login_public_key")
        && let Some(key) = login_public_key(host)
    {
        vars.insert("login_public_key".into(), Value::String(key));
    }
    // Variables may be templates of other variables (`port: "{{ 1 if a else 2 }}"`): render
    // them in order, a few passes for chains; what still fails is left for the step that uses
    // it to report, with its place.
    // A value that read a secret is final: rendering it again would render the secret.
    let mut done = std::collections::HashSet::new();
    for _ in 0..3 {
        let pending: Vec<String> = vars
            .iter()
            .filter(|(k, v)| has_template(v) && !done.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        if pending.is_empty() {
            break;
        }
        for key in pending {
            let ctx = secrets
                .to_jinja(&Value::Object(vars.clone()))
                .map_err(|e| e.to_string())?;
            let node = json_node(&vars[&key]);
            crate::secrets::touched();
            if let Ok(mut rendered) =
                templates.render_node(&node, std::path::Path::new("vars"), &ctx)
            {
                if crate::secrets::touched() {
                    // `pw: "{{ db_pass }}"` stays that secret, opaque.
                    if let Some(spec) = rendered.as_str().and_then(|t| secrets.spec_of(t)) {
                        rendered = spec;
                    }
                    done.insert(key.clone());
                }
                vars.insert(key, rendered);
            }
        }
    }
    Ok(vars)
}

fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
    }
}

/// A JSON value as a YAML node without a place (variables have already been read).
fn json_node(v: &Value) -> crate::yaml::Node {
    use crate::yaml::{Node, NodeValue};
    let value = match v {
        Value::Null => NodeValue::Null,
        Value::Bool(b) => NodeValue::Bool(*b),
        Value::Number(n) => NodeValue::Number(n.clone()),
        Value::String(s) => NodeValue::String(s.clone()),
        Value::Array(items) => NodeValue::Seq(items.iter().map(json_node).collect()),
        Value::Object(map) => NodeValue::Map(
            map.iter()
                .map(|(k, v)| (json_node(&Value::String(k.clone())), json_node(v)))
                .collect(),
        ),
    };
    Node {
        value,
        line: 0,
        column: 0,
    }
}

/// `identity.pub` (or the first default key of `~/.ssh` when no identity is set), as an
/// OpenSSH public key line.
fn login_public_key(host: &Host) -> Option<String> {
    let candidates: Vec<std::path::PathBuf> = match &host.identity {
        Some(p) => vec![p.clone()],
        None => {
            let home = std::path::PathBuf::from(std::env::var_os("HOME")?);
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|n| home.join(".ssh").join(n))
                .collect()
        }
    };
    candidates.iter().find_map(|p| {
        let key = crate::transport::ssh::public_half(p)?;
        let line = key.to_openssh().ok()?;
        Some(
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        )
    })
}

/// Why a host's steps could not be rendered.
#[derive(Debug, Clone)]
pub struct RenderFailure {
    pub message: String,
    /// The failure is a `facts.*` variable before facts were gathered: gather, then retry.
    pub needs_facts: bool,
}

/// Renders every step (and handler) for one host. `facts` is `None` before they are known.
pub fn render_steps(
    steps: &[Step],
    templates: &Templates,
    secrets: &Secrets,
    vars: &serde_json::Map<String, Value>,
    facts: Option<&Facts>,
    settings: &RunSettings,
) -> Result<Vec<HostStep>, RenderFailure> {
    let mut ctx = vars.clone();
    if let Some(f) = facts {
        ctx.insert(
            "facts".into(),
            serde_json::to_value(f).expect("facts serialize"),
        );
    }
    let _active = secrets.activate();
    let ctx: JValue = secrets
        .to_jinja(&Value::Object(ctx))
        .map_err(|e| RenderFailure {
            message: e.to_string(),
            needs_facts: false,
        })?;
    let fail = |e: RenderError, step: &Step| RenderFailure {
        // Also from inside a `lookup('template', …)`, whose error comes out in minijinja's
        // own words (agent/audit-rules.json.j2 reads facts.arch).
        needs_facts: facts.is_none()
            && (e.message.starts_with("undefined variable `facts")
                || e.message.contains("`facts` is undefined")),
        message: format!("{e}\n  in step `{}`", step.name),
    };
    let mut out = Vec::new();
    for step in steps {
        let mut host_step = HostStep {
            risky: step.risky,
            name: step.name.clone(),
            location: step.location(),
            notify: step.notify.clone(),
            sensitive: step.sensitive,
            timeout: Duration::from_secs(step.timeout.unwrap_or(crate::playbook::STEP_TIMEOUT)),
            work: StepWork::Skip(String::new()),
        };
        crate::secrets::touched();
        if let Some(reason) = tag_skip(step, settings) {
            host_step.work = StepWork::Skip(reason);
            out.push(host_step);
            continue;
        }
        if let Some(when) = &step.when
            && !templates
                .eval_when(when, &step.file, &ctx)
                .map_err(|e| fail(e, step))?
        {
            let text = when
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| when.to_json().to_string());
            host_step.work = StepWork::Skip(format!("when `{text}` is false"));
            out.push(host_step);
            continue;
        }
        let mut params = templates
            .render_node(&step.params, &step.file, &ctx)
            .map_err(|e| fail(e, step))?;
        let resolved = secrets.resolve_in(&mut params).map_err(|e| RenderFailure {
            message: format!("{}: {e}\n  in step `{}`", step.location(), step.name),
            needs_facts: false,
        })?;
        if let (Some(name), Some(at)) =
            (params.get("template").cloned(), step.params.get("template"))
        {
            let name = name.as_str().ok_or_else(|| RenderFailure {
                message: format!(
                    "{}: `template` must be a file name\n  in step `{}`",
                    at.loc(&step.file),
                    step.name
                ),
                needs_facts: false,
            })?;
            let text = templates
                .render_file(name, &ctx, at, &step.file)
                .map_err(|e| fail(e, step))?;
            let map = params.as_object_mut().expect("parameters are a mapping");
            map.remove("template");
            map.insert("content".into(), Value::String(text));
        }
        // Any step whose rendered parameters touched a secret is sensitive.
        host_step.sensitive |= resolved
            || crate::secrets::touched()
            || secrets.contains_any(&params.to_string()).is_some();
        let resource = (step.kind.build)(params).map_err(|e| RenderFailure {
            message: format!(
                "{}: {}: {e}\n  in step `{}`",
                step.location(),
                step.kind.name,
                step.name
            ),
            needs_facts: false,
        })?;
        // A value no shell can carry (a NUL byte) is bad input, found before any host changes.
        if let Err(e) = resource.probe().render() {
            return Err(RenderFailure {
                message: format!("{}: {e}\n  in step `{}`", step.location(), step.name),
                needs_facts: false,
            });
        }
        if step.risky
            && !resource.risky()
            && resource.restore(&ApplyContext::new("check")).is_none()
        {
            return Err(RenderFailure {
                message: format!(
                    "{}: `risky: true` needs a type that can restore itself (file, with backup on); `{}` cannot\n  in step `{}`",
                    step.location(),
                    step.kind.name,
                    step.name
                ),
                needs_facts: false,
            });
        }
        host_step.work = StepWork::Run(resource);
        out.push(host_step);
    }
    Ok(out)
}

fn tag_skip(step: &Step, settings: &RunSettings) -> Option<String> {
    if !settings.tags.is_empty() && !step.tags.iter().any(|t| settings.tags.contains(t)) {
        return Some(format!("not tagged {}", settings.tags.join(" or ")));
    }
    if let Some(t) = step.tags.iter().find(|t| settings.skip_tags.contains(t)) {
        return Some(format!("tag {t} skipped"));
    }
    None
}

/// A fresh nonce for the markers of one script.
pub fn nonce() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The probe of every step that runs, and the facts, in one script.
fn probe_script(nonce: &str, steps: &[HostStep], scan: Option<&Script>) -> Script {
    let mut s = remote::frame_start(nonce, "facts")
        .raw("(\n")
        .raw(facts::PROBE)
        .raw("\n)\n");
    if let Some(scan) = scan {
        s = s.then(framed(nonce, "scan", scan.clone(), false));
    }
    for (i, step) in steps.iter().enumerate() {
        if let StepWork::Run(resource) = &step.work {
            s = s.then(framed(nonce, &i.to_string(), resource.probe(), false));
        }
    }
    s
}

/// `script` in a subshell, its output under frame `id` and its exit status under `end:id`.
/// `with_stderr`: the subshell's stderr goes into the frame too (apply output, for errors).
fn framed(nonce: &str, id: &str, script: Script, with_stderr: bool) -> Script {
    remote::frame_start(nonce, id)
        .raw("(\n")
        .then(script)
        .raw(if with_stderr {
            "\n) 2>&1\nrc=$?\n"
        } else {
            "\n)\nrc=$?\n"
        })
        .then(remote::frame_start(nonce, &format!("end:{id}")))
        .raw("printf '%s\\n' \"$rc\"\n")
}

/// Frames of one script's output: id -> (text, exit status).
struct Frames(BTreeMap<String, String>);

impl Frames {
    fn parse(nonce: &str, out: &ExecOutput) -> Frames {
        let text = String::from_utf8_lossy(&out.stdout);
        Frames(remote::split_frames(nonce, &text).into_iter().collect())
    }

    fn get(&self, id: &str) -> Option<(&str, Option<i32>)> {
        let text = self.0.get(id)?;
        let rc = self
            .0
            .get(&format!("end:{id}"))
            .and_then(|t| t.trim().parse().ok());
        Some((text.as_str(), rc))
    }
}

/// Runs a script on the host: one exec round trip.
async fn run_script<S: Session>(
    session: &S,
    become_root: bool,
    script: &Script,
    timeout: Duration,
) -> Result<ExecOutput, String> {
    let text = script.render().map_err(|e| e.to_string())?;
    session
        .exec(&remote::exec_command(become_root), text.as_bytes(), timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Probes every running step: the facts and each step's verdict (or why it failed).
pub async fn probe<S: Session>(
    session: &S,
    become_root: bool,
    steps: &[HostStep],
    timeout: Duration,
) -> Result<(Facts, Vec<Option<Result<Verdict, String>>>), String> {
    probe_with_scan(session, become_root, steps, None, timeout)
        .await
        .map(|(facts, verdicts, _)| (facts, verdicts))
}

/// Probed facts, each step's verdict, and the scan's output.
pub type ScanProbe = (Facts, Vec<Option<Result<Verdict, String>>>, Option<String>);

/// [`probe`], with the read-only scan of `drift`/`audit` in the same round trip.
pub async fn probe_with_scan<S: Session>(
    session: &S,
    become_root: bool,
    steps: &[HostStep],
    scan: Option<&Script>,
    timeout: Duration,
) -> Result<ScanProbe, String> {
    let nonce = nonce();
    let script = probe_script(&nonce, steps, scan);
    let out = run_script(session, become_root, &script, timeout).await?;
    let frames = Frames::parse(&nonce, &out);
    let facts_text = frames.get("facts").map(|(t, _)| t).unwrap_or("");
    let facts = facts::parse(facts_text).map_err(|e| {
        format!(
            "the probe script did not run ({}): {e}\n{}",
            out.status_text(),
            out.stderr_block()
        )
    })?;
    let mut planned = Planned::default();
    let verdicts = steps
        .iter()
        .enumerate()
        .map(|(i, step)| match &step.work {
            StepWork::Skip(_) => None,
            StepWork::Run(resource) => Some(match frames.get(&i.to_string()) {
                None => Err(format!(
                    "the probe stopped before this step\n{}",
                    out.stderr_block()
                )),
                Some((text, Some(0))) => planned.diff(resource.as_ref(), text),
                Some((text, rc)) => Err(format!(
                    "the probe failed (exit status {})\n---- output ----\n{}\n{}",
                    rc.map(|r| r.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    crate::untrusted::for_error(text),
                    out.stderr_block()
                )),
            }),
        })
        .collect();
    let scanned = scan.and_then(|_| frames.get("scan").map(|(t, _)| t.to_string()));
    Ok((facts, verdicts, scanned))
}

/// The state the run's earlier steps will leave, by probe script: a later step whose probe is
/// the same script (a second `lines` on one file) is planned against what the earlier step's
/// apply leaves, not against the probe, so the steps compose in one apply (its guard then
/// expects the earlier step's result; anything else there is a real concurrent change).
/// A step whose subject does not exist yet is planned as "will exist" when an earlier step
/// changes something ([`Resource::diff_will_exist`]: a `package` installs a `service`'s unit).
#[derive(Default)]
struct Planned {
    after: BTreeMap<String, String>,
    changed: bool,
}

impl Planned {
    /// The step's verdict on `probed` (or on what an earlier step leaves), remembering what
    /// its own apply will leave.
    fn diff(&mut self, resource: &dyn Resource, probed: &str) -> Result<Verdict, String> {
        let key = resource.probe().render().unwrap_or_default();
        let before = self.after.get(&key).map(String::as_str).unwrap_or(probed);
        let verdict = match resource.diff(before) {
            Ok(v) => v,
            Err(e) => match self.changed.then(|| resource.diff_will_exist(before)) {
                Some(Some(v)) => v,
                _ => return Err(e.to_string()),
            },
        };
        if !verdict.is_in_line() {
            self.changed = true;
            if !key.is_empty() {
                match resource.probed_after(before, &verdict) {
                    Some(after) => self.after.insert(key, after),
                    // Unknown: later steps on it are planned on the probe (and their guards
                    // refuse if the earlier step changed what they planned on).
                    None => self.after.remove(&key),
                };
            }
        }
        Ok(verdict)
    }
}

/// What one host's apply does: the steps with their verdicts, and the handlers with whether
/// each was notified by a step that changes.
#[derive(Clone, Copy)]
pub struct ApplyWork<'a> {
    pub steps: &'a [HostStep],
    pub verdicts: &'a [Option<Verdict>],
    pub handlers: &'a [HostStep],
    pub run_handler: &'a [bool],
}

/// Takes the remote lock, then applies each differing step in order, stopping at the first
/// failure, then the notified handlers. Returns, per step and per handler, `Ok` or the
/// failure's output; `None` for what did not run.
/// Per step (and per handler): `Ok`, the failure's output, or `None` when it did not run.
pub type Applied = Vec<Option<Result<(), String>>>;

pub async fn apply<S: Session>(
    session: &S,
    become_root: bool,
    work: ApplyWork<'_>,
    ctx: &ApplyContext,
    timeout: Duration,
) -> Result<(Applied, Applied), String> {
    apply_with(session, become_root, work, ctx, timeout, None).await
}

/// A risky change is confirmed within the dead-man time of ITS OWN change, however long the
/// steps after it take: after each risky step the apply script prints the frame marker
/// `armed:<step>` (see [`armed_step`]) and waits until the controller, watching stdout, has
/// confirmed over a new connection (the run's switches are disarmed), or until the switch has
/// fired; then it prints `rolled_back:<step>` and stops there.
pub struct Midway {
    /// The frame nonce of the apply script (so that no step's output can fake a marker).
    pub nonce: String,
    /// Where stdout goes as it arrives.
    pub seen: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

/// The step whose risky change waits for confirmation, if `line` (without its newline) is the
/// `armed` marker of the script with `nonce`.
pub fn armed_step(nonce: &str, line: &str) -> Option<usize> {
    line.strip_prefix(&format!("@@rampart:{nonce}:armed:"))?
        .strip_suffix("@@")?
        .parse()
        .ok()
}

/// Shell text run after a risky step when the controller confirms midway: says so, then waits
/// (bounded by the switch's own time) while any switch of the run is armed. A confirmation
/// removes the run's dead-man folder; a restore leaves a `.fired` file in it. Either claims a
/// switch by removing its armed file first, so the wait goes on briefly until one of those
/// shows; a folder still there without either counts as not confirmed.
fn await_confirmation(nonce: &str, i: usize, ctx: &ApplyContext) -> Script {
    let dir = crate::resource::deadman_dir(ctx);
    // Five polls a second, for the switch's time and half a minute more: by then the switch
    // has fired (its restore removes the armed file) or was disarmed.
    let polls = (u64::from(ctx.deadman_seconds) + 30) * 5;
    remote::frame_start(nonce, &format!("armed:{i}"))
        .raw("d=")
        .arg(&dir)
        .raw(&format!(
            "\nn=0\nwhile ls \"$d\"/*.armed >/dev/null 2>&1 && [ $n -lt {polls} ]; do\n  n=$((n + 1))\n  sleep 0.2 2>/dev/null || sleep 1\ndone\nn=0\nwhile [ -d \"$d\" ] && ! ls \"$d\"/*.fired >/dev/null 2>&1 && [ $n -lt 50 ]; do\n  n=$((n + 1))\n  sleep 0.2 2>/dev/null || sleep 1\ndone\nif [ -d \"$d\" ]; then\n"
        ))
        .then(remote::frame_start(nonce, &format!("rolled_back:{i}")))
        .raw("  exit 0\nfi\n")
}

/// [`apply`], with risky changes confirmed midway when `midway` is given.
pub async fn apply_with<S: Session>(
    session: &S,
    become_root: bool,
    work: ApplyWork<'_>,
    ctx: &ApplyContext,
    timeout: Duration,
    midway: Option<Midway>,
) -> Result<(Applied, Applied), String> {
    let ApplyWork {
        steps,
        verdicts,
        handlers,
        run_handler,
    } = work;
    let nonce = midway
        .as_ref()
        .map(|m| m.nonce.clone())
        .unwrap_or_else(nonce);
    let mut s = lock_script(ctx);
    // The exec's bound: `timeout` for the script's own work (lock, backups), plus each step's
    // own limit and each confirmation's wait: a slow install needs a longer `timeout:` on its
    // step, never a longer one for every host's whole script.
    let mut budget = timeout;
    for (i, (step, verdict)) in steps.iter().zip(verdicts).enumerate() {
        if let (StepWork::Run(resource), Some(v)) = (&step.work, verdict)
            && !v.is_in_line()
        {
            let mut body = Script::new().raw("set -e\n");
            if step.risky
                && !resource.risky()
                && let Some(restore) = resource.restore(ctx)
            {
                body = body.then(crate::resource::deadman_arm(
                    ctx,
                    &format!("step{i}"),
                    restore,
                ));
            }
            let body = body.then(resource.apply(v, ctx));
            budget += step.timeout;
            s = s
                .then(framed(
                    &nonce,
                    &i.to_string(),
                    time_limited(body, step.timeout),
                    true,
                ))
                .raw("[ \"$rc\" -eq 0 ] || exit 0\n");
            if midway.is_some() && (step.risky || resource.risky()) {
                budget += Duration::from_secs(u64::from(ctx.deadman_seconds) + 60);
                s = s.then(await_confirmation(&nonce, i, ctx));
            }
        }
    }
    for (j, (handler, run)) in handlers.iter().zip(run_handler).enumerate() {
        if let (StepWork::Run(resource), true) = (&handler.work, run) {
            let body = Script::new()
                .raw("set -e\n")
                .then(resource.apply(&Verdict::Modify(Vec::new()), ctx));
            budget += handler.timeout;
            s = s
                .then(framed(
                    &nonce,
                    &format!("h{j}"),
                    time_limited(body, handler.timeout),
                    true,
                ))
                .raw("[ \"$rc\" -eq 0 ] || exit 0\n");
        }
    }
    let out = match midway {
        None => run_script(session, become_root, &s, budget).await?,
        Some(m) => {
            let text = s.render().map_err(|e| e.to_string())?;
            session
                .exec_watched(
                    &remote::exec_command(become_root),
                    text.as_bytes(),
                    budget,
                    m.seen,
                )
                .await
                .map_err(|e| e.to_string())?
        }
    };
    if out.exit_status == Some(75) {
        return Err(format!(
            "the host is locked by another run\n{}",
            out.stderr_block()
        ));
    }
    if !out.success() {
        return Err(format!(
            "the apply script ended with {}\n{}",
            out.status_text(),
            out.stderr_block()
        ));
    }
    let frames = Frames::parse(&nonce, &out);
    let result = |id: String| {
        frames.get(&id).map(|(text, rc)| match rc {
            Some(0) => Ok(()),
            _ => Err(format!(
                "exit status {}\n---- output ----\n{}\n----------------",
                rc.map(|r| r.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                crate::untrusted::for_error(text.trim_end())
            )),
        })
    };
    let steps_done = (0..steps.len()).map(|i| result(i.to_string())).collect();
    let handlers_done = (0..handlers.len())
        .map(|j| result(format!("h{j}")))
        .collect();
    Ok((steps_done, handlers_done))
}

/// What a step's apply prints when its own time limit stopped it.
pub const STEP_TIMED_OUT: &str = "did not finish within its timeout";

/// `body` under the step's time limit on the host: `timeout` (coreutils or busybox) runs it in
/// a process group of its own and stops the whole group (TERM, then KILL 10 s later) when the
/// time is up, so a hung install's children stop too. The body reaches its shell through
/// stdin, as the apply script does (no limit on an argument's length). On a host without
/// `timeout` it runs unbounded, and the exec's own bound still ends the script.
fn time_limited(body: Script, limit: Duration) -> Script {
    let secs = limit.as_secs().max(1);
    Script::new().raw("b=").script_arg(body).raw(&format!(
        "\nif command -v timeout >/dev/null 2>&1; then\n\
         \x20 printf '%s' \"$b\" | timeout -k 10 {secs} /bin/sh -c 's=$(cat) && eval \"$s\"'\n\
         \x20 rc=$?\n\
         \x20 if [ \"$rc\" -eq 124 ] || [ \"$rc\" -eq 137 ]; then\n\
         \x20   echo \"rampart: the step {STEP_TIMED_OUT} ({secs} s) and was stopped; if it needs \
         longer, give the step a longer timeout (its timeout: key in the playbook)\"\n\
         \x20 fi\n\
         \x20 exit \"$rc\"\n\
         fi\n\
         printf '%s' \"$b\" | /bin/sh -c 's=$(cat) && eval \"$s\"'\n"
    ))
}

/// Taken first and held for the whole apply script, so that two runs never apply to one host
/// at once: `<state dir>/lock`, the state dir being the parent of the backup root
/// (`/var/lib/rampart`). With `flock` the lock is the file's; on a host without `flock` it is
/// the folder `lock.d`, made with `mkdir` (atomic) and removed when the script ends. Either
/// way the lock names the run holding it, and a refusal (exit 75) says "locked by run X".
///
/// When the script ends (after the lock is held), the backup folders of all but the newest
/// `ctx.keep_backups` runs are removed: old backups hold old secrets. That costs no round
/// trip of its own.
fn lock_script(ctx: &ApplyContext) -> Script {
    let root = ctx.backup_root.trim_end_matches('/');
    let dir = root
        .rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("/var/lib/rampart");
    let lock = format!("{dir}/lock");
    let lock_dir = format!("{dir}/lock.d");
    Script::new()
        .raw("umask 077\nmkdir -p ")
        .arg(dir)
        .raw("\nrampart_lock=")
        .arg(&lock)
        .raw("\nrampart_lockdir=")
        .arg(&lock_dir)
        .raw("\nrampart_run=")
        .arg(&ctx.run_id)
        .raw("\nrampart_backups=")
        .arg(root)
        .raw("\nrampart_deadman=")
        .arg(&format!("{dir}/deadman"))
        .raw("\nrampart_keep=")
        .arg(&ctx.keep_backups.max(1).to_string())
        .raw("\n")
        .raw(LOCK_AND_PRUNE)
}

/// The lock (see [`lock_script`]) and the pruning of old backups when the script ends.
/// Expects `rampart_lock`, `rampart_lockdir`, `rampart_run`, `rampart_backups`,
/// `rampart_deadman` and `rampart_keep` to be set. A run whose dead-man switch is still armed
/// keeps its backups whatever its age: its restore needs them.
const LOCK_AND_PRUNE: &str = r#"rampart_locked() {
  printf 'rampart: locked by run %s: another run is applying to this host (lock: %s)\n' "${1:-unknown}" "$2" >&2
  printf 'hint: if no rampart run is applying to this host (a run killed hard leaves %s behind), remove it\n' "$rampart_lockdir" >&2
  exit 75
}
rampart_held=
if command -v flock >/dev/null 2>&1; then
  exec 9>>"$rampart_lock"
  if ! flock -n 9; then
    read -r rampart_owner <"$rampart_lock" || rampart_owner=
    rampart_locked "$rampart_owner" "$rampart_lock"
  fi
  # A run on this host while it had no flock may still hold the folder lock.
  if [ -d "$rampart_lockdir" ]; then
    read -r rampart_owner <"$rampart_lockdir/run" || rampart_owner=
    rampart_locked "$rampart_owner" "$rampart_lockdir"
  fi
  printf '%s\n' "$rampart_run" >"$rampart_lock"
else
  # No flock here: a folder is the lock (mkdir is atomic), removed when this script ends.
  if ! mkdir "$rampart_lockdir" 2>/dev/null; then
    read -r rampart_owner <"$rampart_lockdir/run" || rampart_owner=
    rampart_locked "$rampart_owner" "$rampart_lockdir"
  fi
  rampart_held=1
  printf '%s\n' "$rampart_run" >"$rampart_lockdir/run"
fi
rampart_end() {
  rampart_rc=$?
  trap - EXIT HUP INT PIPE TERM
  # Keep the newest backup folders (by the time each was made), this run's counted first.
  if [ -d "$rampart_backups" ]; then
    rampart_n=$rampart_keep
    [ ! -d "$rampart_backups/$rampart_run" ] || rampart_n=$((rampart_n - 1))
    ls -1t "$rampart_backups" 2>/dev/null | {
      while IFS= read -r rampart_d; do
        case $rampart_d in ''|.*|*[!A-Za-z0-9._-]*) continue ;; esac
        [ "$rampart_d" != "$rampart_run" ] || continue
        for rampart_a in "$rampart_deadman/$rampart_d"/*.armed; do
          [ ! -e "$rampart_a" ] || continue 2
        done
        if [ "$rampart_n" -gt 0 ]; then
          rampart_n=$((rampart_n - 1))
        else
          rm -rf -- "$rampart_backups/$rampart_d"
        fi
      done
    }
  fi
  [ -z "$rampart_held" ] || rm -rf -- "$rampart_lockdir"
  exit "$rampart_rc"
}
# Signals end the script through rampart_end too: a run the controller drops (a timeout
# closes the channel) must not leave its folder lock behind.
trap rampart_end EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
mkdir -p "$rampart_backups" && chmod 700 "$rampart_backups"
[ "$(id -u)" != 0 ] || chown 0:0 "$rampart_backups"
umask 022
"#;
impl ChangeReport {
    /// A sensitive step's change: each side as size and sha256, never as text, except the
    /// `plain` fields (a file's kind, owner, group and mode).
    fn redacted(c: &Change, plain: &[&str]) -> ChangeReport {
        if plain.contains(&c.field.as_str()) {
            return ChangeReport::from(c);
        }
        let hide = |v: &Option<String>| {
            v.as_deref().map(|t| {
                if crate::secrets::is_fingerprint(t) {
                    t.to_string()
                } else {
                    crate::secrets::fingerprint(t)
                }
            })
        };
        ChangeReport {
            field: c.field.clone(),
            before: hide(&c.before),
            after: hide(&c.after),
        }
    }
}

impl HostStep {
    /// Marked or made sensitive, or the resource says so (a file of mode 0600 or stricter).
    pub fn is_sensitive(&self) -> bool {
        self.sensitive || matches!(&self.work, StepWork::Run(r) if r.sensitive())
    }
}

/// A sensitive step's failure keeps its first line: what follows (`---- output ----`) is
/// the host's output, which may hold the old content.
fn withhold_output(text: &str) -> String {
    match text.split_once("\n") {
        Some((first, _)) => {
            format!("{first}\n(the host's output is withheld: the step is sensitive)")
        }
        None => text.to_string(),
    }
}

/// Builds the report of one step from its verdict.
pub fn step_report(step: &HostStep, status: StepStatus, verdict: Option<&Verdict>) -> StepReport {
    let sensitive = step.is_sensitive();
    let status = match status {
        StepStatus::Failed(text) if sensitive => StepStatus::Failed(withhold_output(&text)),
        other => other,
    };
    let plain = match &step.work {
        StepWork::Run(r) => r.plain_fields(),
        StepWork::Skip(_) => &[],
    };
    let change = |c: &Change| {
        if sensitive {
            ChangeReport::redacted(c, plain)
        } else {
            ChangeReport::from(c)
        }
    };
    StepReport {
        name: step.name.clone(),
        resource: match &step.work {
            StepWork::Run(r) => Some(r.id()),
            StepWork::Skip(_) => None,
        },
        location: step.location.clone(),
        status,
        action: verdict.map(|v| v.action().to_string()),
        changes: verdict
            .map(|v| v.changes().iter().map(change).collect())
            .unwrap_or_default(),
        note: match verdict {
            Some(Verdict::InLine(sentence)) => Some(sentence.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalSession;
    use crate::yaml;
    use std::path::Path;

    fn settings() -> RunSettings {
        RunSettings {
            apply: true,
            run_id: "t".into(),
            timeout: Duration::from_secs(20),
            tags: vec![],
            skip_tags: vec![],
            deadman_seconds: 60,
            keep_backups: None,
            inspect: None,
        }
    }

    fn steps(
        yaml_text: &str,
        vars: serde_json::Value,
        facts: Option<&Facts>,
    ) -> Result<Vec<HostStep>, RenderFailure> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        std::fs::write(&p, yaml_text).unwrap();
        let book = Playbook::load(&p).unwrap();
        let vars = vars.as_object().unwrap().clone();
        render_steps(
            &book.steps,
            &Templates::new(vec![]),
            &Secrets::default(),
            &vars,
            facts,
            &settings(),
        )
    }

    /// What `file`/`lines` probes print for a file of root's, mode 0644, holding `text`.
    fn file_probe(text: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        format!(
            "kind file\nstat root 0 root 0 644 {}\ncontent\n{b64}\nend\n",
            text.len()
        )
    }

    fn sha1_of(text: &str) -> String {
        use sha1::Digest as _;
        sha1::Sha1::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn steps_on_one_file_are_planned_on_what_the_earlier_ones_leave() {
        let text = "steps:\n\
          \x20 - lines: {path: /etc/x.conf, present: [b]}\n\
          \x20 - lines: {path: /etc/y.conf, present: [z]}\n\
          \x20 - lines: {path: /etc/x.conf, present: [c], absent: [a]}\n\
          \x20 - file: {path: /etc/x.conf, content: \"b\\nc\\n\"}\n\
          \x20 - lines: {path: /etc/new.conf, present: [nn]}\n\
          \x20 - lines: {path: /etc/new.conf, present: [mm], mode: '0600'}\n";
        let st = steps(text, serde_json::json!({}), None).unwrap();
        let run = |i: usize| match &st[i].work {
            StepWork::Run(r) => r.as_ref(),
            StepWork::Skip(_) => unreachable!(),
        };
        let probed = file_probe("a\n");
        let mut planned = Planned::default();
        let v0 = planned.diff(run(0), &probed).unwrap();
        assert_eq!(v0.changes()[0].after.as_deref(), Some("a\nb\n"));
        // Another file's step is planned on its own probe.
        let v1 = planned.diff(run(1), &probed).unwrap();
        assert_eq!(v1.changes()[0].after.as_deref(), Some("a\nz\n"));
        // The second step on x.conf edits what the first leaves, and its guard expects that.
        let v2 = planned.diff(run(2), &probed).unwrap();
        assert_eq!(v2.changes()[0].before.as_deref(), Some("a\nb\n"));
        assert_eq!(v2.changes()[0].after.as_deref(), Some("b\nc\n"));
        let apply = run(2).apply(&v2, &ApplyContext::new("t")).render().unwrap();
        assert!(apply.contains(&sha1_of("a\nb\n")), "{apply}");
        assert!(!apply.contains(&sha1_of("a\n")), "{apply}");
        // A file step with the same result is then in line.
        assert!(planned.diff(run(3), &probed).unwrap().is_in_line());
        // A file the first step creates: the second step adds its line; its own mode is
        // only for creating, so it does not change the mode the first left.
        let none = "kind none\n";
        let v4 = planned.diff(run(4), none).unwrap();
        assert!(matches!(v4, Verdict::Create(_)));
        let v5 = planned.diff(run(5), none).unwrap();
        assert!(matches!(v5, Verdict::Modify(_)), "{v5:?}");
        assert_eq!(v5.changes()[0].before.as_deref(), Some("nn\n"));
        assert_eq!(v5.changes()[0].after.as_deref(), Some("nn\nmm\n"));
        // Planned again on the real state after the apply: every step is in line.
        let mut again = Planned::default();
        let after = file_probe("b\nc\n");
        for i in [0, 2, 3] {
            assert!(again.diff(run(i), &after).unwrap().is_in_line(), "step {i}");
        }
    }

    #[test]
    fn a_unit_an_earlier_step_installs_is_planned_as_will_exist() {
        let text = "steps:\n\
          \x20 - package: {names: [cron]}\n\
          \x20 - service: {name: cron, enabled: true, state: started}\n";
        let st = steps(text, serde_json::json!({}), None).unwrap();
        let run = |i: usize| match &st[i].work {
            StepWork::Run(r) => r.as_ref(),
            StepWork::Skip(_) => unreachable!(),
        };
        let missing = "rampart-service 1\nsystemd=yes\nload=not-found\nenabled=\n\
                       active=inactive\nreload=no\nend\n";
        // Alone (or after steps in line), a missing unit is an error that says what to do.
        let err = Planned::default().diff(run(1), missing).unwrap_err();
        assert!(err.contains("install the package"), "{err}");
        // After a step that changes something, it will exist: enable and start it.
        let mut planned = Planned {
            changed: true,
            ..Planned::default()
        };
        let v = planned.diff(run(1), missing).unwrap();
        let fields: Vec<&str> = v.changes().iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["enabled", "state"], "{v:?}");
        let apply = run(1).apply(&v, &ApplyContext::new("t")).render().unwrap();
        assert!(
            apply.contains("enable") && apply.contains("start"),
            "{apply}"
        );
        // A masked unit stays an error, whatever came before.
        let masked = missing
            .replace("load=not-found", "load=masked")
            .replace("enabled=\n", "enabled=masked\n");
        assert!(planned.diff(run(1), &masked).is_err());
    }

    /// Runs `script` in `sh` as the apply's exec does: (stdout+stderr, exit status).
    fn sh(script: &Script) -> (String, Option<i32>) {
        use std::io::Write as _;
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "s=$(cat) && eval \"$s\""])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let text = script.render().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (all, out.status.code())
    }

    #[test]
    fn a_step_past_its_time_limit_is_stopped_with_its_children_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let done = dir.path().join("done");
        // The body starts a child that would outlive it, then hangs.
        let body = Script::new()
            .raw("set -e\nsleep 300 &\necho $! >")
            .arg(&pid.display().to_string())
            .raw("\nwait\n: >")
            .arg(&done.display().to_string())
            .raw("\n");
        let (out, rc) = sh(&time_limited(body, Duration::from_secs(1)));
        assert_eq!(rc, Some(124), "{out}");
        assert!(
            out.contains(STEP_TIMED_OUT) && out.contains("(1 s)"),
            "{out}"
        );
        assert!(!done.exists());
        let child = std::fs::read_to_string(&pid).unwrap();
        // Gone, or a zombie that nobody has reaped yet: either way it no longer runs. The
        // signal is sent before `timeout` returns, but a loaded machine may take a moment to
        // deliver it: look again for up to 10 s before calling the child alive.
        let read_state = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.trim()));
            let state = stat
                .as_deref()
                .ok()
                .and_then(|s| s.rsplit_once(") "))
                .map(|(_, r)| r[..1].to_string());
            (stat, state)
        };
        let (mut stat, mut state) = read_state();
        for _ in 0..100 {
            if matches!(state.as_deref(), None | Some("Z" | "X")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            (stat, state) = read_state();
        }
        let state = state.as_deref();
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "the step's child {child} still runs: {stat:?}"
        );
        // Within its limit, a body runs as it would bare: its output, its status, payloads.
        let body = Script::new()
            .raw("base64 -d ")
            .payload(b"it's \"fine\" $(x)\n")
            .raw("exit 3\n");
        let (out, rc) = sh(&time_limited(body, Duration::from_secs(60)));
        assert_eq!((out.as_str(), rc), ("it's \"fine\" $(x)\n", Some(3)));
    }

    #[test]
    fn a_facts_variable_before_facts_asks_for_them() {
        let text = "steps:\n  - command: {run: 'echo {{ facts.os_id }}'}\n";
        let err = steps(text, serde_json::json!({}), None).unwrap_err();
        assert!(err.needs_facts, "{}", err.message);
        let f = Facts {
            os_id: "debian".into(),
            ..Facts::default()
        };
        let ok = steps(text, serde_json::json!({}), Some(&f)).unwrap();
        assert!(matches!(&ok[0].work, StepWork::Run(r) if r.id() == "command `echo debian`"));
        let err = steps(
            "steps:\n  - command: {run: '{{ nope }}'}\n",
            serde_json::json!({}),
            None,
        )
        .unwrap_err();
        assert!(!err.needs_facts);
        assert!(
            err.message
                .ends_with("undefined variable `nope`\n  in step `command {{ nope }}`"),
            "{}",
            err.message
        );
    }

    /// A secrets file holding `value`, and its `{secret: ...}` spec named `pw`.
    fn secret_file(value: &str) -> (tempfile::TempDir, serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, value).unwrap();
        let spec = serde_json::json!({"secret": {"file": f.to_str().unwrap(), "name": "pw"}});
        (dir, spec)
    }

    #[test]
    fn a_secret_in_a_variable_is_never_rendered_again() {
        let (_d, spec) = secret_file("p4ss{{ 7*7 }}word");
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inventory.yaml");
        let inv_text = format!(
            "all:\n  hosts:\n    h: {{address: 10.203.0.131}}\n  vars:\n    pw: {spec}\n    alias: '{{{{ pw }}}}'\n    url: 'db://u:{{{{ pw }}}}@h'\n"
        );
        let inventory = Inventory::parse(&inv_path, &inv_text).unwrap();
        let host = inventory.limit(&[]).unwrap()[0].clone();
        let p = dir.path().join("p.yaml");
        std::fs::write(
            &p,
            "steps:\n  - file: {path: /a, content: '{{ alias }}'}\n  - file: {path: /b, content: '{{ url }}'}\n  - file: {path: /c, content: 'plain'}\n",
        )
        .unwrap();
        let book = Playbook::load(&p).unwrap();
        let t = Templates::new(vec![]);
        let secrets = Secrets::default();
        let vars = host_vars(&host, &inventory, &book, &secrets, &t).unwrap();
        let steps = render_steps(&book.steps, &t, &secrets, &vars, None, &settings()).unwrap();
        let content = |i: usize| match &steps[i].work {
            StepWork::Run(r) => format!("{r:?}"),
            StepWork::Skip(_) => unreachable!(),
        };
        assert!(
            content(0).contains(r#"content: "p4ss{{ 7*7 }}word""#),
            "{}",
            content(0)
        );
        assert!(content(1).contains(r#"content: "db://u:p4ss{{ 7*7 }}word@h""#));
        assert!(
            steps[0].sensitive && steps[1].sensitive,
            "they used a secret"
        );
        assert!(!steps[2].sensitive);
    }

    #[test]
    fn a_sensitive_step_reports_sizes_and_hashes_never_content() {
        let (_d, spec) = secret_file("tok-0123456789");
        let text = "steps:\n  - file: {path: /etc/a.env, content: 'TOKEN={{ pw }}', mode: '0644'}\n  - file: {path: /etc/b, content: 'new', mode: '0644'}\n    sensitive: true\n  - file: {path: /etc/c, content: 'new', mode: '0600'}\n  - file: {path: /etc/d, content: 'new', mode: '0644'}\n";
        let s = steps(text, serde_json::json!({"pw": spec}), None).unwrap();
        let sensitive: Vec<bool> = s.iter().map(HostStep::is_sensitive).collect();
        assert_eq!(sensitive, [true, true, true, false]);
        use base64::Engine as _;
        let old = "TOKEN=old-token-on-host\n";
        let probe = format!(
            "kind file\nstat root 0 root 0 644 {}\ncontent\n{}\nend\n",
            old.len(),
            base64::engine::general_purpose::STANDARD.encode(old)
        );
        for (i, step) in s.iter().enumerate() {
            let StepWork::Run(r) = &step.work else {
                unreachable!()
            };
            let verdict = r.diff(&probe).unwrap();
            let report = step_report(step, StepStatus::Differs, Some(&verdict));
            let json = serde_json::to_string(&report).unwrap();
            let content = report
                .changes
                .iter()
                .find(|c| c.field == "content")
                .unwrap();
            if i == 2 {
                // How the file is kept stays readable.
                let mode = report.changes.iter().find(|c| c.field == "mode").unwrap();
                assert_eq!(
                    (mode.before.as_deref(), mode.after.as_deref()),
                    (Some("0644"), Some("0600"))
                );
            }
            if sensitive[i] {
                assert!(!json.contains("old-token"), "{json}");
                assert!(
                    !json.contains("tok-0123456789") && !json.contains("new\""),
                    "{json}"
                );
                assert_eq!(
                    content.before.as_deref(),
                    Some(crate::secrets::fingerprint(old).as_str())
                );
                assert!(
                    content
                        .after
                        .as_deref()
                        .is_some_and(crate::secrets::is_fingerprint)
                );
            } else {
                assert_eq!(content.before.as_deref(), Some(old));
                assert_eq!(content.after.as_deref(), Some("new"));
            }
        }
        // A failed probe of a sensitive step does not show the host's output.
        let failed = step_report(
            &s[0],
            StepStatus::Failed(
                "the probe failed (exit status 1)\n---- output ----\nTOKEN=old-token\n".into(),
            ),
            None,
        );
        let StepStatus::Failed(t) = failed.status else {
            unreachable!()
        };
        assert!(
            !t.contains("old-token") && t.starts_with("the probe failed"),
            "{t}"
        );
    }

    #[test]
    fn the_site_playbook_renders_with_its_secrets_opaque() {
        // The built-in playbooks pass secrets through filters (`dictsort` of agent_secrets,
        // templates): with the guard, they still render, and the steps that hold them are
        // sensitive.
        let (_d, spec) = secret_file("tok{{ 1+1 }}-abcdefgh-0123");
        let dir = tempfile::tempdir().unwrap();
        let inv_path = dir.path().join("inventory.yaml");
        let inv_text = format!(
            "all:\n  hosts:\n    h: {{address: 10.203.0.131}}\n  vars:\n    user: admin\n    agent_command: /bin/true\n    agent_token: {spec}\n    agent_secrets: {{ANTHROPIC_API_KEY: {spec}}}\n"
        );
        let inventory = Inventory::parse(&inv_path, &inv_text).unwrap();
        let host = inventory.limit(&[]).unwrap()[0].clone();
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yaml");
        let book = Playbook::load(&site).unwrap();
        let t = Templates::for_playbook(&site);
        let secrets = Secrets::default();
        let vars = host_vars(&host, &inventory, &book, &secrets, &t).unwrap();
        let facts = Facts {
            os_id: "debian".into(),
            ..Facts::default()
        };
        let steps = render_steps(&book.steps, &t, &secrets, &vars, Some(&facts), &settings())
            .unwrap_or_else(|e| panic!("{}", e.message));
        let env = steps
            .iter()
            .find(|s| s.name == "secrets env file (0600)")
            .unwrap();
        assert!(env.is_sensitive());
        let StepWork::Run(r) = &env.work else {
            panic!("the env file step is skipped")
        };
        let shown = format!("{r:?}");
        assert!(
            shown.contains("AGENT_AUTH_TOKEN=tok{{ 1+1 }}-abcdefgh-0123")
                && shown.contains("ANTHROPIC_API_KEY=tok{{ 1+1 }}-abcdefgh-0123"),
            "{}",
            secrets.mask(&shown)
        );
    }

    #[test]
    fn when_and_tags_skip_steps_with_a_reason() {
        let text = "steps:\n  - command: {run: a}\n    when: x == 1\n  - command: {run: b}\n    tags: [t]\n";
        let s = steps(text, serde_json::json!({"x": 2}), None).unwrap();
        assert!(matches!(&s[0].work, StepWork::Skip(r) if r == "when `x == 1` is false"));
        assert!(matches!(&s[1].work, StepWork::Run(_)));
    }

    #[tokio::test]
    async fn probe_then_apply_then_verify_in_two_plus_one_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let text = format!(
            "steps:\n  - command: {{run: 'touch {a}', creates: '{a}'}}\n    notify: h\n  - command: {{run: 'touch {b}', creates: '{b}'}}\nhandlers:\n  - name: h\n    command: {{run: 'echo ran > {a}.h'}}\n",
            a = a.display(),
            b = b.display()
        );
        let p = dir.path().join("p.yaml");
        std::fs::write(&p, &text).unwrap();
        let book = Playbook::load(&p).unwrap();
        let t = Templates::new(vec![]);
        let vars = serde_json::Map::new();
        let host_steps = render_steps(
            &book.steps,
            &t,
            &Secrets::default(),
            &vars,
            None,
            &settings(),
        )
        .unwrap();
        let handlers = render_steps(
            &book.handlers,
            &t,
            &Secrets::default(),
            &vars,
            None,
            &settings(),
        )
        .unwrap();
        let session = LocalSession::default();
        let (facts, verdicts) = probe(&session, false, &host_steps, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(!facts.os_id.is_empty());
        let verdicts: Vec<Option<Verdict>> = verdicts
            .into_iter()
            .map(|v| v.map(|r| r.unwrap()))
            .collect();
        assert!(
            verdicts
                .iter()
                .all(|v| v.as_ref().unwrap().action() == "modify")
        );
        let mut ctx = ApplyContext::new("t");
        ctx.backup_root = dir.path().join("state/backups").display().to_string();
        let (done, handlers_done) = apply(
            &session,
            false,
            ApplyWork {
                steps: &host_steps,
                verdicts: &verdicts,
                handlers: &handlers,
                run_handler: &[true],
            },
            &ctx,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert!(done.iter().all(|d| matches!(d, Some(Ok(())))), "{done:?}");
        assert!(matches!(handlers_done[0], Some(Ok(()))));
        assert!(a.exists() && b.exists());
        assert_eq!(
            std::fs::read_to_string(format!("{}.h", a.display())).unwrap(),
            "ran\n"
        );
        let (_, again) = probe(&session, false, &host_steps, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            again
                .iter()
                .all(|v| v.as_ref().unwrap().as_ref().unwrap().is_in_line())
        );
        assert_eq!(session.stats().snapshot().round_trips, 3);
        let _ = yaml::parse(Path::new("x"), "a: 1");
    }

    #[tokio::test]
    async fn a_failing_step_stops_the_rest_and_shows_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        let text = format!(
            "steps:\n  - command: {{run: 'echo broken >&2; false'}}\n  - command: {{run: 'touch {b}', creates: '{b}'}}\n",
            b = b.display()
        );
        let p = dir.path().join("p.yaml");
        std::fs::write(&p, &text).unwrap();
        let book = Playbook::load(&p).unwrap();
        let vars = serde_json::Map::new();
        let host_steps = render_steps(
            &book.steps,
            &Templates::new(vec![]),
            &Secrets::default(),
            &vars,
            None,
            &settings(),
        )
        .unwrap();
        let session = LocalSession::default();
        let (_, verdicts) = probe(&session, false, &host_steps, Duration::from_secs(20))
            .await
            .unwrap();
        let verdicts: Vec<Option<Verdict>> = verdicts
            .into_iter()
            .map(|v| v.map(|r| r.unwrap()))
            .collect();
        let mut ctx = ApplyContext::new("t");
        ctx.backup_root = dir.path().join("state/backups").display().to_string();
        // While another process holds the lock, nothing is applied.
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let mut holder = std::process::Command::new("flock")
            .arg("--close")
            .arg(dir.path().join("state/lock"))
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let locked = apply(
            &session,
            false,
            ApplyWork {
                steps: &host_steps,
                verdicts: &verdicts,
                handlers: &[],
                run_handler: &[],
            },
            &ctx,
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            locked.starts_with("the host is locked by another run"),
            "{locked}"
        );
        assert!(
            locked.contains(&format!("lock: {}/state/lock", dir.path().display())),
            "{locked}"
        );
        let (done, _) = apply(
            &session,
            false,
            ApplyWork {
                steps: &host_steps,
                verdicts: &verdicts,
                handlers: &[],
                run_handler: &[],
            },
            &ctx,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        let err = done[0].clone().unwrap().unwrap_err();
        assert!(
            err.starts_with("exit status 1") && err.contains("broken"),
            "{err}"
        );
        assert!(done[1].is_none(), "the second step did not run");
        assert!(!b.exists());
    }

    /// Applies a risky file step then a slow one with midway confirmations; `confirm` says
    /// whether the "controller" disarms when the script says it waits. Returns what apply
    /// said and the markers the watcher saw.
    async fn midway_run(
        dir: &Path,
        deadman_seconds: u32,
        confirm: bool,
    ) -> ((Applied, Applied), Vec<String>) {
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::write(&a, "old\n").unwrap();
        let text = format!(
            "steps:\n  - file: {{path: '{a}', content: \"new\\n\"}}\n    risky: true\n  - command: {{run: 'sleep 1; touch {b}', creates: '{b}'}}\n",
            a = a.display(),
            b = b.display()
        );
        let p = dir.join("p.yaml");
        std::fs::write(&p, &text).unwrap();
        let book = Playbook::load(&p).unwrap();
        let host_steps = render_steps(
            &book.steps,
            &Templates::new(vec![]),
            &Secrets::default(),
            &serde_json::Map::new(),
            None,
            &settings(),
        )
        .unwrap();
        let session = LocalSession::default();
        let (_, verdicts) = probe(&session, false, &host_steps, Duration::from_secs(20))
            .await
            .unwrap();
        let verdicts: Vec<Option<Verdict>> = verdicts
            .into_iter()
            .map(|v| v.map(|r| r.unwrap()))
            .collect();
        let mut ctx = ApplyContext::new("t");
        ctx.backup_root = dir.join("state/backups").display().to_string();
        ctx.deadman_seconds = deadman_seconds;
        let (seen, mut watched) = tokio::sync::mpsc::unbounded_channel();
        let nonce = nonce();
        let applying = apply_with(
            &session,
            false,
            ApplyWork {
                steps: &host_steps,
                verdicts: &verdicts,
                handlers: &[],
                run_handler: &[],
            },
            &ctx,
            Duration::from_secs(40),
            Some(Midway {
                nonce: nonce.clone(),
                seen,
            }),
        );
        let watcher = async {
            let mut markers = Vec::new();
            let mut text = String::new();
            while let Some(chunk) = watched.recv().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find('\n') {
                    let line: String = text.drain(..=end).collect();
                    let line = line.trim_end();
                    if let Some(i) = armed_step(&nonce, line) {
                        markers.push(format!("armed:{i}"));
                        if confirm {
                            let out = LocalSession::default()
                                .exec(
                                    "sh",
                                    crate::resource::deadman_disarm(&ctx)
                                        .render()
                                        .unwrap()
                                        .as_bytes(),
                                    Duration::from_secs(10),
                                )
                                .await
                                .unwrap();
                            assert!(String::from_utf8_lossy(&out.stdout).contains("disarmed"));
                        }
                    } else if line.contains(&format!("{nonce}:rolled_back:")) {
                        markers.push("rolled_back".into());
                    }
                }
            }
            markers
        };
        let (applied, markers) = tokio::join!(applying, watcher);
        (applied.unwrap(), markers)
    }

    #[tokio::test]
    async fn a_risky_step_waits_for_its_own_confirmation_and_the_rest_then_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ((done, _), markers) = midway_run(dir.path(), 3, true).await;
        assert_eq!(markers, ["armed:0"]);
        assert!(done.iter().all(|d| matches!(d, Some(Ok(())))), "{done:?}");
        // Past the switch's time, the change is still there: it was confirmed, not restored.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "new\n"
        );
        assert!(dir.path().join("b").exists());
    }

    #[tokio::test]
    async fn without_a_confirmation_the_switch_restores_and_the_rest_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let ((done, _), markers) = midway_run(dir.path(), 2, false).await;
        assert_eq!(markers, ["armed:0", "rolled_back"]);
        assert!(matches!(done[0], Some(Ok(()))), "{done:?}");
        assert!(
            done[1].is_none(),
            "the step after a rolled back change ran: {done:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "old\n"
        );
        assert!(!dir.path().join("b").exists());
    }

    #[test]
    fn only_this_scripts_armed_marker_counts() {
        assert_eq!(armed_step("ab12", "@@rampart:ab12:armed:7@@"), Some(7));
        assert_eq!(armed_step("ab12", "@@rampart:ff00:armed:7@@"), None);
        assert_eq!(armed_step("ab12", "x@@rampart:ab12:armed:7@@"), None);
        assert_eq!(armed_step("ab12", "@@rampart:ab12:armed:x@@"), None);
    }

    /// Runs the lock script of `ctx` followed by `then` under `sh`, with `path` as PATH.
    fn run_locked(ctx: &ApplyContext, then: &str, path: &str) -> std::process::Output {
        let script = lock_script(ctx).raw(then).render().unwrap();
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    #[test]
    fn old_backups_are_pruned_when_the_script_ends_and_its_status_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state/backups");
        for (i, name) in ["a0", "a1", "a2", "a3", "a4", "a5", ".keep", "we ird"]
            .iter()
            .enumerate()
        {
            std::fs::create_dir_all(root.join(name)).unwrap();
            let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64);
            std::fs::File::open(root.join(name))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        // Run a0's dead-man switch is still armed: its restore needs its backups.
        let armed = dir.path().join("state/deadman/a0");
        std::fs::create_dir_all(&armed).unwrap();
        std::fs::write(armed.join("sshd.armed"), "").unwrap();
        std::fs::write(dir.path().join("state/deadman/a1.armed"), "").unwrap();
        let mut ctx = ApplyContext::new("t");
        ctx.backup_root = root.display().to_string();
        ctx.keep_backups = 3;
        let path = std::env::var("PATH").unwrap();
        let out = run_locked(&ctx, "mkdir -p \"$rampart_backups/t/etc\"\nexit 3\n", &path);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // This run and the two newest; names rampart never makes are left alone.
        assert_eq!(left, [".keep", "a0", "a4", "a5", "t", "we ird"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A run that backs nothing up keeps as many older runs.
        let mut ctx2 = ctx.clone();
        ctx2.run_id = "u".into();
        ctx2.keep_backups = 2;
        let out = run_locked(&ctx2, "exit 0\n", &path);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(!root.join("a4").exists() && root.join("a5").exists() && root.join("t").exists());
    }

    #[test]
    fn without_flock_a_lock_folder_names_the_run_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        // A PATH with the tools the script uses, and no flock.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["ls", "rm", "mkdir", "chmod"] {
            std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), bin.join(tool))
                .or_else(|_| std::os::unix::fs::symlink(format!("/bin/{tool}"), bin.join(tool)))
                .unwrap();
        }
        let no_flock = bin.display().to_string();
        let mut ctx = ApplyContext::new("r-first");
        ctx.backup_root = dir.path().join("state/backups").display().to_string();
        let lock_dir = dir.path().join("state/lock.d");
        let during = "read -r r <\"$rampart_lockdir/run\" && echo \"held by $r\"\n";
        let out = run_locked(&ctx, during, &no_flock);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "held by r-first\n");
        assert!(
            !lock_dir.exists(),
            "the folder lock is gone when the script ends"
        );
        // A second run while the first holds the folder lock is refused, by name.
        std::fs::create_dir_all(&lock_dir).unwrap();
        std::fs::write(lock_dir.join("run"), "r-holder\n").unwrap();
        let out = run_locked(&ctx, "echo applied\n", &no_flock);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{stderr}");
        assert!(stderr.contains("locked by run r-holder"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("applied"));
        assert!(lock_dir.exists(), "the holder's lock stays");
        // A host that has flock again still honours the folder lock.
        let out = run_locked(&ctx, "echo applied\n", &std::env::var("PATH").unwrap());
        assert_eq!(out.status.code(), Some(75), "{out:?}");
    }
}
