//! Issue 10: `rampart apply` exited 0 while the gateway never came up, and `drift` said "in
//! line". Here the agent is provisioned with site.yaml, then stopped, crash-looped, and
//! loosened with a unit drop-in by hand; `drift` and `audit` must say so (`agent.down` with
//! the journal's lines, `agent.unit_dropin`), and `apply` must bring it back.
//!
//! Against the REAL OpenClaw (2026.9.6), installed by `agent_install: true` from the testbed's
//! read-only agent cache (/srv/rampart-agent, `testbed agent`).
//!
//! Hosts: h38 (drift and audit), h39 (the tunnel); each made fresh at its test's start, so the
//! tests can rerun.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::common::*;

const HOST: &str = "h38";

/// The gateway's token, a rampart secret; `RAMPART_TEST_SECRET_VALUE` makes it unique per run
/// so that the suite can grep all output for it.
fn agent_token() -> String {
    let run = std::env::var("RAMPART_TEST_SECRET_VALUE")
        .unwrap_or_else(|_| "tok-5e0c1d2a9b8f7e6d-secret".into());
    format!("{run}-agent-health-token-32-chars-or-more")
}

/// The inventory of one host running the real OpenClaw, installed offline from the testbed's
/// agent cache.
fn inventory_of(host: &str) -> Value {
    serde_json::json!({"all": {
        "vars": {"user": "admin", "bootstrap_user": "root", "identity": test_key(),
                 "agent_install": true,
                 "agent_node_dist": "/srv/rampart-agent/node",
                 "agent_npm_cache": "/srv/rampart-agent/npm-cache",
                 "agent_token": {"secret": {"env": "RAMPART_TEST_AGENT_TOKEN"}}},
        "hosts": {host: {"address": addr(host)}}}})
}

/// The first apply installs Node and OpenClaw (minutes on a busy 2-core machine) after the
/// firewall and sshd changes, with the defaults a user gets: the risky changes are confirmed
/// right after their own step, and apply's script may run half an hour.
const FIRST_APPLY: &[&str] = &[];

fn site() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yaml")
}

/// `testbed ARGS`, tried again when another engineer's `testbed fresh` is rewriting the
/// shared records at the same moment.
pub(super) fn testbed(args: &[&str]) {
    let go = || {
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
            .args(args)
            .output()
            .unwrap()
    };
    let mut out = go();
    for _ in 0..3 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        out = go();
    }
    assert!(
        out.status.success(),
        "testbed {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Root on the host, once site.yaml closed root's login: the admin with sudo.
fn sudo(script: &str) -> String {
    let quoted = format!("'{}'", script.replace('\'', r"'\''"));
    ssh_as("admin", HOST, &format!("sudo sh -c {quoted}"))
        .unwrap_or_else(|e| panic!("{HOST}: {script}: {e}"))
}

struct Run {
    dir: tempfile::TempDir,
    inv: PathBuf,
    /// Everything rampart printed, to check that the token never shows.
    printed: String,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yaml");
        let text = serde_json::to_string_pretty(&inventory_of(HOST)).unwrap();
        std::fs::write(&inv, text).unwrap();
        Run {
            dir,
            inv,
            printed: String::new(),
        }
    }

    fn rampart(&mut self, cmd: &str) -> Output {
        self.rampart_with(cmd, &[])
    }

    fn rampart_with(&mut self, cmd: &str, extra: &[&str]) -> Output {
        let mut args = vec![cmd, "-q", "-i"];
        let inv = self.inv.display().to_string();
        args.push(&inv);
        if cmd != "apply" {
            args.extend(["--format", "json"]);
        }
        args.extend(extra);
        let out = rampart(self.dir.path())
            .env("RAMPART_TEST_AGENT_TOKEN", agent_token())
            .args(&args)
            .arg("--known-hosts")
            .arg(known_hosts())
            .arg(site())
            .output()
            .unwrap();
        self.printed.push_str(&stdout(&out));
        self.printed.push_str(&stderr(&out));
        out
    }

    fn apply(&mut self) {
        let out = self.rampart("apply");
        assert_eq!(
            out.status.code(),
            exit_code(Outcome::Ok),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// `drift` or `audit`: its exit code and this host's report.
    fn check(&mut self, cmd: &str) -> (Option<i32>, Value) {
        let out = self.rampart(cmd);
        let report = json(&out);
        (out.status.code(), host(&report, HOST).clone())
    }
}

fn findings(h: &Value, id: &str) -> Vec<Value> {
    h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == id)
        .cloned()
        .collect()
}

fn ids(h: &Value) -> Vec<String> {
    h["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn check<'a>(h: &'a Value, id: &str) -> &'a Value {
    h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {h:#}"))
}

fn evidence(v: &Value) -> String {
    v["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (bounded) until the gateway the apply just restarted answers on its loopback port:
/// the real OpenClaw takes 30-60 s on this busy machine, longer than the scan's own wait
/// when two gateways start at once.
fn wait_for_gateway() {
    sudo(
        "for i in $(seq 180); do bash -c 'exec 3<>/dev/tcp/127.0.0.1/18789' 2>/dev/null && exit 0; sleep 1; done; exit 0",
    );
}

/// In line after an apply: no finding, the agent's checks pass, one round trip.
fn assert_healthy(run: &mut Run, when: &str) {
    wait_for_gateway();
    let (code, h) = run.check("drift");
    assert_eq!(code, exit_code(Outcome::Ok), "{when}: {h:#}");
    assert_eq!(h["status"], "in_line", "{when}: {h:#}");
    assert_eq!(ids(&h), Vec::<String>::new(), "{when}");
    assert_eq!(h["stats"]["round_trips"], 1, "{when}");
}

#[test]
fn drift_and_audit_know_when_the_agent_is_down_crash_looping_or_loosened() {
    testbed(&["fresh", HOST]);
    let mut run = Run::new();
    let out = run.rampart_with("apply", FIRST_APPLY);
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Healthy: drift in line; audit passes the agent's checks, with what it saw. Meanwhile a
    // spy, the agent's own account, reads every command line on the host as fast as it can:
    // the token goes from the root-only env file to the gateway's socket, never into argv.
    sudo(
        "rm -f /var/tmp/spy /var/tmp/spy.done; install -o openclaw -m 600 /dev/null /var/tmp/spy; \
         setsid runuser -u openclaw -- sh -c 'while [ ! -e /var/tmp/spy.done ]; do \
         cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \" >> /var/tmp/spy; echo >> /var/tmp/spy; done' \
         >/dev/null 2>&1 < /dev/null &",
    );
    assert_healthy(&mut run, "after the first apply");
    wait_for_gateway();
    let (code, h) = run.check("audit");
    sudo("touch /var/tmp/spy.done");
    let seen = sudo("wc -l < /var/tmp/spy; grep -c 'timeout 25 bash' /var/tmp/spy || true");
    let counts: Vec<u64> = seen.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(
        counts[1] > 0,
        "the spy never saw the HTTP client run: {seen}"
    );
    // Matched on the host with the token read from its env file (never in this grep's argv).
    let leaked = sudo(
        "sleep 1; sed -n 's/^AGENT_AUTH_TOKEN=//p' /etc/openclaw/agent.env > /root/token \
         && [ -s /root/token ] && grep -c -F -f /root/token /var/tmp/spy; rm -f /root/token",
    );
    assert_eq!(
        leaked.trim(),
        "0",
        "the token showed in a command line on the host"
    );
    assert_eq!(code, exit_code(Outcome::Ok), "{h:#}");
    let running = check(&h, "agent_running");
    assert_eq!(running["status"], "pass", "{running}");
    assert!(
        evidence(running).contains("GET http://127.0.0.1:18789/health: 200"),
        "{running}"
    );
    let auth = check(&h, "auth_enforced");
    assert_eq!(auth["status"], "pass", "{auth}");
    assert_eq!(
        evidence(auth),
        "POST http://127.0.0.1:18789/tools/invoke: 401 without the token, 400 with it"
    );
    assert_eq!(check(&h, "agent_sandbox")["status"], "pass");
    // OpenClaw's own audit ran, as the agent, with the token: no loopback_no_auth.
    let own = check(&h, "openclaw_audit");
    assert_ne!(own["status"], "unknown", "{own}");
    let ev = evidence(own);
    assert!(
        ev.starts_with("/usr/local/bin/openclaw security audit --deep: 0 critical"),
        "{ev}"
    );
    assert!(!ev.contains("gateway.loopback_no_auth"), "{ev}");

    // Stopped: drift exits 2 with agent.down, the journal's lines as evidence; audit fails.
    sudo("systemctl stop openclaw-gateway.service");
    let (code, h) = run.check("drift");
    assert_eq!(code, exit_code(Outcome::Differs), "{h:#}");
    let down = findings(&h, "agent.down");
    assert_eq!(down.len(), 1, "{h:#}");
    assert_eq!(down[0]["severity"], "critical");
    let ev = evidence(&down[0]);
    assert!(
        ev.contains("the unit is inactive (dead), not running"),
        "{ev}"
    );
    assert!(
        ev.contains("GET http://127.0.0.1:18789/health: refused"),
        "{ev}"
    );
    assert!(
        ev.contains("journalctl -u openclaw-gateway.service"),
        "{ev}"
    );
    assert!(ev.contains("Stopped openclaw-gateway.service"), "{ev}");
    let (code, h) = run.check("audit");
    assert_eq!(code, exit_code(Outcome::Differs));
    assert_eq!(check(&h, "agent_running")["status"], "fail");
    assert_eq!(check(&h, "auth_enforced")["status"], "unknown");

    run.apply();
    assert_healthy(&mut run, "after apply started it again");

    // Crash-looping: an ExecStart that exits 1, restarted by systemd every 5 s.
    sudo(
        "sed -i 's|^ExecStart=.*|ExecStart=/bin/false|' /etc/systemd/system/openclaw-gateway.service \
         && systemctl daemon-reload && systemctl restart openclaw-gateway.service \
         && for i in $(seq 100); do [ \"$(systemctl show -p NRestarts --value openclaw-gateway.service)\" -ge 1 ] && break; sleep 0.2; done",
    );
    let (code, h) = run.check("drift");
    assert_eq!(code, exit_code(Outcome::Differs), "{h:#}");
    let down = findings(&h, "agent.down");
    assert_eq!(down.len(), 1, "{h:#}");
    let ev = evidence(&down[0]);
    assert!(ev.contains("restarted"), "{ev}");
    assert!(ev.contains("status=1/FAILURE"), "{ev}");

    run.apply();
    assert_healthy(&mut run, "after apply rewrote the unit");

    // A drop-in that turns the read-only system off: named, with the directive and what
    // systemd runs with now; apply moves it to quarantine.
    let dropin = "/etc/systemd/system/openclaw-gateway.service.d/override.conf";
    sudo(&format!(
        "mkdir -p /etc/systemd/system/openclaw-gateway.service.d \
         && printf '[Service]\\nProtectSystem=no\\nNice=5\\n' > {dropin} \
         && systemctl daemon-reload && systemctl restart openclaw-gateway.service"
    ));
    let (code, h) = run.check("drift");
    assert_eq!(code, exit_code(Outcome::Differs), "{h:#}");
    let loose = findings(&h, "agent.unit_dropin");
    assert_eq!(loose.len(), 1, "{h:#}");
    assert_eq!(loose[0]["subject"], dropin);
    let ev = evidence(&loose[0]);
    assert!(
        ev.contains("ProtectSystem=no: the system is writable beyond strict"),
        "{ev}"
    );
    assert!(
        ev.contains("effective now (systemctl show): ProtectSystem=no"),
        "{ev}"
    );
    assert!(
        !ev.contains("Nice"),
        "a harmless directive is not named: {ev}"
    );
    let (code, h) = run.check("audit");
    assert_eq!(code, exit_code(Outcome::Differs));
    assert_eq!(check(&h, "agent_sandbox")["status"], "fail");

    run.apply();
    assert_healthy(&mut run, "after apply quarantined the drop-in");
    assert_eq!(
        sudo("ls /etc/systemd/system/openclaw-gateway.service.d/ | wc -l").trim(),
        "0"
    );

    assert!(
        !run.printed.contains(&agent_token()),
        "the token was printed:\n{}",
        run.printed
    );
}

/// One HTTP/1.1 request to `127.0.0.1:port`; the status line's code, if any answer came.
fn try_http_status(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1).map(String::from)
}

fn http_status(port: u16, request: &str) -> String {
    try_http_status(port, request).unwrap_or_else(|| panic!("no HTTP answer to {request:?}"))
}

/// `rampart tunnel`: the agent's loopback port, reached from the controller over rampart's
/// own SSH connection, while a direct connect to the host's port fails. Host: h39.
#[test]
fn the_tunnel_reaches_the_agent_that_the_network_cannot() {
    const TUNNEL_HOST: &str = "h39";
    testbed(&["fresh", TUNNEL_HOST]);
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    let text = serde_json::to_string_pretty(&inventory_of(TUNNEL_HOST)).unwrap();
    std::fs::write(&inv, text).unwrap();
    let apply = rampart(dir.path())
        .env("RAMPART_TEST_AGENT_TOKEN", agent_token())
        .args(["apply", "-q", "-i"])
        .arg(&inv)
        .args(FIRST_APPLY)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(site())
        .output()
        .unwrap();
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );

    // An unknown host key is refused, as for every other command.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let refused = rampart(dir.path())
        .args(["tunnel", "-i"])
        .arg(&inv)
        .args([TUNNEL_HOST, "--port", "0", "--known-hosts"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        exit_code(Outcome::Failed),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("hint:"), "{}", stderr(&refused));
    assert_eq!(stdout(&refused), "");

    let mut tunnel = rampart(dir.path())
        .args(["tunnel", "-i"])
        .arg(&inv)
        .args([TUNNEL_HOST, "--port", "0", "--known-hosts"])
        .arg(known_hosts())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tunnel.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    let port: u16 = url
        .trim()
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a local URL: {url:?}"))
        .parse()
        .unwrap();

    let get = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    // The gateway the apply just (re)started takes a while to listen.
    let first = (0..120).find_map(|_| {
        try_http_status(port, get).or_else(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            None
        })
    });
    assert_eq!(first.as_deref(), Some("200"));
    // The very gateway: it refuses a call without the token and takes one with it.
    let post = |auth: &str| {
        format!(
            "POST /tools/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    assert_eq!(http_status(port, &post("")), "401");
    assert_eq!(
        http_status(
            port,
            &post(&format!("Authorization: Bearer {}\r\n", agent_token()))
        ),
        "400"
    );
    // Two at once over the one SSH connection.
    let both = std::thread::scope(|s| {
        let a = s.spawn(|| http_status(port, get));
        let b = s.spawn(|| http_status(port, get));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(both, ("200".to_string(), "200".to_string()));

    // From the network the port is closed: loopback bind, firewall default drop.
    let direct = std::net::TcpStream::connect_timeout(
        &format!("{}:18789", addr(TUNNEL_HOST)).parse().unwrap(),
        std::time::Duration::from_secs(3),
    );
    assert!(direct.is_err(), "the agent's port is reachable directly");

    let kill = Command::new("kill")
        .args(["-TERM", &tunnel.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tunnel.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        exit_code(Outcome::Ok),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("forwarding 127.0.0.1:"), "{err}");
    assert!(!err.contains(&agent_token()));
}
