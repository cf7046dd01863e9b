//! The REAL OpenClaw (2026.9.6 on Node 24) installed and run by `playbooks/site.yaml` on two
//! fresh hosts (h35, h36, made fresh here), from an inventory with no workaround: only the
//! install sources point at the testbed's read-only agent cache (/srv/rampart-agent; hosts
//! have no route out). Issue 10: the apply used to exit 0 while the gateway restarted for
//! ever (exit 78). Checked on each host: the gateway is active (not restarting), then ready: listens
//! on loopback only, `/health` answers, HTTP and WebSocket refuse no token and a wrong token
//! and take the right one, the controller cannot reach the port, OpenClaw's own
//! `security audit --deep` finds nothing critical, and after two minutes of the gateway
//! running (its migrations, its own state) a plan is still in line.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;

const HOSTS: [&str; 2] = ["h35", "h36"];
const NODE: &str = "/opt/rampart-agent/node-v24.22.3/bin/node";

fn testbed(args: &[&str]) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed"))
        .args(args)
        // A machine busy with the rest of the suite can take longer than the default 60 s.
        .env("RAMPART_TESTBED_BOOT_TIMEOUT", "300")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testbed {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn run(dir: &Path, inv: &Path, cmd: &str) -> std::process::Output {
    rampart(dir)
        .args([cmd, "--format", "json", "-q", "-i"])
        .arg(inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yaml"))
        .output()
        .unwrap()
}

/// As root on the host, through the admin login the site playbook made (root's is closed).
fn sudo(host: &str, script: &str) -> String {
    ssh_as(
        "admin",
        host,
        &format!("sudo -n sh -c {}", shell_quote(script)),
    )
    .unwrap_or_else(|e| panic!("{host}: `{script}`: {e}"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// On the host: /health, then /tools/invoke and the WebSocket handshake with no token, a wrong
/// token and the right one (read from the host's token file into the environment, never
/// printed). One JSON line of status codes and outcomes.
const AUTH_CHECK: &str = r#"
const port = 18789, good = process.env.T;
const invoke = async (tok) => (await fetch(`http://127.0.0.1:${port}/tools/invoke`, {
  method: "POST",
  headers: { "content-type": "application/json", ...(tok === null ? {} : { authorization: `Bearer ${tok}` }) },
  body: JSON.stringify({ tool: "sessions_list", action: "json", args: {} }),
})).status;
const ws = (tok) => new Promise((resolve) => {
  const s = new WebSocket(`ws://127.0.0.1:${port}`);
  const done = (r) => { try { s.close(); } catch {} resolve(r); };
  setTimeout(() => done("timeout"), 20000);
  s.onmessage = (m) => {
    const f = JSON.parse(m.data);
    if (f.type === "event" && f.event === "connect.challenge") {
      s.send(JSON.stringify({ type: "req", id: "1", method: "connect", params: {
        minProtocol: 4, maxProtocol: 4,
        client: { id: "gateway-client", version: "1", platform: "linux", mode: "backend" },
        role: "operator", scopes: ["operator.read"], caps: [], commands: [], permissions: {},
        ...(tok === null ? {} : { auth: { token: tok } }) } }));
    } else if (f.type === "res" && f.id === "1") {
      done(f.ok ? "accepted" : `refused: ${f.error?.details?.code ?? f.error?.code}`);
    }
  };
  s.onclose = () => done("closed");
  s.onerror = () => done("error");
});
// Listening comes before ready (its channels and sidecars start after): until then an
// authorized call fails with 500. A bounded wait for the first authorized success.
for (let i = 0; i < 90 && (await invoke(good)) !== 200; i++) {
  await new Promise((r) => setTimeout(r, 2000));
}
const health = (await fetch(`http://127.0.0.1:${port}/health`)).status;
const out = { health, http: {}, ws: {} };
for (const [k, t] of [["none", null], ["wrong", "0".repeat(64)], ["right", good]]) {
  out.http[k] = await invoke(t);
  out.ws[k] = await ws(t);
}
console.log(JSON.stringify(out));
"#;

#[test]
fn the_real_openclaw_installs_starts_and_stays_in_line() {
    testbed(&["fresh", "h35", "h36"]);
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    let mut text = format!(
        "all:\n  vars:\n    user: admin\n    bootstrap_user: root\n    identity: {}\n    agent_install: true\n    \
         agent_node_dist: /srv/rampart-agent/node\n    agent_npm_cache: /srv/rampart-agent/npm-cache\n  hosts:\n",
        test_key().display()
    );
    for h in HOSTS {
        text.push_str(&format!("    {h}: {{address: {}}}\n", addr(h)));
    }
    std::fs::write(&inv, text).unwrap();

    let started = Instant::now();
    let apply = run(dir.path(), &inv, "apply");
    eprintln!(
        "openclaw: site.yaml with the agent install on {} fresh hosts took {:.0} s",
        HOSTS.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );

    for h in HOSTS {
        // Active (started, not restarting), then ready: it listens. Its start takes a minute
        // or more on a busy 2-core machine (plugins, migrations); a bounded wait, not a timed
        // assertion.
        let ready = sudo(
            h,
            "for i in $(seq 300); do ss -ltnH 'sport = :18789' | grep -q . && break; sleep 1; done; \
             systemctl is-active openclaw-gateway.service; systemctl show -p NRestarts --value openclaw-gateway.service; \
             ss -ltnH 'sport = :18789' | awk '{print $4}' | sort",
        );
        let lines: Vec<&str> = ready.lines().collect();
        assert_eq!(lines.first(), Some(&"active"), "{h}: {ready}");
        assert_eq!(
            lines.get(1),
            Some(&"0"),
            "{h}: the gateway restarted: {ready}"
        );
        let listeners = &lines[2..];
        assert!(!listeners.is_empty(), "{h}: nothing listens on 18789");
        assert!(
            listeners
                .iter()
                .all(|l| l.starts_with("127.0.0.1:") || l.starts_with("[::1]:")),
            "{h}: the gateway listens off loopback: {listeners:?}"
        );
        // Installed where the agent cannot write, the pinned version.
        assert_eq!(
            sudo(
                h,
                "cd / && stat -c '%U %a' /opt/rampart-agent /opt/rampart-agent/openclaw-2026.9.6 /opt/rampart-agent/node-v24.22.3; \
                 runuser -u openclaw -- /usr/local/bin/openclaw --version | grep -o '2026[.0-9]*' | head -n1"
            ),
            "root 755\nroot 755\nroot 755\n2026.9.6\n",
            "{h}"
        );

        // HTTP and WebSocket, from the host.
        let auth = sudo(
            h,
            &format!(
                ". /etc/openclaw/token.env; T=$AGENT_AUTH_TOKEN {NODE} --input-type=module -e {}",
                shell_quote(AUTH_CHECK)
            ),
        );
        let auth: Value =
            serde_json::from_str(auth.trim()).unwrap_or_else(|e| panic!("{h}: {e}: {auth}"));
        assert_eq!(auth["health"], 200, "{h}: {auth}");
        assert_eq!(auth["http"]["none"], 401, "{h}: {auth}");
        assert_eq!(auth["http"]["wrong"], 401, "{h}: {auth}");
        assert_eq!(auth["http"]["right"], 200, "{h}: {auth}");
        assert_eq!(
            auth["ws"]["none"], "refused: DEVICE_IDENTITY_REQUIRED",
            "{h}: {auth}"
        );
        assert_eq!(
            auth["ws"]["wrong"], "refused: AUTH_TOKEN_MISMATCH",
            "{h}: {auth}"
        );
        assert_eq!(auth["ws"]["right"], "accepted", "{h}: {auth}");

        // From the controller the port is closed.
        let target: SocketAddr = format!("{}:18789", addr(h)).parse().unwrap();
        assert!(
            TcpStream::connect_timeout(&target, Duration::from_secs(3)).is_err(),
            "{h}: the agent port answers from outside"
        );

        // OpenClaw's own audit, as the agent with its token: nothing critical.
        let audit = sudo(
            h,
            "cd / && . /etc/openclaw/token.env && runuser -u openclaw -- env -i HOME=/home/openclaw \
             XDG_CACHE_HOME=/home/openclaw/.openclaw/cache PATH=/usr/local/bin:/usr/bin:/bin \
             AGENT_AUTH_TOKEN=\"$AGENT_AUTH_TOKEN\" openclaw security audit --deep --json 2>/dev/null",
        );
        let audit: Value =
            serde_json::from_str(&audit).unwrap_or_else(|e| panic!("{h}: {e}: {audit}"));
        eprintln!(
            "openclaw: {h}: security audit summary: {}",
            audit["summary"]
        );
        assert_eq!(audit["summary"]["critical"], 0, "{h}: {audit:#}");
    }

    // Two minutes of the gateway running (imports, migrations, its own state), then no drift:
    // nothing rampart manages moved (e.g. the exec approvals in its state database).
    std::thread::sleep(Duration::from_secs(120));
    let plan = run(dir.path(), &inv, "plan");
    assert_eq!(
        plan.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
    for h in HOSTS {
        assert_eq!(
            sudo(
                h,
                "systemctl show -p NRestarts --value openclaw-gateway.service"
            ),
            "0\n",
            "{h}"
        );
    }
}

/// The unit used to send the gateway's output to `StandardOutput=append:` a file in the
/// agent's logs folder: systemd opens that path as root, so the agent (the attacker, who owns
/// the folder) could make it a link and have root append to any file. Now the output goes to
/// the journal: the agent's link leads nowhere. Played on h37 (made fresh here) with a
/// stand-in gateway that prints a line at start.
#[test]
fn the_agent_cannot_make_root_write_through_a_link_in_its_logs() {
    testbed(&["fresh", "h37"]);
    let dir = tempfile::tempdir().unwrap();
    let standin = "/bin/sh -c 'echo agent-output-marker; exec /usr/bin/python3 -m http.server --bind 127.0.0.1 18789'";
    let inv = write_inventory(
        dir.path(),
        &[(
            "h37",
            // A JSON string is a YAML double-quoted scalar.
            &format!(
                "address: {}, agent_command: {}",
                addr("h37"),
                serde_json::to_string(standin).unwrap()
            ),
        )],
    );
    let apply = rampart(dir.path())
        .args(["apply", "--format", "json", "-q", "-i"])
        .arg(&inv)
        .arg("--known-hosts")
        .arg(known_hosts())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/agent-gateway.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        apply.status.code(),
        exit_code(Outcome::Ok),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    // The attack: as the agent, links where the old unit wrote, then the gateway restarts.
    let out = ssh_root(
        "h37",
        "for f in gateway.log openclaw.log; do runuser -u openclaw -- ln -sf /etc/rampart-attacked /home/openclaw/.openclaw/logs/$f; done; \
         systemctl restart openclaw-gateway.service; \
         for i in $(seq 60); do journalctl -u openclaw-gateway.service -o cat | grep -q agent-output-marker && break; sleep 1; done; \
         journalctl -u openclaw-gateway.service -o cat | grep -c agent-output-marker; \
         ls /etc/rampart-attacked 2>&1 || true",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains("No such file"),
        "root wrote through the agent's link: {out}"
    );
    assert_ne!(lines[0], "0", "the output is in the journal: {out}");
}
