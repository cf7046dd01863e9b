//! `rampart schedule`: the binary prints and installs the nightly drift's systemd units and
//! cron.d file; `systemd-analyze verify` checks the units (quoting included: it resolves the
//! executable's path as systemd would run it). No testbed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::Command as Cmd;

use super::common::{Outcome, exit_code};

/// A folder with an inventory and a playbook, the playbook under a name with a space.
fn fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.yaml"), "all: {}\n").unwrap();
    std::fs::create_dir(dir.path().join("fleet dir")).unwrap();
    std::fs::write(dir.path().join("fleet dir/my site.yaml"), "steps: []\n").unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `systemd-analyze verify` on unit files outside systemd's search path. It loads them by
/// path (and the timer's service beside it), checks every key, and that ExecStart's
/// executable exists and is executable. It needs no running systemd (this runs in a
/// container whose PID 1 is not systemd).
fn verify(units: &[PathBuf]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn install_writes_units_that_systemd_accepts() {
    let dir = fleet();
    let d = dir.path();
    std::fs::create_dir(d.join("units")).unwrap();
    let out = Cmd::cargo_bin("rampart")
        .unwrap()
        .current_dir(d)
        .args(["schedule", "-i", "inventory.yaml", "fleet dir/my site.yaml"])
        .args(["--install", "--no-enable", "--unit-dir", "units"])
        .args(["--textfile-dir", "prom 100%", "--json", "state/drift.json"])
        .args(["--at", "02:30"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("wrote units/rampart-drift.service\n"),
        "{stdout}"
    );
    assert!(stdout.contains("not enabled (--no-enable)"), "{stdout}");

    let service = d.join("units/rampart-drift.service");
    let timer = d.join("units/rampart-drift.timer");
    assert_eq!(mode(&service), 0o644);
    assert_eq!(mode(&timer), 0o644);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(d.join("units")).unwrap().count(), 2);
    // The report folders exist, so the first night's run can write.
    assert!(d.join("prom 100%").is_dir());
    assert!(d.join("state").is_dir());

    let text = std::fs::read_to_string(&service).unwrap();
    let exe = assert_cmd::cargo::cargo_bin("rampart");
    let root = d.canonicalize().unwrap();
    let root = root.display();
    let exec = format!(
        "ExecStart={} drift -i {root}/inventory.yaml \"{root}/fleet dir/my site.yaml\" -q \
         --output \"{root}/prom 100%%/rampart.prom\" --output {root}/state/drift.json\n",
        exe.display()
    );
    assert!(text.contains(&exec), "{text}\nwanted {exec}");
    assert!(text.contains("SuccessExitStatus=2\n"));
    assert!(text.contains("Type=oneshot\n"));
    let timer_text = std::fs::read_to_string(&timer).unwrap();
    assert!(
        timer_text.contains("OnCalendar=*-*-* 02:30:00\n"),
        "{timer_text}"
    );

    verify(&[service, timer]);
}

/// An executable under a path with a space, `$` and `%`: systemd must find it as written.
#[test]
fn units_name_an_awkward_executable_path_correctly() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bin = dir.path().join("bin dir $HOME %n");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("rampart");
    let built = assert_cmd::cargo::cargo_bin("rampart");
    if std::fs::hard_link(&built, &exe).is_err() {
        std::fs::copy(&built, &exe).unwrap();
    }
    let fleet = fleet();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let out = Command::new(&exe)
        .current_dir(fleet.path())
        .args(["schedule", "-i", "inventory.yaml", "fleet dir/my site.yaml"])
        .args(["--install", "--no-enable"])
        .arg("--unit-dir")
        .arg(&units)
        .arg("--textfile-dir")
        .arg(fleet.path().join("prom"))
        .arg("--json")
        .arg(fleet.path().join("drift.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let service = units.join("rampart-drift.service");
    let text = std::fs::read_to_string(&service).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart=\"{}/bin dir $HOME %%n/rampart\" drift ",
            dir.path().display()
        )),
        "{text}"
    );
    verify(&[service, units.join("rampart-drift.timer")]);
}

#[test]
fn install_cron_writes_a_cron_d_file() {
    let dir = fleet();
    let d = dir.path();
    std::fs::create_dir(d.join("cron.d")).unwrap();
    Cmd::cargo_bin("rampart")
        .unwrap()
        .current_dir(d)
        .args(["schedule", "-i", "inventory.yaml", "fleet dir/my site.yaml"])
        .args([
            "--cron",
            "--install",
            "--cron-dir",
            "cron.d",
            "--name",
            "nightly_drift",
        ])
        .args([
            "--textfile-dir",
            "prom",
            "--json",
            "drift.json",
            "--user",
            "rampart",
        ])
        .assert()
        .success();
    let file = d.join("cron.d/nightly_drift");
    assert_eq!(mode(&file), 0o644);
    let text = std::fs::read_to_string(&file).unwrap();
    let exe = assert_cmd::cargo::cargo_bin("rampart");
    let root = d.canonicalize().unwrap();
    let root = root.display();
    let line = format!(
        "0 3 * * * rampart {} drift -i {root}/inventory.yaml '{root}/fleet dir/my site.yaml' -q \
         --output {root}/prom/rampart.prom --output {root}/drift.json >/dev/null\n",
        exe.display()
    );
    assert!(text.ends_with(&line), "{text}\nwanted {line}");
}

#[test]
fn prints_by_default_with_how_to_install() {
    let dir = fleet();
    let out = Cmd::cargo_bin("rampart")
        .unwrap()
        .current_dir(dir.path())
        .args(["schedule", "-i", "inventory.yaml", "fleet dir/my site.yaml"])
        .args(["--known-hosts", "/etc/rampart/known_hosts"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let root = dir.path().canonicalize().unwrap().display().to_string();
    let exe = assert_cmd::cargo::cargo_bin("rampart")
        .display()
        .to_string();
    let (exe, root) = (regex::escape(&exe), regex::escape(&root));
    insta::with_settings!({filters => vec![
        (exe.as_str(), "[RAMPART]"),
        (root.as_str(), "[TEMP_DIR]"),
    ]}, {
        insta::assert_snapshot!(stdout, @r#"
        # The nightly drift as a systemd service and timer. To install by hand, save the two
        # units below as /etc/systemd/system/rampart-drift.service and /etc/systemd/system/rampart-drift.timer, then:
        #   mkdir -p /var/lib/prometheus/node-exporter /var/lib/rampart
        #   systemctl daemon-reload && systemctl enable --now rampart-drift.timer
        # Or run this command again with --install. Next run: systemctl list-timers rampart-drift.timer;
        # last run: journalctl -u rampart-drift.service.

        # ==> /etc/systemd/system/rampart-drift.service <==
        # rampart-drift.service: generated by `rampart schedule`.
        # The nightly `rampart drift` of the fleet; rampart-drift.timer starts it.
        [Unit]
        Description=rampart drift: the fleet against my site.yaml
        Wants=network-online.target
        After=network-online.target

        [Service]
        Type=oneshot
        User=root
        # Exit status 2 means "a host drifted": that is news for the metrics and the JSON
        # report, not a failure of this unit. Only errors (1: a host unreachable or failed,
        # bad input) fail it, and rampart_host_unreachable says which host.
        SuccessExitStatus=2
        ExecStart=[RAMPART] drift -i [TEMP_DIR]/inventory.yaml "[TEMP_DIR]/fleet dir/my site.yaml" -q --output /var/lib/prometheus/node-exporter/rampart.prom --output /var/lib/rampart/drift.json --known-hosts /etc/rampart/known_hosts
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

        # ==> /etc/systemd/system/rampart-drift.timer <==
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
        "#);
    });
}

#[test]
fn refuses_what_it_cannot_schedule() {
    let dir = fleet();
    let run = |args: &[&str]| {
        let out = Cmd::cargo_bin("rampart")
            .unwrap()
            .current_dir(dir.path())
            .arg("schedule")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), exit_code(Outcome::Failed), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let err = run(&["-i", "missing.yaml", "fleet dir/my site.yaml"]);
    assert!(
        err.contains("inventory") && err.contains("missing.yaml not found"),
        "{err}"
    );
    let err = run(&[
        "-i",
        "inventory.yaml",
        "fleet dir/my site.yaml",
        "--cron",
        "--at",
        "nightly",
    ]);
    assert!(err.contains("five"), "{err}");
    let err = run(&[
        "-i",
        "inventory.yaml",
        "fleet dir/my site.yaml",
        "--name",
        "a.b",
    ]);
    assert!(err.contains("letters, digits"), "{err}");
    let err = run(&[
        "-i",
        "inventory.yaml",
        "fleet dir/my site.yaml",
        "--install",
        "--unit-dir",
        "no-such-dir",
    ]);
    assert!(
        err.contains("unit folder") && err.contains("--unit-dir"),
        "{err}"
    );
}
