//! Steps of one run that touch the same thing compose in one apply (issue 15's engine
//! problems), on h59 and h60 (`tests/testbed/testbed fresh h59 h60`).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rampart::engine::{self, ApplyWork, HostStep, StepWork};
use rampart::resource::{self, ApplyContext};

use super::common::*;

fn run(dir: &Path, host: &str, cmd: &str, book: &str, extra: &[&str]) -> Output {
    let vars = format!("ansible_host: {}", addr(host));
    let inv = write_inventory(dir, &[(host, &vars)]);
    let p = dir.join("book.yaml");
    std::fs::write(&p, book).unwrap();
    rampart(dir)
        .args([cmd, "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(&p)
        .args(extra)
        .output()
        .unwrap()
}

/// The tests on h60 take turns: a host applies one run at a time.
static H60: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shown(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[test]
fn two_lines_steps_on_one_file_converge_in_one_apply() {
    let h = "h59";
    let dir = tempfile::tempdir().unwrap();
    ssh_root(
        h,
        "rm -rf /etc/rampart-compose && mkdir /etc/rampart-compose && \
         printf 'keep\\nold\\n' >/etc/rampart-compose/a.conf",
    );
    let book = "steps:\n\
      \x20 - lines: {path: /etc/rampart-compose/a.conf, present: [first], absent: [old]}\n\
      \x20 - lines: {path: /etc/rampart-compose/a.conf, present: [second]}\n\
      \x20 - lines: {path: /etc/rampart-compose/new.conf, present: [one]}\n\
      \x20 - lines: {path: /etc/rampart-compose/new.conf, present: [two]}\n";
    let plan = run(dir.path(), h, "plan", book, &[]);
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Differs),
        "{}",
        shown(&plan)
    );
    let apply = run(dir.path(), h, "apply", book, &[]);
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        shown(&apply)
    );
    assert_eq!(
        ssh_root(h, "cat /etc/rampart-compose/a.conf"),
        "keep\nfirst\nsecond\n"
    );
    assert_eq!(
        ssh_root(h, "cat /etc/rampart-compose/new.conf"),
        "one\ntwo\n"
    );
    // The second run finds everything in line.
    let again = run(dir.path(), h, "plan", book, &[]);
    assert_eq!(
        again.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        shown(&again)
    );
}

fn step(ty: &str, params: serde_json::Value) -> HostStep {
    let resource = (resource::lookup(ty).unwrap().build)(params).unwrap();
    HostStep {
        name: resource.id(),
        risky: false,
        location: "test".into(),
        notify: vec![],
        sensitive: false,
        timeout: Duration::from_secs(60),
        work: StepWork::Run(resource),
    }
}

/// The plan of two steps on one file is made; then someone else edits the file; the apply
/// refuses to write over that edit and leaves the file as the other party left it.
#[tokio::test]
async fn a_concurrent_edit_between_plan_and_apply_is_refused() {
    let h = "h60";
    let _h = H60.lock().await;
    let path = "/etc/rampart-compose-race.conf";
    ssh_root(h, &format!("printf 'keep\\n' >{path}"));
    let steps = [
        step(
            "lines",
            serde_json::json!({"path": path, "present": ["first"]}),
        ),
        step(
            "lines",
            serde_json::json!({"path": path, "present": ["second"]}),
        ),
    ];
    let session = root_session(h).await;
    let timeout = Duration::from_secs(60);
    let (_, verdicts) = engine::probe(&session, false, &steps, timeout)
        .await
        .unwrap();
    let verdicts: Vec<_> = verdicts.into_iter().map(|v| v.unwrap().ok()).collect();
    assert!(
        verdicts
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| !v.is_in_line()))
    );

    ssh_root(h, &format!("printf 'keep\\nintruder\\n' >{path}"));
    let ctx = ApplyContext::new(format!("compose-race-{}", std::process::id()));
    let work = ApplyWork {
        steps: &steps,
        verdicts: &verdicts,
        handlers: &[],
        run_handler: &[],
    };
    let (applied, _) = engine::apply(&session, false, work, &ctx, timeout)
        .await
        .unwrap();
    let err = match &applied[0] {
        Some(Err(e)) => e.clone(),
        other => panic!("the first step must fail: {other:?}"),
    };
    assert!(err.contains("changed since it was probed"), "{err}");
    assert!(applied[1].is_none(), "the rest does not run: {applied:?}");
    assert_eq!(ssh_root(h, &format!("cat {path}")), "keep\nintruder\n");
}

/// A `service` step whose unit an earlier `package` step installs plans as "will exist" on a
/// host without the package, and the apply installs, enables and starts it.
#[test]
fn a_package_and_its_service_plan_and_converge_on_a_host_without_it() {
    let h = "h60";
    let _h = H60.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    ssh_root(
        h,
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q unattended-upgrades >/dev/null 2>&1; \
         systemctl daemon-reload; systemctl reset-failed; true",
    );
    assert!(
        ssh_root(h, "systemctl show -p LoadState unattended-upgrades").contains("not-found"),
        "the unit must be missing before the run"
    );
    let book = "steps:\n\
      \x20 - package: {names: [unattended-upgrades]}\n\
      \x20 - service: {name: unattended-upgrades, enabled: true, state: started}\n";
    let plan = run(dir.path(), h, "plan", book, &[]);
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Differs),
        "{}",
        shown(&plan)
    );
    assert!(
        stdout(&plan).contains("service unattended-upgrades"),
        "{}",
        shown(&plan)
    );
    let apply = run(dir.path(), h, "apply", book, &[]);
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        shown(&apply)
    );
    assert_eq!(
        ssh_root(
            h,
            "systemctl is-enabled unattended-upgrades; systemctl is-active unattended-upgrades"
        ),
        "enabled\nactive\n"
    );
    let again = run(dir.path(), h, "plan", book, &[]);
    assert_eq!(
        again.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        shown(&again)
    );
}

/// A step that hangs past its own `timeout:` is stopped (its children too) and fails, named
/// in the report; the steps before it stay applied, the ones after it do not run.
#[test]
fn a_step_past_its_own_timeout_fails_by_name_and_earlier_steps_stay() {
    let h = "h60";
    let _h = H60.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    ssh_root(
        h,
        "rm -f /etc/rampart-timeout-before /etc/rampart-timeout-after",
    );
    let book = "steps:\n\
      \x20 - lines: {path: /etc/rampart-timeout-before, present: [applied]}\n\
      \x20 - name: hangs\n\
      \x20   command: {run: 'sleep 4321', creates: /etc/rampart-timeout-never}\n\
      \x20   timeout: 2s\n\
      \x20 - lines: {path: /etc/rampart-timeout-after, present: [applied]}\n";
    let apply = run(dir.path(), h, "apply", book, &["--format", "json"]);
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Failed),
        "{}",
        shown(&apply)
    );
    let report = json(&apply);
    let steps = host(&report, h)["steps"].as_array().unwrap().clone();
    let status: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("lines /etc/rampart-timeout-before", "changed"),
            ("hangs", "failed"),
            ("lines /etc/rampart-timeout-after", "not_run")
        ],
        "{steps:#?}"
    );
    let detail = steps[1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not finish within its timeout (2 s)"),
        "{detail}"
    );
    assert_eq!(ssh_root(h, "cat /etc/rampart-timeout-before"), "applied\n");
    assert_eq!(
        ssh_root(
            h,
            "test -e /etc/rampart-timeout-after && echo there || echo absent"
        ),
        "absent\n"
    );
    assert_eq!(
        ssh_root(h, "ps -eo args | grep -c '^sleep 4321$' || true"),
        "0\n",
        "the hung step's process was stopped"
    );
}
