//! facts: what rampart learns about a host from one side-effect-free probe script.
//!
//! Owns the facts probe (POSIX sh, `key=value` lines) and its parser. The engine runs the
//! probe together with the steps' probes in one round trip; `rampart facts` runs it alone.

use serde::Serialize;

/// The facts probe. Prints one `key=value` line per fact; values never hold a newline.
pub const PROBE: &str = r#"
if [ -r /etc/os-release ]; then . /etc/os-release; fi
printf 'os_id=%s\n' "${ID:-unknown}"
printf 'os_version=%s\n' "${VERSION_ID:-}"
printf 'os_name=%s\n' "${PRETTY_NAME:-}"
printf 'arch=%s\n' "$(uname -m)"
printf 'kernel=%s\n' "$(uname -r)"
printf 'hostname=%s\n' "$(uname -n)"
printf 'uid=%s\n' "$(id -u)"
if [ -d /run/systemd/system ]; then init=systemd
elif command -v openrc >/dev/null 2>&1; then init=openrc
elif [ -x /sbin/init ]; then init=sysvinit
else init=unknown; fi
printf 'init=%s\n' "$init"
pm=unknown
for p in apt-get dnf yum apk pacman zypper; do
  if command -v "$p" >/dev/null 2>&1; then pm=$p; break; fi
done
printf 'package_manager=%s\n' "$pm"
virt=$(systemd-detect-virt 2>/dev/null) || virt=none
printf 'virtualization=%s\n' "$virt"
PATH="$PATH:/usr/sbin:/sbin"
for t in nft wg wg-quick auditctl sshd sudo systemctl; do
  if p=$(command -v "$t" 2>/dev/null); then printf 'tool_%s=%s\n' "$t" "$p"; else printf 'tool_%s=\n' "$t"; fi
done
if command -v auditctl >/dev/null 2>&1 && auditctl -s >/dev/null 2>&1; then a=yes; else a=no; fi
printf 'audit_usable=%s\n' "$a"
if command -v dockerd >/dev/null 2>&1 || [ -e /sys/class/net/docker0 ] || [ -S /run/docker.sock ] \
  || { command -v nft >/dev/null 2>&1 && nft list chains ip nat 2>/dev/null | grep -q 'chain DOCKER '; }; then d=yes; else d=no; fi
printf 'docker=%s\n' "$d"
if command -v tailscaled >/dev/null 2>&1 || [ -e /sys/class/net/tailscale0 ]; then t=yes; else t=no; fi
printf 'tailscale=%s\n' "$t"
if command -v ufw >/dev/null 2>&1 && grep -qs '^ENABLED=yes' /etc/ufw/ufw.conf; then u=yes; else u=no; fi
printf 'ufw=%s\n' "$u"
if command -v fail2ban-server >/dev/null 2>&1; then b=yes; else b=no; fi
printf 'fail2ban=%s\n' "$b"
printf 'ip_forward=%s\n' "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
if command -v ssh >/dev/null 2>&1; then printf 'ssh_kex=%s\n' "$(ssh -Q kex 2>/dev/null | tr '\n' ' ')"; fi
for f in /etc/wireguard/*.key; do
  [ -r "$f" ] || continue
  i=${f##*/}; i=${i%.key}
  k=$(wg pubkey <"$f" 2>/dev/null) && printf 'wireguard_%s=%s\n' "$i" "$k"
done
"#;

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Facts {
    pub os_id: String,
    pub os_version: String,
    pub os_name: String,
    pub arch: String,
    pub kernel: String,
    pub hostname: String,
    /// The uid the probe ran as.
    pub uid: Option<u32>,
    /// `systemd`, `openrc`, `sysvinit` or `unknown`.
    pub init: String,
    /// `apt-get`, `dnf`, `yum`, `apk`, `pacman`, `zypper` or `unknown`.
    pub package_manager: String,
    /// `systemd-detect-virt`'s answer: `none`, `kvm`, `qemu`, `systemd-nspawn`, ...
    pub virtualization: String,
    pub tools: Tools,
    /// Whether `auditctl -s` talks to the kernel's audit system (never inside a container).
    pub audit_usable: bool,
    /// Docker is there (dockerd, its `docker0` bridge or socket, or its `DOCKER` nat chain):
    /// it needs forwarding and its own nftables/iptables tables.
    pub docker: bool,
    /// Tailscale is there (`tailscaled` or a `tailscale0` interface).
    pub tailscale: bool,
    /// UFW is installed and enabled (`ENABLED=yes` in /etc/ufw/ufw.conf).
    pub ufw: bool,
    /// fail2ban is installed (`fail2ban-server`).
    pub fail2ban: bool,
    /// `net.ipv4.ip_forward` as the probe found it (`None`: unreadable).
    pub ip_forward: Option<bool>,
    /// The key exchanges the host's OpenSSH knows (`ssh -Q kex`; sshd is of the same
    /// package), so that a playbook offers `mlkem768x25519-sha256` only where sshd has it.
    pub ssh_kex: Vec<String>,
    /// WireGuard interfaces with a key in /etc/wireguard (readable as root) -> public key.
    /// Only public keys: the private key never leaves the host.
    pub wireguard: std::collections::BTreeMap<String, String>,
}

/// Which tools exist (their paths), for the resources that need them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Tools {
    pub nft: Option<String>,
    pub wg: Option<String>,
    pub wg_quick: Option<String>,
    pub auditctl: Option<String>,
    pub sshd: Option<String>,
    pub sudo: Option<String>,
    pub systemctl: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the facts probe printed no `os_id=` line; output was:\n{0}")]
pub struct FactsError(String);

/// The longest value a fact keeps (bytes): facts are names and paths, never documents.
const VALUE_LIMIT: usize = 1024;

/// Parses the probe's output. Unknown lines are ignored (a newer probe, a noisy login shell).
///
/// Values are the host's words: each is cut to [`VALUE_LIMIT`] bytes and its control
/// characters are escaped (`\x1b`), so that no fact carries a terminal escape into a report,
/// a template or a config file.
pub fn parse(out: &str) -> Result<Facts, FactsError> {
    let mut f = Facts::default();
    let mut seen = false;
    for line in out.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value =
            crate::untrusted::escape_controls(crate::untrusted::prefix_bytes(value, VALUE_LIMIT))
                .into_owned();
        let path = || (!value.is_empty()).then(|| value.clone());
        match key {
            "os_id" => {
                seen = true;
                f.os_id = value
            }
            "os_version" => f.os_version = value,
            "os_name" => f.os_name = value,
            "arch" => f.arch = value,
            "kernel" => f.kernel = value,
            "hostname" => f.hostname = value,
            "uid" => f.uid = value.parse().ok(),
            "init" => f.init = value,
            "package_manager" => f.package_manager = value,
            "virtualization" => f.virtualization = value,
            "tool_nft" => f.tools.nft = path(),
            "tool_wg" => f.tools.wg = path(),
            "tool_wg-quick" => f.tools.wg_quick = path(),
            "tool_auditctl" => f.tools.auditctl = path(),
            "tool_sshd" => f.tools.sshd = path(),
            "tool_sudo" => f.tools.sudo = path(),
            "tool_systemctl" => f.tools.systemctl = path(),
            "audit_usable" => f.audit_usable = value == "yes",
            "docker" => f.docker = value == "yes",
            "tailscale" => f.tailscale = value == "yes",
            "ufw" => f.ufw = value == "yes",
            "fail2ban" => f.fail2ban = value == "yes",
            "ip_forward" => {
                f.ip_forward = matches!(value.as_str(), "0" | "1").then(|| value == "1")
            }
            "ssh_kex" => {
                f.ssh_kex = value
                    .split_whitespace()
                    .take(64)
                    .map(str::to_string)
                    .collect()
            }
            k if k.starts_with("wireguard_") && !value.is_empty() => {
                f.wireguard
                    .insert(k["wireguard_".len()..].to_string(), value);
            }
            _ => {}
        }
    }
    if !seen {
        return Err(FactsError(crate::untrusted::for_error(out)));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Session;
    use crate::transport::local::LocalSession;
    use std::time::Duration;

    const RECORDED: &str = "\
Welcome to a noisy motd
os_id=debian
os_version=12
os_name=Debian GNU/Linux 12 (bookworm)
arch=x86_64
kernel=6.1.0-40-amd64
hostname=h1
uid=0
init=systemd
package_manager=apt-get
virtualization=systemd-nspawn
tool_nft=/usr/sbin/nft
tool_wg=/usr/bin/wg
tool_wg-quick=/usr/bin/wg-quick
tool_auditctl=/usr/sbin/auditctl
tool_sshd=/usr/sbin/sshd
tool_sudo=/usr/bin/sudo
tool_systemctl=
audit_usable=no
docker=yes
tailscale=no
ufw=no
fail2ban=yes
ip_forward=1
some_future_fact=1
";

    #[test]
    fn parses_recorded_output_and_skips_junk() {
        let f = parse(RECORDED).unwrap();
        assert_eq!(f.os_id, "debian");
        assert_eq!(f.os_version, "12");
        assert_eq!(f.uid, Some(0));
        assert_eq!(f.tools.nft.as_deref(), Some("/usr/sbin/nft"));
        assert_eq!(f.tools.systemctl, None);
        assert!(!f.audit_usable);
        assert_eq!(f.virtualization, "systemd-nspawn");
        assert!(f.docker && f.fail2ban && !f.tailscale && !f.ufw);
        assert_eq!(f.ip_forward, Some(true));
        assert_eq!(
            parse("os_id=debian\nip_forward=\n").unwrap().ip_forward,
            None
        );
    }

    #[test]
    fn output_without_facts_is_an_error_that_shows_it() {
        let err = parse("sh: 1: syntax error\n").unwrap_err().to_string();
        assert!(err.contains("syntax error"), "{err}");
    }

    #[tokio::test]
    async fn the_probe_runs_under_plain_posix_sh() {
        // dash is Debian's /bin/sh: the probe must not need bash.
        let out = LocalSession::default()
            .exec(PROBE, b"", Duration::from_secs(20))
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr_block());
        let f = parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(!f.hostname.is_empty());
    }
}
