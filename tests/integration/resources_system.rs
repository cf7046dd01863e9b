//! The `sysctl`, `package`, `service` and `unit` resources on real hosts, through the library:
//! probe, diff, apply and verify with `converge_one` over a real SSH session. The container
//! h10 (systemd-nspawn: only /proc/sys/net is writable) for everything, and the VM vm1 for a
//! kernel key set live. Every test uses its own keys, files, packages and units, starts by
//! removing what an earlier, failed run may have left, and restores what it changed. The
//! package steps are in one test: apt takes a lock per host.
//!
//! The package test needs the local repository the testbed image carries
//! (/srv/rampart-repo, see tests/testbed/image.sh): hosts have no route out. On a host made
//! from an older image it prints why and skips.

use std::time::Duration;

use rampart::remote::Script;
use rampart::resource::package::PACKAGE;
use rampart::resource::service::SERVICE;
use rampart::resource::sysctl::SYSCTL;
use rampart::resource::unit::UNIT;
use rampart::resource::{ApplyContext, Change, Resource, Verdict, converge_one};
use rampart::transport::Session;
use rampart::transport::ssh::SshSession;
use serde_json::{Value, json};

use super::common::*;

/// The container.
const HOST: &str = "h10";
/// The VM, for kernel keys only (shared with other tests: only this module's own keys).
const VM: &str = "vm1";

async fn root(host: &str) -> SshSession {
    root_session(host).await
}

fn build(ty: &rampart::resource::TypeInfo, params: Value) -> Box<dyn Resource> {
    (ty.build)(params).unwrap_or_else(|e| panic!("{}: {e}", ty.name))
}

fn ctx(test: &str) -> ApplyContext {
    ApplyContext::new(format!("test-{test}-{}", std::process::id()))
}

async fn converge(s: &SshSession, r: &dyn Resource, test: &str) -> (Verdict, Verdict) {
    converge_one(s, r, &ctx(test))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.id()))
}

/// Runs a script as the engine does; its stdout, or a panic with its stderr.
async fn run(s: &SshSession, script: Script) -> String {
    let out = s
        .exec(
            &rampart::remote::exec_command(false),
            script.render().unwrap().as_bytes(),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert!(
        out.success(),
        "{}\n---- script ----\n{script}",
        out.stderr_block()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
    Change::new(field, before.map(String::from), after.map(String::from))
}

fn in_line_text(v: &Verdict) -> &str {
    match v {
        Verdict::InLine(s) => s,
        other => panic!("not in line: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// sysctl

/// A kernel key no other test touches, harmless to change: read-only in a container.
const KERNEL_KEY: &str = "kernel.printk_ratelimit_burst";
const KERNEL_PATH: &str = "/proc/sys/kernel/printk_ratelimit_burst";
/// A network key: writable in the container's own network namespace.
const NET_KEY: &str = "net.ipv4.tcp_rfc1337";
const NET_PATH: &str = "/proc/sys/net/ipv4/tcp_rfc1337";

#[tokio::test]
async fn sysctl_on_a_container_sets_net_keys_live_and_reports_kernel_keys_read_only() {
    let file = "/etc/sysctl.d/61-rampart-test-container.conf";
    ssh_root(HOST, &format!("rm -f {file}; echo 0 > {NET_PATH}"));
    let kernel_live = ssh_root(HOST, &format!("cat {KERNEL_PATH}"))
        .trim()
        .to_string();
    let kernel_want = if kernel_live == "7" { "8" } else { "7" };
    let s = root(HOST).await;
    let r = build(
        &SYSCTL,
        json!({"file": file, "values": {
            NET_KEY: 1,
            KERNEL_KEY: kernel_want,
            "kernel.rampart_no_such_key": "1",
        }}),
    );
    let content = format!(
        "# Written by rampart (sysctl step); local edits are overwritten.\n\
         {NET_KEY} = 1\n{KERNEL_KEY} = {kernel_want}\nkernel.rampart_no_such_key = 1\n"
    );
    let (before, after) = converge(&s, &*r, "sysctl-ct").await;
    assert_eq!(
        before,
        Verdict::Create(vec![
            change("content", None, Some(&content)),
            change(&format!("{NET_KEY} (live)"), Some("0"), Some("1")),
            change(
                &format!("{KERNEL_KEY} (live)"),
                Some(&kernel_live),
                Some(&format!(
                    "{kernel_want} (not settable live here: {KERNEL_PATH} is read-only; set in \
                     the file only)"
                ))
            ),
            change(
                "kernel.rampart_no_such_key (live)",
                None,
                Some(
                    "1 (unknown here: no /proc/sys/kernel/rampart_no_such_key; set in the file \
                     only)"
                )
            ),
        ])
    );
    assert_eq!(
        in_line_text(&after),
        format!(
            "sysctl {file} is in line: 1 key set live and in the file; set in the file, not \
             settable live here (read-only /proc/sys): {KERNEL_KEY} (live {kernel_live}, wanted \
             {kernel_want}); unknown here (no /proc/sys entry), only in the file: \
             kernel.rampart_no_such_key"
        )
    );
    assert_eq!(
        ssh_root(
            HOST,
            &format!("cat {file}; stat -c '%a %U' {file}; cat {NET_PATH} {KERNEL_PATH}")
        ),
        format!("{content}644 root\n1\n{kernel_live}\n")
    );

    // Live drift of the net key alone: exactly that change, and it converges.
    ssh_root(HOST, &format!("echo 0 > {NET_PATH}"));
    let (before, after) = converge(&s, &*r, "sysctl-ct").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change(
            &format!("{NET_KEY} (live)"),
            Some("0"),
            Some("1")
        )])
    );
    assert!(after.is_in_line(), "{after:?}");

    // A hand edit of the file: a text change; the old file is kept as a backup.
    ssh_root(HOST, &format!("echo '# edited' >> {file}"));
    let (before, after) = converge(&s, &*r, "sysctl-ct").await;
    assert_eq!(before.action(), "modify");
    assert_eq!(before.changes()[0].field, "content");
    assert!(after.is_in_line(), "{after:?}");
    let backup = format!("{}{file}", ctx("sysctl-ct").backup_dir());
    assert_eq!(
        ssh_root(HOST, &format!("cat {backup}")),
        format!("{content}# edited\n")
    );
    ssh_root(
        HOST,
        &format!(
            "rm -f {file}; rm -rf {}; echo 0 > {NET_PATH}",
            ctx("sysctl-ct").backup_dir()
        ),
    );
}

#[tokio::test]
async fn sysctl_on_a_vm_sets_the_kernel_key_live() {
    let file = "/etc/sysctl.d/61-rampart-test-vm.conf";
    let original = ssh_root(VM, &format!("rm -f {file}; cat {KERNEL_PATH}"))
        .trim()
        .to_string();
    let want = if original == "7" { "8" } else { "7" };
    let s = root(VM).await;
    let r = build(&SYSCTL, json!({"file": file, "values": {KERNEL_KEY: want}}));
    let (before, after) = converge(&s, &*r, "sysctl-vm").await;
    // Restore first, so that a failed assertion leaves the VM as it was.
    let live = ssh_root(
        VM,
        &format!("cat {KERNEL_PATH}; cat {file}; rm -f {file}; echo {original} > {KERNEL_PATH}"),
    );
    assert_eq!(
        before.changes()[1],
        change(&format!("{KERNEL_KEY} (live)"), Some(&original), Some(want))
    );
    assert_eq!(
        in_line_text(&after),
        format!("sysctl {file} is in line: 1 key set live and in the file")
    );
    assert_eq!(
        live,
        format!(
            "{want}\n# Written by rampart (sysctl step); local edits are overwritten.\n\
             {KERNEL_KEY} = {want}\n"
        )
    );
    assert_eq!(
        ssh_root(VM, &format!("cat {KERNEL_PATH}")).trim(),
        original,
        "restored"
    );
}

// ---------------------------------------------------------------------------------------------
// package

#[tokio::test]
async fn packages_install_from_the_local_repository_and_remove() {
    let repo = ssh_root(
        HOST,
        "test -f /srv/rampart-repo/Packages && echo yes || echo no",
    );
    if repo.trim() != "yes" {
        eprintln!(
            "SKIPPED packages_install_from_the_local_repository_and_remove: {HOST} has no local \
             package repository (/srv/rampart-repo); its image predates tests/testbed/image.sh's \
             build_local_repo. Rebuild the image (testbed down; testbed up) to run this test."
        );
        return;
    }
    ssh_root(
        HOST,
        "if dpkg-query -W -f='${db:Status-Abbrev}' hello 2>/dev/null | grep -q '^.i'; then \
         apt-get remove -y hello >/dev/null 2>&1; fi; true",
    );
    let s = root(HOST).await;

    // hello: installed from the repository, then removed.
    let hello = build(&PACKAGE, json!({"names": ["hello"]}));
    let (before, after) = converge(&s, &*hello, "pkg").await;
    assert_eq!(
        before,
        Verdict::Create(vec![change("hello", None, Some("installed"))])
    );
    assert!(
        in_line_text(&after).starts_with("package hello is in line: installed (hello "),
        "{after:?}"
    );
    assert_eq!(ssh_root(HOST, "hello"), "Hello, world!\n");
    let gone = build(&PACKAGE, json!({"names": "hello", "state": "absent"}));
    let (before, after) = converge(&s, &*gone, "pkg").await;
    assert_eq!(before.action(), "remove");
    assert_eq!(
        after,
        Verdict::InLine("package hello is in line: absent".into())
    );
    assert_eq!(ssh_root(HOST, "command -v hello || echo gone"), "gone\n");

    // less, in the image: removed (nothing depends on it), then put back from the repository.
    let less_present = build(&PACKAGE, json!({"names": ["less"]}));
    converge(&s, &*less_present, "pkg").await;
    let less_gone = build(&PACKAGE, json!({"names": ["less"], "state": "absent"}));
    let (before, after) = converge(&s, &*less_gone, "pkg").await;
    assert_eq!(before.action(), "remove", "{before:?}");
    assert!(
        before.changes()[0]
            .before
            .as_deref()
            .unwrap()
            .starts_with("installed ("),
        "{before:?}"
    );
    assert!(after.is_in_line(), "{after:?}");
    // Removed (dpkg's `un`, or `rc` for a package with config files), not installed.
    let status = ssh_root(
        HOST,
        "command -v less || echo gone; dpkg-query -W -f='${db:Status-Abbrev}\n' less",
    );
    assert!(
        status == "gone\nun \n" || status == "gone\nrc \n",
        "{status:?}"
    );
    let (before, after) = converge(&s, &*less_present, "pkg").await;
    assert_eq!(
        before,
        Verdict::Create(vec![change("less", None, Some("installed"))])
    );
    assert!(after.is_in_line(), "{after:?}");

    // A removal that would take other packages with it is refused, naming them.
    let lib = build(
        &PACKAGE,
        json!({"names": ["libnftables1"], "state": "absent"}),
    );
    let err = converge_one(&s, &*lib, &ctx("pkg")).await.unwrap_err();
    assert!(
        err.contains("rampart: removing libnftables1 would also remove nftables"),
        "{err}"
    );
    assert_eq!(
        ssh_root(
            HOST,
            "dpkg-query -W -f='${db:Status-Abbrev}\n' nftables libnftables1"
        ),
        "ii \nii \n"
    );

    // An install that fails shows apt's stderr.
    let nosuch = build(&PACKAGE, json!({"names": ["rampart-no-such-package"]}));
    let err = converge_one(&s, &*nosuch, &ctx("pkg")).await.unwrap_err();
    assert!(
        err.contains("E: Unable to locate package rampart-no-such-package"),
        "{err}"
    );
    assert!(
        err.contains("rampart: apt-get install rampart-no-such-package failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// service

/// Installs a harmless unit `NAME.service` (sleep) in /usr/local/lib/systemd/system, so that it
/// can be masked, stopped, disabled and unmasked.
fn install_sleep_unit(name: &str) {
    ssh_root(
        HOST,
        &format!(
            "systemctl unmask {name}.service 2>/dev/null; systemctl disable --now {name}.service \
             2>/dev/null; mkdir -p /usr/local/lib/systemd/system && printf \
             '[Unit]\\nDescription=rampart test\\n[Service]\\nExecStart=/bin/sleep infinity\\n\
             [Install]\\nWantedBy=multi-user.target\\n' > \
             /usr/local/lib/systemd/system/{name}.service && systemctl daemon-reload"
        ),
    );
}

fn remove_sleep_unit(name: &str) {
    ssh_root(
        HOST,
        &format!(
            "systemctl unmask {name}.service 2>/dev/null; systemctl disable --now {name}.service \
             2>/dev/null; rm -f /usr/local/lib/systemd/system/{name}.service; \
             systemctl daemon-reload"
        ),
    );
}

fn unit_state(unit: &str) -> String {
    ssh_root(
        HOST,
        &format!("systemctl is-enabled {unit}; systemctl is-active {unit}; true"),
    )
}

fn main_pid(unit: &str) -> String {
    ssh_root(HOST, &format!("systemctl show -p MainPID --value {unit}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn a_service_is_started_enabled_stopped_disabled_and_restarted_as_a_handler() {
    let name = "rampart-svc-test";
    let unit = format!("{name}.service");
    install_sleep_unit(name);
    let s = root(HOST).await;

    let on = build(
        &SERVICE,
        json!({"name": name, "enabled": true, "state": "started"}),
    );
    let (before, after) = converge(&s, &*on, "svc").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![
            change("enabled", Some("disabled"), Some("enabled")),
            change("state", Some("inactive"), Some("active")),
        ])
    );
    assert_eq!(
        after,
        Verdict::InLine(format!("service {name} is in line: enabled, active"))
    );
    assert_eq!(unit_state(&unit), "enabled\nactive\n");

    // As a handler: the engine applies an empty Modify, without a probe.
    let handler = build(&SERVICE, json!({"name": unit, "restarted": true}));
    let pid = main_pid(&unit);
    run(&s, handler.apply(&Verdict::Modify(vec![]), &ctx("svc"))).await;
    let new_pid = main_pid(&unit);
    assert!(new_pid != pid && new_pid != "0", "{pid} -> {new_pid}");

    let off = build(
        &SERVICE,
        json!({"name": name, "enabled": false, "state": "stopped"}),
    );
    let (before, after) = converge(&s, &*off, "svc").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![
            change("enabled", Some("enabled"), Some("disabled")),
            change("state", Some("active"), Some("inactive")),
        ])
    );
    assert!(after.is_in_line(), "{after:?}");
    assert_eq!(unit_state(&unit), "disabled\ninactive\n");

    // A reload handler leaves a stopped unit stopped, and says so.
    let reload = build(&SERVICE, json!({"name": name, "reloaded": true}));
    let said = run(&s, reload.apply(&Verdict::Modify(vec![]), &ctx("svc"))).await;
    assert!(said.contains("is not active: nothing to reload"), "{said}");
    assert_eq!(unit_state(&unit), "disabled\ninactive\n");

    // Masked: in line for "off", a clear error for "on".
    ssh_root(HOST, &format!("systemctl mask {unit}"));
    let (before, _) = converge(&s, &*off, "svc").await;
    assert!(before.is_in_line(), "{before:?}");
    let err = converge_one(&s, &*on, &ctx("svc")).await.unwrap_err();
    assert!(
        err.contains(&format!("unit {name} is masked (is-enabled: masked)")),
        "{err}"
    );
    assert!(err.contains(&format!("systemctl unmask {name}")), "{err}");
    assert_eq!(unit_state(&unit), "masked\ninactive\n");
    remove_sleep_unit(name);
}

#[tokio::test]
async fn a_service_systemd_does_not_know_is_a_clear_error() {
    let s = root(HOST).await;
    let r = build(
        &SERVICE,
        json!({"name": "rampart-no-such.service", "state": "started"}),
    );
    let err = converge_one(&s, &*r, &ctx("svc-none")).await.unwrap_err();
    assert!(
        err.contains("systemd has no unit rampart-no-such.service on this host"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// unit

#[tokio::test]
async fn a_unit_is_written_started_and_restarted_when_it_changes() {
    let name = "rampart-unit-test.service";
    let path = format!("/etc/systemd/system/{name}");
    let clean = format!(
        "systemctl disable --now {name} 2>/dev/null; rm -f {path}; systemctl daemon-reload"
    );
    ssh_root(HOST, &clean);
    let content = |text: &str| {
        format!(
            "[Unit]\nDescription={text}\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        )
    };
    let unit = |text: &str| {
        build(
            &UNIT,
            json!({"name": name, "content": content(text), "enabled": true,
                   "state": "started"}),
        )
    };
    let s = root(HOST).await;
    let (before, after) = converge(&s, &*unit("rampart test"), "unit").await;
    assert_eq!(
        before,
        Verdict::Create(vec![
            change("content", None, Some(&content("rampart test"))),
            change("enabled", None, Some("enabled")),
            change("state", None, Some("active")),
        ])
    );
    assert_eq!(
        after,
        Verdict::InLine(format!(
            "unit {name} is in line: {path} as given; enabled, active"
        ))
    );
    assert_eq!(unit_state(name), "enabled\nactive\n");
    let pid = main_pid(name);

    // A changed file: written, daemon-reload, restarted.
    let (before, after) = converge(&s, &*unit("rampart test, changed"), "unit").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change(
            "content",
            Some(&content("rampart test")),
            Some(&content("rampart test, changed"))
        )])
    );
    assert!(after.is_in_line(), "{after:?}");
    let new_pid = main_pid(name);
    assert!(
        new_pid != pid && new_pid != "0",
        "restarted: {pid} -> {new_pid}"
    );
    assert_eq!(
        ssh_root(
            HOST,
            &format!("systemctl show -p Description --value {name}; stat -c '%a %U' {path}")
        ),
        "rampart test, changed\n644 root\n"
    );
    let backup = format!("{}{path}", ctx("unit").backup_dir());
    assert_eq!(
        ssh_root(HOST, &format!("cat {backup}")),
        content("rampart test")
    );

    // Stopped by hand: started again, not restarted needlessly.
    ssh_root(HOST, &format!("systemctl stop {name}"));
    let (before, after) = converge(&s, &*unit("rampart test, changed"), "unit").await;
    assert_eq!(
        before,
        Verdict::Modify(vec![change("state", Some("inactive"), Some("active"))])
    );
    assert!(after.is_in_line(), "{after:?}");
    ssh_root(
        HOST,
        &format!("{clean}; rm -rf {}", ctx("unit").backup_dir()),
    );
}
