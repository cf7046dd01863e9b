//! quarantine: cut a host off, all but the controller's SSH, and stop its agent; `release`
//! undoes it.
//!
//! ## Quarantine (one host)
//!
//! 1. The agent's gateway unit (`<agent_user>-gateway.service`) and every timer whose service
//!    runs as the agent are stopped and disabled; the agent's user manager (lingering) is
//!    stopped, and whatever the agent still runs is killed. What was enabled or active is
//!    kept in `/var/lib/rampart/quarantine/` for `release`.
//! 2. The firewall: a table of its own, `table inet rampart_quarantine`, at priority -300
//!    (before any other table: a packet it drops is dropped, whatever the others say; it
//!    coexists with rampart's own `table inet rampart` and any other), policy drop on input,
//!    output and forward, accepting only loopback and TCP between the controller's address
//!    and sshd's port, as the host sees them in this session's `SSH_CONNECTION` (so through a
//!    jump host, the jump host's). Established connections to anywhere else are dropped too:
//!    exfiltration stops. The table is loaded in one `nft -f` transaction, and a oneshot unit
//!    (`rampart-quarantine.service`) loads it again at boot, before the network.
//! 3. The firewall change runs under rampart's dead-man switch (`resource::deadman_arm`): the
//!    controller confirms over a NEW connection; without it the host removes the table (and
//!    the boot unit) by itself after `--deadman-seconds`. The agent stays stopped.
//!
//! Idempotent: a host already quarantined for the same address and port changes nothing (no
//! switch armed); run again from another address, the table is replaced under the switch.
//!
//! ## Release
//!
//! Removes the table, the boot unit and the record, and starts and enables again what the
//! quarantine stopped. It only opens, so it needs no switch.
//!
//! Why not a playbook step: the `nftables` type owns the host's WHOLE ruleset (`flush
//! ruleset`), and `command` steps cannot run under the switch; quarantine needs its own table
//! beside whatever is loaded. The switch itself is the one every risky step uses.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fleet::connect_host;
use crate::inventory::Host;
use crate::remote::Script;
use crate::resource::{ApplyContext, deadman_arm};
use crate::transport::Session;
use crate::transport::ssh::ConnectOptions;

/// The table quarantine owns.
pub const TABLE: &str = "rampart_quarantine";
/// Where quarantine keeps its record and the ruleset the boot unit loads.
pub const STATE_DIR: &str = "/var/lib/rampart/quarantine";
/// The unit that loads the table at boot.
pub const BOOT_UNIT: &str = "rampart-quarantine.service";

/// Shared by both scripts: the variables and `die`.
const PRELUDE: &str = r#"PATH="$PATH:/usr/sbin:/sbin"
die() { printf 'rampart: %s\n' "$*" >&2; exit 1; }
command -v nft >/dev/null 2>&1 || die "nft is not installed: quarantine needs nftables (apt-get install nftables)"
"#;

/// [`PRELUDE`] and the variables both scripts use: AU, UNIT, S, T, BOOT.
fn prelude(agent_user: &str) -> Script {
    Script::new()
        .raw(PRELUDE)
        .raw("AU=")
        .arg(agent_user)
        .raw("\nUNIT=")
        .arg(&format!("{agent_user}-gateway.service"))
        .raw("\nS=")
        .arg(STATE_DIR)
        .raw("\nT=")
        .arg(TABLE)
        .raw("\nBOOT=")
        .arg(BOOT_UNIT)
}

/// The quarantine script; `$1` is `SSH_CONNECTION` (or `SSH_CLIENT`) as the login saw it.
/// Prints `armed` when it armed the dead-man switch, then one line per thing done.
fn quarantine_script(agent_user: &str, ctx: &ApplyContext) -> Script {
    let restore = Script::new()
        .raw("nft delete table inet ")
        .raw(TABLE)
        .raw(" 2>/dev/null\nsystemctl disable ")
        .raw(BOOT_UNIT)
        .raw(" 2>/dev/null\nrm -f /etc/systemd/system/")
        .raw(BOOT_UNIT)
        .raw(" ")
        .raw(STATE_DIR)
        .raw("/ruleset.nft ")
        .raw(STATE_DIR)
        .raw("/address\nsystemctl daemon-reload 2>/dev/null\n");
    prelude(agent_user)
        .raw(
            r#"
set -f
set -- $1
C=$1 P=${4:-$3}
case $C in ::ffff:*.*) C=${C#::ffff:} ;; esac
case $C in ''|*[!0-9a-fA-F:.]*) die "cannot tell the controller's address from this session (SSH_CONNECTION is '$*'); nothing was changed" ;; esac
case $P in ''|*[!0-9]*) die "cannot tell sshd's port from this session (SSH_CONNECTION is '$*'); nothing was changed" ;; esac
case $C in *:*) fam=ip6 ;; *) fam=ip ;; esac
mkdir -p "$S" && chmod 700 "$S" || die "cannot make $S"
# 1. The agent: its gateway, its timers, its user manager, its processes.
if command -v systemctl >/dev/null 2>&1; then
  [ -e "$S/agent.enabled" ] || systemctl is-enabled "$UNIT" >"$S/agent.enabled" 2>/dev/null || true
  if systemctl is-active --quiet "$UNIT" || systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
    systemctl disable --now "$UNIT" >/dev/null 2>&1 || die "cannot stop $UNIT"
    echo "stopped and disabled $UNIT"
  else
    echo "$UNIT was already stopped and disabled"
  fi
  for t in $(systemctl list-units --all --type=timer --plain --no-legend 2>/dev/null | awk '{print $1}'); do
    svc=$(systemctl show -p Unit --value "$t" 2>/dev/null)
    [ -n "$svc" ] || continue
    [ "$(systemctl show -p User --value "$svc" 2>/dev/null)" = "$AU" ] || continue
    if systemctl is-active --quiet "$t" || systemctl is-enabled --quiet "$t" 2>/dev/null; then
      grep -qxF "$t" "$S/timers" 2>/dev/null || echo "$t" >>"$S/timers"
      systemctl disable --now "$t" >/dev/null 2>&1 || die "cannot stop the agent's timer $t"
      echo "stopped and disabled the agent's timer $t"
    fi
  done
  uid=$(id -u "$AU" 2>/dev/null)
  if [ -n "$uid" ]; then
    command -v loginctl >/dev/null 2>&1 && loginctl disable-linger "$AU" 2>/dev/null
    systemctl stop "user@$uid.service" 2>/dev/null
  fi
fi
if id -u "$AU" >/dev/null 2>&1 && pgrep -u "$AU" >/dev/null 2>&1; then
  pkill -KILL -u "$AU"; sleep 1
  pgrep -u "$AU" >/dev/null 2>&1 && die "processes of $AU survived SIGKILL"
  echo "killed the remaining processes of $AU"
fi
# 2. The firewall, in its own table.
rules="table inet $T {
  chain input { type filter hook input priority -300; policy drop; iif \"lo\" accept; $fam saddr $C tcp dport $P accept; }
  chain output { type filter hook output priority -300; policy drop; oif \"lo\" accept; $fam daddr $C tcp sport $P accept; }
  chain forward { type filter hook forward priority -300; policy drop; }
}"
if nft list table inet "$T" >/dev/null 2>&1 && [ "$(cat "$S/address" 2>/dev/null)" = "$C $P" ]; then
  echo "the firewall already lets only SSH from $C (port $P) through"
  exit 0
fi
err=$(printf '%s\n' "table inet $T" "delete table inet $T" "$rules" | nft -c -f - 2>&1) || die "nft refused the quarantine table; nothing was changed on the firewall: $(printf '%s' "$err" | head -c 2000)"
echo armed
"#,
        )
        .then(deadman_arm(ctx, "quarantine", restore))
        .raw(
            r#"printf '%s\n' "table inet $T" "delete table inet $T" "$rules" | nft -f - || die "the quarantine table did not load"
printf '%s\n' "$rules" >"$S/ruleset.nft"
printf '%s %s\n' "$C" "$P" >"$S/address"
if [ -d /run/systemd/system ]; then
  printf '%s\n' "[Unit]" "Description=rampart quarantine: only SSH from the controller" "DefaultDependencies=no" "Before=network-pre.target" "Wants=network-pre.target" "" "[Service]" "Type=oneshot" "RemainAfterExit=yes" "ExecStart=/bin/sh -c 'nft delete table inet $T 2>/dev/null; nft -f $S/ruleset.nft'" "" "[Install]" "WantedBy=sysinit.target" >"/etc/systemd/system/$BOOT"
  systemctl daemon-reload && systemctl enable "$BOOT" >/dev/null 2>&1 || echo "note: could not enable $BOOT: the quarantine ends at the next boot"
fi
echo "firewall: only SSH between $C and port $P passes, in and out (table inet $T)"
"#,
        )
}

/// The release script.
fn release_script(agent_user: &str) -> Script {
    prelude(agent_user)
        .raw(
            r#"
if nft list table inet "$T" >/dev/null 2>&1; then
  nft delete table inet "$T" || die "cannot remove table inet $T"
  echo "firewall: removed table inet $T"
else
  echo "firewall: no quarantine table"
fi
if [ -e "/etc/systemd/system/$BOOT" ]; then
  systemctl disable "$BOOT" >/dev/null 2>&1; rm -f "/etc/systemd/system/$BOOT"; systemctl daemon-reload
  echo "removed $BOOT"
fi
if [ -d "$S" ]; then
  if [ -f "$S/agent.enabled" ] && [ "$(cat "$S/agent.enabled")" = enabled ]; then
    systemctl enable --now "$UNIT" >/dev/null 2>&1 || die "cannot start $UNIT again"
    echo "enabled and started $UNIT"
  fi
  if [ -f "$S/timers" ]; then
    while IFS= read -r t; do
      systemctl enable --now "$t" >/dev/null 2>&1 || die "cannot start the timer $t again"
      echo "enabled and started $t"
    done <"$S/timers"
  fi
  rm -rf "$S"
else
  echo "no quarantine record: the agent is left as it is"
fi
"#,
        )
}

/// One host's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub host: String,
    /// `quarantined`, `released`, or `failed`.
    pub status: &'static str,
    /// What was done, one line each (the host's words).
    pub done: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The command that runs a script from stdin as root, with this session's `SSH_CONNECTION`
/// as `$1` (sudo drops it from the environment).
fn exec_with_client(become_root: bool) -> String {
    let run = "/bin/sh -c 's=$(cat) && eval \"$s\"' rampart \"${SSH_CONNECTION:-$SSH_CLIENT}\"";
    if become_root {
        format!("sudo -n {run}")
    } else {
        format!("exec {run}")
    }
}

fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("quarantine-{}-{:06}", now.as_secs(), now.subsec_micros())
}

fn agent_user(host: &Host) -> String {
    host.vars
        .get("agent_user")
        .and_then(|v| v.value.as_str())
        .unwrap_or("openclaw")
        .to_string()
}

/// Quarantines (`quarantine`) or releases one host.
pub async fn run_host(
    host: &Host,
    options: &ConnectOptions,
    quarantine: bool,
    deadman_seconds: u32,
    timeout: Duration,
) -> HostOutcome {
    let mut outcome = HostOutcome {
        host: host.name.clone(),
        status: "failed",
        done: Vec::new(),
        error: None,
    };
    let connected = match connect_host(host, options).await {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(match e.hint() {
                Some(h) => format!("{e}\nhint: {h}"),
                None => e.to_string(),
            });
            return outcome;
        }
    };
    let become_root = host.become_root && connected.login != "root";
    let mut ctx = ApplyContext::new(run_id());
    ctx.deadman_seconds = deadman_seconds;
    let script = if quarantine {
        quarantine_script(&agent_user(host), &ctx)
    } else {
        release_script(&agent_user(host))
    };
    let text = match script.render() {
        Ok(t) => t,
        Err(e) => {
            outcome.error = Some(format!("cannot build the script: {e}"));
            return outcome;
        }
    };
    let out = connected
        .session
        .exec(&exec_with_client(become_root), text.as_bytes(), timeout)
        .await;
    connected.session.close().await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            outcome.error = Some(format!(
                "{e}{}",
                if quarantine {
                    format!(
                        "\nhint: if the firewall changed, the host removes the quarantine table by itself within {deadman_seconds} s unless confirmed"
                    )
                } else {
                    String::new()
                }
            ));
            return outcome;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let armed = stdout.lines().any(|l| l == "armed");
    outcome.done = stdout
        .lines()
        .filter(|l| *l != "armed" && !l.trim().is_empty())
        .take(100)
        .map(|l| {
            crate::untrusted::truncate(&crate::untrusted::escape_controls(l), 500).into_owned()
        })
        .collect();
    if !out.success() {
        outcome.error = Some(format!(
            "the {} script ended with {}\n{}",
            if quarantine { "quarantine" } else { "release" },
            out.status_text(),
            out.stderr_block()
        ));
    }
    if armed {
        // Confirm over a NEW connection: it proves the controller still gets in.
        if let Err(e) = confirm(host, options, &ctx, become_root, timeout).await {
            outcome.error = Some(format!(
                "{e}\nhint: the host lifts the quarantine's firewall by itself (dead-man switch); the agent stays stopped. Check the address this controller reaches the host from"
            ));
            return outcome;
        }
        outcome.done.push("confirmed over a new connection".into());
    }
    if outcome.error.is_none() {
        outcome.status = if quarantine {
            "quarantined"
        } else {
            "released"
        };
    }
    outcome
}

async fn confirm(
    host: &Host,
    options: &ConnectOptions,
    ctx: &ApplyContext,
    become_root: bool,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.deadman_seconds) / 2);
    let connected = loop {
        match connect_host(host, options).await {
            Ok(c) => break c,
            Err(e) if e.kind() == "unreachable" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("no new connection after the firewall change: {e}")),
        }
    };
    let out = crate::engine::host::disarm(&connected.session, become_root, ctx, timeout).await;
    connected.session.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_render_and_parse_as_sh() {
        let ctx = ApplyContext::new("quarantine-1-000001");
        for s in [
            quarantine_script("openclaw", &ctx),
            release_script("openclaw"),
        ] {
            let text = s.render().unwrap();
            let st = std::process::Command::new("sh")
                .args(["-n", "-c", &text])
                .status()
                .unwrap();
            assert!(st.success(), "{text}");
        }
    }
}
