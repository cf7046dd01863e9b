//! wireguard: a WireGuard interface brought up by `wg-quick@IF`, with a private key that is
//! made on the host and never leaves it.
//!
//! Owns the `wireguard` type. The private key lives in `/etc/wireguard/IF.key` (0600): when it
//! is missing the apply makes it on the host (`umask 077; wg genkey`); the probe prints only
//! its public key (`wg pubkey`). The config `/etc/wireguard/IF.conf` (0600) holds no secret:
//! its `PostUp` line loads the key file (`wg set %i private-key ...`), so the config can be
//! shown and diffed in the clear. The public key is in the in-line sentence and in the facts
//! (`facts.wireguard`), for the fleet to share through `hostvars`.
//!
//! `wg-quick@IF` is enabled and started; a new key, config or drop-in restarts it. Where the
//! kernel has no WireGuard module (containers: no `/sys/module/wireguard` and no module to
//! load), a systemd drop-in `wg-quick@IF.service.d/rampart-userspace.conf` sets
//! `WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go`: wg-quick falls back to it when
//! `ip link add ... type wireguard` fails (it needs `/dev/net/tun`). Where the kernel has the
//! module, that drop-in is removed.
//!
//! ## Probe output
//!
//! ```text
//! rampart-wireguard 1
//! tools=yes                 # wg and wg-quick installed
//! kernel=no                 # the kernel has (or can load) the wireguard module
//! userspace=yes             # wireguard-go installed
//! key=file                  # none | file | other
//! keymode=600               (key=file only)
//! pubkey=<public key>       (key=file only; empty when wg pubkey refused the file)
//! file=file                 # the config, as unit.rs's config probe prints it
//! content=<base64>
//! confmode=600              (file=file only)
//! dropin=none               # none | <base64 of the drop-in>
//! systemd=yes ...           # the kit's systemd lines for wg-quick@IF.service
//! end
//! ```

use std::net::IpAddr;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::fsfile::backup_path;
use super::kit::{ConfigFile, DIE, FILE_KEYS, Fields, FileField, config_changes, config_probe, parse_config, write_config, RunState, SYSTEMD_KEYS, SYSTEMD_PROBE, SystemdField, UnitState, enable_script, parse_systemd, systemd_changes, systemd_sentence};
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
use crate::remote::Script;

pub const WIREGUARD: TypeInfo = TypeInfo {
    name: "wireguard",
    params: &["interface", "address", "listen_port", "peers", "state"],
    build,
};

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(WireGuard::try_from(params::<WireGuardParams>(
        value,
    )?)?))
}

/// `present`: the only state this type manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WgState {
    #[default]
    Present,
}

/// One `peers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer's public key (base64 of 32 bytes).
    pub public_key: String,
    /// `host:port` (`[v6]:port`); omitted: the peer calls in.
    pub endpoint: Option<String>,
    /// CIDRs routed to the peer.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Seconds between keepalives.
    pub persistent_keepalive: Option<u16>,
}

/// The `wireguard` step as written (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGuardParams {
    /// Default `wg0`.
    pub interface: Option<String>,
    /// The interface's address, a CIDR: `10.99.0.1/24`.
    pub address: String,
    /// Default 51820.
    pub listen_port: Option<u16>,
    #[serde(default)]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub state: WgState,
}

/// What the `wireguard` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuard {
    pub interface: String,
    pub address: String,
    pub listen_port: u16,
    pub peers: Vec<Peer>,
}

fn check_cidr(what: &str, text: &str) -> Result<(), ParamError> {
    let bad = || {
        Err(ParamError(format!(
            "wireguard: {what} {text:?} is not an address with a prefix length (10.99.0.1/24, \
             fd00::1/64)"
        )))
    };
    let Some((ip, len)) = text.split_once('/') else {
        return bad();
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return bad();
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max && !len.starts_with('+') => Ok(()),
        _ => bad(),
    }
}

fn check_key(text: &str) -> Result<(), ParamError> {
    let ok = text.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok_and(|b| b.len() == 32);
    if ok {
        Ok(())
    } else {
        Err(ParamError(format!(
            "wireguard: peer public_key {text:?} is not a WireGuard key (44 characters of \
             base64, as `wg pubkey` prints)"
        )))
    }
}

fn check_endpoint(text: &str) -> Result<(), ParamError> {
    let bad = || {
        Err(ParamError(format!(
            "wireguard: peer endpoint {text:?} is not host:port (or [v6]:port)"
        )))
    };
    let Some((host, port)) = text.rsplit_once(':') else {
        return bad();
    };
    if port.parse::<u16>().is_err() || port.starts_with('+') || host.is_empty() {
        return bad();
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return if v6.parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(())
        } else {
            bad()
        };
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if host_ok { Ok(()) } else { bad() }
}

impl TryFrom<WireGuardParams> for WireGuard {
    type Error = ParamError;
    fn try_from(p: WireGuardParams) -> Result<WireGuard, ParamError> {
        let interface = p.interface.unwrap_or_else(|| "wg0".into());
        // wg-quick's own rule for interface names.
        let name_ok = (1..=15).contains(&interface.len())
            && interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_=+.-".contains(c))
            && interface != "."
            && interface != "..";
        if !name_ok {
            return Err(ParamError(format!(
                "wireguard: interface {interface:?} is not an interface name (1 to 15 of \
                 a-z A-Z 0-9 _ = + . -)"
            )));
        }
        check_cidr("address", &p.address)?;
        let listen_port = p.listen_port.unwrap_or(51820);
        if listen_port == 0 {
            return Err(ParamError("wireguard: listen_port must not be 0".into()));
        }
        for (i, peer) in p.peers.iter().enumerate() {
            check_key(&peer.public_key)?;
            if p.peers[..i].iter().any(|o| o.public_key == peer.public_key) {
                return Err(ParamError(format!(
                    "wireguard: peer {} appears twice",
                    peer.public_key
                )));
            }
            if let Some(e) = &peer.endpoint {
                check_endpoint(e)?;
            }
            for a in &peer.allowed_ips {
                check_cidr("allowed_ips entry", a)?;
            }
            if peer.persistent_keepalive == Some(0) {
                return Err(ParamError(
                    "wireguard: persistent_keepalive must be 1 or more seconds (omit it for \
                     none)"
                        .into(),
                ));
            }
        }
        Ok(WireGuard {
            interface,
            address: p.address,
            listen_port,
            peers: p.peers,
        })
    }
}

const HEADER: &str = "rampart-wireguard 1";
const KEYS: &[&str] = &[
    "tools",
    "kernel",
    "userspace",
    "key",
    "keymode",
    "pubkey",
    "confmode",
    "dropin",
];

crate::fields! {
    /// The fields of a `wireguard` step.
    pub enum WgField {
        /// The private key (only whether it exists: it never leaves the host).
        Key = "private key",
        KeyMode = "private key mode",
        Content = "content",
        /// A symbolic link at the config's path, replaced by the file.
        Type = "type",
        ConfMode = "mode",
        /// The systemd drop-in that runs wireguard-go where the kernel has no module.
        Dropin = "userspace drop-in",
        Enabled = "enabled",
        State = "state",
    }
}

impl From<FileField> for WgField {
    fn from(f: FileField) -> WgField {
        match f {
            FileField::Content => WgField::Content,
            FileField::Type => WgField::Type,
        }
    }
}

impl From<SystemdField> for WgField {
    fn from(f: SystemdField) -> WgField {
        match f {
            SystemdField::Enabled => WgField::Enabled,
            SystemdField::State => WgField::State,
        }
    }
}

/// The private key file as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    None,
    /// A regular file: its mode (octal digits) and the public key `wg pubkey` made of it
    /// (empty when wg is missing or refused it).
    File {
        mode: String,
        public: String,
    },
    /// A symlink, folder or special file.
    Other,
}

/// What a `wireguard` probe found.
pub struct WgObserved<'a> {
    f: Fields<'a>,
    /// wg and wg-quick are installed.
    tools: bool,
    /// The kernel has the WireGuard module.
    kernel: bool,
    /// wireguard-go is installed.
    userspace: bool,
    key: KeyFile,
    conf: ConfigFile,
    /// The config's mode (octal digits), for a regular file.
    conf_mode: Option<String>,
    dropin: Option<Vec<u8>>,
    unit: UnitState,
}

const GENERATED: &str = "generated on the host";

/// The drop-in that makes wg-quick use wireguard-go where the kernel has no module.
const DROPIN: &str = "# Written by rampart: this kernel has no WireGuard module, so wg-quick runs \
                      the userspace wireguard-go (on /dev/net/tun).\n\
                      [Service]\n\
                      Environment=WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go\n";

impl WireGuard {
    pub fn key_path(&self) -> String {
        format!("/etc/wireguard/{}.key", self.interface)
    }

    pub fn conf_path(&self) -> String {
        format!("/etc/wireguard/{}.conf", self.interface)
    }

    pub fn unit(&self) -> String {
        format!("wg-quick@{}.service", self.interface)
    }

    pub fn dropin_path(&self) -> String {
        format!(
            "/etc/systemd/system/wg-quick@{}.service.d/rampart-userspace.conf",
            self.interface
        )
    }

    /// The config file's whole text: no private key, which `PostUp` loads from the key file.
    pub fn config(&self) -> String {
        let mut t = format!(
            "# Written by rampart. The private key stays in {key} (PostUp loads it).\n\
             [Interface]\n\
             Address = {}\n\
             ListenPort = {}\n\
             PostUp = wg set %i private-key {key}\n",
            self.address,
            self.listen_port,
            key = self.key_path()
        );
        for p in &self.peers {
            t.push_str(&format!("\n[Peer]\nPublicKey = {}\n", p.public_key));
            if let Some(e) = &p.endpoint {
                t.push_str(&format!("Endpoint = {e}\n"));
            }
            if !p.allowed_ips.is_empty() {
                t.push_str(&format!("AllowedIPs = {}\n", p.allowed_ips.join(", ")));
            }
            if let Some(k) = p.persistent_keepalive {
                t.push_str(&format!("PersistentKeepalive = {k}\n"));
            }
        }
        t
    }

    fn probe_script(&self) -> Script {
        Script::new()
            .raw("(\nprintf '")
            .raw(HEADER)
            .raw("\\n'\nn=")
            .arg(&self.unit())
            .raw("\nk=")
            .arg(&self.key_path())
            .raw("\ndp=")
            .arg(&self.dropin_path())
            .raw(
                "\nyn() { if \"$@\"; then echo yes; else echo no; fi; }\n\
                 printf 'tools=%s\\n' \"$(yn eval 'command -v wg >/dev/null 2>&1 && command -v wg-quick >/dev/null 2>&1')\"\n\
                 printf 'kernel=%s\\n' \"$(yn eval '[ -e /sys/module/wireguard ] || modinfo wireguard >/dev/null 2>&1')\"\n\
                 printf 'userspace=%s\\n' \"$(yn eval 'command -v wireguard-go >/dev/null 2>&1')\"\n\
                 if [ -L \"$k\" ] || { [ -e \"$k\" ] && [ ! -f \"$k\" ]; }; then\n\
                 \x20 printf 'key=other\\n'\n\
                 elif [ -f \"$k\" ]; then\n\
                 \x20 printf 'key=file\\nkeymode=%s\\n' \"$(stat -c %a \"$k\")\"\n\
                 \x20 printf 'pubkey=%s\\n' \"$(wg pubkey <\"$k\" 2>/dev/null | head -n 1)\"\n\
                 else\n\
                 \x20 printf 'key=none\\n'\n\
                 fi\n",
            )
            .then(config_probe(&self.conf_path()))
            .raw(
                "if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then printf 'confmode=%s\\n' \"$(stat -c %a \"$p\")\"; fi\n\
                 if [ -f \"$dp\" ]; then\n\
                 \x20 printf 'dropin=%s\\n' \"$(base64 <\"$dp\" | tr -d '\\n')\"\n\
                 else\n\
                 \x20 printf 'dropin=none\\n'\n\
                 fi\n",
            )
            .raw(SYSTEMD_PROBE)
            .raw("printf 'end\\n'\n)\n")
    }
}

impl Typed for WireGuard {
    type Observed<'a> = WgObserved<'a>;
    type Field = WgField;

    fn parse<'a>(&self, out: &'a str) -> Result<WgObserved<'a>, ProbeError> {
        let keys: Vec<&str> = KEYS
            .iter()
            .chain(FILE_KEYS)
            .chain(SYSTEMD_KEYS)
            .copied()
            .collect();
        let f = Fields::read(out, HEADER, &keys)?;
        let tools = f.yes_no("tools")?;
        let kernel = f.yes_no("kernel")?;
        let userspace = f.yes_no("userspace")?;
        let key = match f.need("key")? {
            "none" => {
                if f.one("keymode")?.is_some() || f.one("pubkey")?.is_some() {
                    return Err(f.error("key lines with `key=none`"));
                }
                KeyFile::None
            }
            "file" => {
                let mode = f.need("keymode")?;
                if mode.is_empty() || !mode.chars().all(|ch| ch.is_digit(8)) {
                    return Err(f.error(format!("`keymode` is not an octal mode: {mode:?}")));
                }
                let public = f.need("pubkey")?.trim().to_string();
                KeyFile::File {
                    mode: mode.to_string(),
                    public,
                }
            }
            "other" => KeyFile::Other,
            v => return Err(f.error(format!("unknown `key={v}`"))),
        };
        let conf = parse_config(&f)?;
        let conf_mode = f.one("confmode")?.map(str::to_string);
        match (&conf, &conf_mode) {
            (ConfigFile::File(_), None) => return Err(f.error("no `confmode` line for a file")),
            (ConfigFile::File(_), Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(f.error("a `confmode` line without a config file")),
        }
        let dropin = match f.need("dropin")? {
            "none" => None,
            b64 => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| f.error(format!("the drop-in is not base64: {e}")))?,
            ),
        };
        let Some(unit) = parse_systemd(&f)? else {
            return Err(f.error(format!(
                "wireguard {}: this host runs no systemd (/run/systemd/system is missing)",
                self.interface
            )));
        };
        Ok(WgObserved {
            f,
            tools,
            kernel,
            userspace,
            key,
            conf,
            conf_mode,
            dropin,
            unit,
        })
    }

    fn compare(&self, o: &WgObserved<'_>) -> Result<Verdict<WgField>, ProbeError> {
        let f = &o.f;
        let (tools, kernel) = (o.tools, o.kernel);
        if tools && !kernel && !o.userspace {
            return Err(f.error(format!(
                "wireguard {}: this kernel has no WireGuard module and wireguard-go is not \
                 installed; install wireguard-go (it needs /dev/net/tun)",
                self.interface
            )));
        }
        let mut c = Vec::new();

        // The private key: only its presence, mode and public key.
        let (key_exists, public_key) = match &o.key {
            KeyFile::None => {
                c.push(Change::of(WgField::Key, None, Some(GENERATED.into())));
                (false, None)
            }
            KeyFile::File { mode, public } => {
                if tools && check_key(public).is_err() {
                    return Err(f.error(format!(
                        "wireguard {}: {} is not a WireGuard private key (wg pubkey refuses \
                         it); not replacing it: move it away to have a new one made",
                        self.interface,
                        self.key_path()
                    )));
                }
                if mode != "600" {
                    c.push(Change::of(
                        WgField::KeyMode,
                        Some(format!("0{mode}")),
                        Some("0600".into()),
                    ));
                }
                (true, (!public.is_empty()).then(|| public.clone()))
            }
            KeyFile::Other => {
                return Err(f.error(format!(
                    "wireguard {}: {} is a symlink, folder or special file, not a key file; \
                     not touching it",
                    self.interface,
                    self.key_path()
                )));
            }
        };

        // The config.
        let want = self.config();
        let conf = config_changes(&self.conf_path(), &o.conf, &want, f)?;
        if let (ConfigFile::File(_), Some(m)) = (&o.conf, &o.conf_mode)
            && m != "600"
            && conf.is_empty()
        {
            c.push(Change::of(
                WgField::ConfMode,
                Some(format!("0{m}")),
                Some("0600".into()),
            ));
        }
        let conf_absent = o.conf == ConfigFile::Absent;
        c.extend(conf);

        // The userspace drop-in.
        let want_dropin = (!kernel).then_some(DROPIN);
        let show = |b: &Vec<u8>| String::from_utf8_lossy(b).into_owned();
        if o.dropin.as_deref() != want_dropin.map(str::as_bytes) {
            c.push(Change::of(
                WgField::Dropin,
                o.dropin.as_ref().map(show),
                want_dropin.map(String::from),
            ));
        }

        // The service.
        let s = &o.unit;
        let restarts = !c.is_empty();
        let mut svc = systemd_changes(
            &self.unit(),
            s,
            Some(true),
            Some(RunState::Started),
            !tools,
            f,
        )?;
        if restarts && !svc.iter().any(|ch| ch.field == WgField::State) && s.started() {
            svc.push(Change::of(
                WgField::State,
                Some(s.active.clone()),
                Some("restarted".into()),
            ));
        }
        c.extend(svc);

        Ok(if c.is_empty() {
            Verdict::InLine(format!(
                "{} is in line: public key {}; {} as given; {} {}",
                self.id(),
                public_key.as_deref().unwrap_or("?"),
                self.conf_path(),
                self.unit(),
                systemd_sentence(s)
            ))
        } else if !key_exists && conf_absent {
            Verdict::Create(c)
        } else {
            Verdict::Modify(c)
        })
    }

    /// Notified as a handler: everything, idempotently.
    fn converge(&self, work: Work<'_, WgField>, ctx: &ApplyContext) -> Script {
        if let Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) = work {
            return Script::new();
        }
        let all = work.is_notified() || work.changes().is_empty();
        let has = |f: WgField| all || work.has(&f);
        let writes_conf = has(WgField::Content) || has(WgField::Type);
        let dropin = has(WgField::Dropin);
        let restart = writes_conf || dropin || has(WgField::Key) || has(WgField::KeyMode);
        let mut s = Script::new()
            .raw("(\numask 077\n")
            .raw(DIE)
            .raw("n=")
            .arg(&self.unit())
            .raw("\nk=")
            .arg(&self.key_path())
            .raw(
                "\ncommand -v wg >/dev/null 2>&1 && command -v wg-quick >/dev/null 2>&1 || \
                 die \"wg and wg-quick are missing: install wireguard-tools\"\n\
                 mkdir -p /etc/wireguard || die \"cannot create /etc/wireguard\"\n\
                 chmod 0700 /etc/wireguard || die \"cannot set the mode of /etc/wireguard\"\n\
                 if [ ! -e \"$k\" ] && [ ! -L \"$k\" ]; then\n\
                 \x20 kt=$(mktemp /etc/wireguard/.rampart.XXXXXX) || die \"cannot create a temporary file in /etc/wireguard\"\n\
                 \x20 if ! wg genkey >\"$kt\"; then rm -f \"$kt\"; die \"wg genkey failed\"; fi\n\
                 \x20 chmod 0600 \"$kt\" && mv -f \"$kt\" \"$k\" || { rm -f \"$kt\"; die \"cannot put the key in $k\"; }\n\
                 fi\n\
                 chmod 0600 \"$k\" || die \"cannot set the mode of $k\"\n",
            );
        if writes_conf || has(WgField::ConfMode) {
            let backup = backup_path(ctx, &self.conf_path());
            s = s.then(write_config(
                &self.conf_path(),
                self.config().as_bytes(),
                &backup,
                0o600,
            ));
        }
        if dropin {
            let path = self.dropin_path();
            let dir = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
            s = s.raw("dp=").arg(&path).raw("\ndd=").arg(&dir).raw("\n");
            s = if work
                .changes()
                .iter()
                .any(|c| c.field == WgField::Dropin && c.after.is_none())
            {
                s.raw("rm -f \"$dp\" || die \"cannot remove $dp\"\nrmdir \"$dd\" 2>/dev/null || true\n")
            } else {
                s.raw(
                    "(umask 022 && mkdir -p \"$dd\") || die \"cannot create $dd\"\n\
                     dt=$(mktemp \"$dd/.rampart.XXXXXX\") || die \"cannot create a temporary file in $dd\"\n\
                     base64 -d >\"$dt\" ",
                )
                .payload(DROPIN.as_bytes())
                .raw(
                    "[ $? -eq 0 ] || { rm -f \"$dt\"; die \"cannot write $dt\"; }\n\
                     chmod 0644 \"$dt\" && mv -f \"$dt\" \"$dp\" || { rm -f \"$dt\"; die \"cannot put the drop-in in $dp\"; }\n",
                )
            };
            s = s.raw("systemctl daemon-reload || die \"systemctl daemon-reload failed\"\n");
        }
        if has(WgField::Enabled) {
            s = s.then(enable_script(true));
        }
        if restart {
            s = s.then(start_bounded("restart"));
        } else if has(WgField::State) {
            s = s.then(start_bounded("start"));
        }
        s.raw(") || exit 1\n")
    }
}

/// Seconds the apply waits for `wg-quick@IF` to come up before it fails, naming the unit.
const START_WAIT_SECS: u32 = 60;

/// Starts or restarts the unit in `$n` without blocking on `network-online.target`, and waits
/// a bounded time for it. `wg-quick@.service` wants and is ordered after that target, which
/// `systemd-networkd-wait-online` holds for up to 2 minutes (until its timeout) on a host
/// whose links networkd does not manage, longer than an apply's command timeout. The apply
/// runs over SSH, so the host's network is demonstrably up: while the target is not reached
/// the job ignores the unit's dependencies (`--job-mode=ignore-dependencies`). The job is
/// queued with `--no-block` and polled: a unit still starting after [`START_WAIT_SECS`] is an
/// error that names it and its pending jobs, not a hang.
fn start_bounded(action: &str) -> Script {
    Script::new()
        .raw(
            "jm=\n\
             if [ \"$(systemctl is-active network-online.target 2>/dev/null)\" != active ]; then\n\
             \x20 jm=--job-mode=ignore-dependencies\n\
             fi\n\
             systemctl ",
        )
        .raw(action)
        .raw(" --no-block $jm -- \"$n\" || die \"systemctl ")
        .raw(action)
        .raw(&format!(
            " $n failed\"\n\
             i=0\n\
             while [ -n \"$(systemctl show -p Job --value -- \"$n\" 2>/dev/null)\" ]; do\n\
             \x20 i=$((i + 1))\n\
             \x20 if [ \"$i\" -gt {polls} ]; then\n\
             \x20   systemctl list-jobs --no-pager >&2 || true\n\
             \x20   die \"$n did not come up within {START_WAIT_SECS} s (its start job is still waiting; see the jobs above: a unit it is ordered after, such as network-online.target, may be holding it)\"\n\
             \x20 fi\n\
             \x20 sleep 0.2\n\
             done\n\
             if [ \"$(systemctl show -p ActiveState --value -- \"$n\" 2>/dev/null)\" != active ]; then\n\
             \x20 systemctl status --no-pager --lines=15 -- \"$n\" >&2 || true\n\
             \x20 die \"$n failed to start\"\n\
             fi\n",
            polls = START_WAIT_SECS * 5
        ))
}

impl Resource for WireGuard {
    fn id(&self) -> String {
        format!("wireguard {}", self.interface)
    }

    fn probe(&self) -> Script {
        self.probe_script()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use serde_json::json;

    const PK: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PEER: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn wg(p: Value) -> WireGuard {
        WireGuard::try_from(params::<WireGuardParams>(p).unwrap()).unwrap()
    }

    fn err(p: Value) -> String {
        match params::<WireGuardParams>(p) {
            Err(e) => e.0,
            Ok(p) => WireGuard::try_from(p).unwrap_err().0,
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn peer_wg() -> WireGuard {
        wg(json!({"address": "10.99.0.1/24", "peers": [
            {"public_key": PEER, "endpoint": "10.203.0.118:51820",
             "allowed_ips": ["10.99.0.2/32"], "persistent_keepalive": 25}]}))
    }

    /// A probe output.
    fn out(
        kernel: &str,
        key: &str,
        conf: &str,
        dropin: &str,
        enabled: &str,
        active: &str,
    ) -> String {
        format!(
            "rampart-wireguard 1\ntools=yes\nkernel={kernel}\nuserspace=yes\n{key}{conf}\
             dropin={dropin}\nsystemd=yes\nload=loaded\nenabled={enabled}\nactive={active}\n\
             reload=no\nend\n"
        )
    }

    fn key() -> String {
        format!("key=file\nkeymode=600\npubkey={PK}\n")
    }

    fn conf(text: &str) -> String {
        format!("file=file\ncontent={}\nconfmode=600\n", b64(text))
    }

    #[test]
    fn params_default_and_bad_ones_are_refused() {
        let p = json!({"interface": "wg1", "address": "10.0.0.1/24", "listen_port": 5,
                       "peers": [], "state": "present"});
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, WIREGUARD.params);
        assert!((WIREGUARD.build)(p).is_ok());
        let w = wg(json!({"address": "10.99.0.1/24"}));
        assert_eq!((w.interface.as_str(), w.listen_port), ("wg0", 51820));
        assert!(err(json!({"address": "10.99.0.1"})).contains("prefix length"));
        assert!(err(json!({"address": "10.99.0.1/33"})).contains("prefix length"));
        assert!(err(json!({"address": "x/1", "interface": "a b"})).contains("interface"));
        assert!(
            err(json!({"address": "10.0.0.1/8", "interface": "a;rm -rf /"})).contains("interface")
        );
        assert!(
            err(json!({"address": "10.0.0.1/8", "peers": [{"public_key": "nope"}]}))
                .contains("not a WireGuard key")
        );
        assert!(
            err(json!({"address": "10.0.0.1/8",
                       "peers": [{"public_key": PEER, "endpoint": "h\nPostUp = x:1"}]}))
            .contains("host:port")
        );
        assert!(
            err(json!({"address": "10.0.0.1/8",
                       "peers": [{"public_key": PEER, "allowed_ips": ["1.2.3.4"]}]}))
            .contains("prefix length")
        );
        assert!(
            err(json!({"address": "10.0.0.1/8", "state": "absent"})).contains("unknown variant")
        );
        assert!(err(json!({"address": "10.0.0.1/8", "x": 1})).contains("unknown field"));
    }

    #[test]
    fn the_config_holds_no_private_key() {
        let text = peer_wg().config();
        assert!(!text.contains("PrivateKey"), "{text}");
        assert!(text.contains("PostUp = wg set %i private-key /etc/wireguard/wg0.key\n"));
        assert!(text.contains(
            "[Peer]\nPublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\n\
             Endpoint = 10.203.0.118:51820\nAllowedIPs = 10.99.0.2/32\nPersistentKeepalive = 25\n"
        ));
    }

    #[test]
    fn a_new_interface_is_created_with_a_key_made_on_the_host() {
        let w = peer_wg();
        let v = w
            .diff(&out(
                "no",
                "key=none\n",
                "file=none\n",
                "none",
                "disabled",
                "inactive",
            ))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Create(vec![
                Change::new("private key", None, Some("generated on the host".into())),
                Change::new("content", None, Some(w.config())),
                Change::new("userspace drop-in", None, Some(DROPIN.into())),
                Change::new("enabled", Some("disabled".into()), Some("enabled".into())),
                Change::new("state", Some("inactive".into()), Some("active".into())),
            ])
        );
        // With the kernel module: no drop-in.
        let v = w
            .diff(&out(
                "yes",
                "key=none\n",
                "file=none\n",
                "none",
                "disabled",
                "inactive",
            ))
            .unwrap();
        assert!(v.changes().iter().all(|c| c.field != "userspace drop-in"));
    }

    #[test]
    fn in_line_names_the_public_key_and_changes_do_not_repeat_it() {
        let w = peer_wg();
        let v = w
            .diff(&out(
                "no",
                &key(),
                &conf(&w.config()),
                &b64(DROPIN),
                "enabled",
                "active",
            ))
            .unwrap();
        assert_eq!(
            v,
            Verdict::InLine(format!(
                "wireguard wg0 is in line: public key {PK}; /etc/wireguard/wg0.conf as given; \
                 wg-quick@wg0.service enabled, active"
            ))
        );
        let old = w.config().replace("25", "10");
        let v = w
            .diff(&out(
                "no",
                &key(),
                &conf(&old),
                &b64(DROPIN),
                "enabled",
                "active",
            ))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Modify(vec![
                Change::new("content", Some(old), Some(w.config())),
                Change::new("state", Some("active".into()), Some("restarted".into())),
            ])
        );
        // A kernel that gained the module: the drop-in goes.
        let v = w
            .diff(&out(
                "yes",
                &key(),
                &conf(&w.config()),
                &b64(DROPIN),
                "enabled",
                "active",
            ))
            .unwrap();
        assert_eq!(
            v.changes()[0],
            Change::new("userspace drop-in", Some(DROPIN.into()), None)
        );
        let loose = key().replace("600", "644");
        let v = w
            .diff(&out(
                "no",
                &loose,
                &conf(&w.config()),
                &b64(DROPIN),
                "enabled",
                "active",
            ))
            .unwrap();
        assert_eq!(
            v.changes()[0],
            Change::new("private key mode", Some("0644".into()), Some("0600".into()))
        );
    }

    #[test]
    fn junk_and_odd_states_are_probe_errors() {
        let w = peer_wg();
        let good = out(
            "no",
            &key(),
            &conf(&w.config()),
            &b64(DROPIN),
            "enabled",
            "active",
        );
        assert!(w.diff(&good).is_ok());
        for junk in [
            String::new(),
            "junk\n".into(),
            good.replace("\nend\n", "\n"),
            good.replace("tools=yes", "tools=maybe"),
            good.replace("key=file", "key=weird"),
            good.replace("key=file", "key=other"),
            good.replace(PK, "not a key"),
            good.replace("keymode=600", "keymode=rw"),
            good.replace("confmode=600\n", ""),
            good.replace("dropin=", "dropin=%%%"),
            good.replace("userspace=yes", "userspace=yes\nsecret=1"),
            good.replace("userspace=yes", "userspace=no"),
            good.replace("systemd=yes", "error=stat failed\nsystemd=yes"),
            out(
                "no",
                "key=none\npubkey=x\n",
                "file=none\n",
                "none",
                "enabled",
                "active",
            ),
        ] {
            assert!(w.diff(&junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn apply_makes_the_key_on_the_host_and_restarts_on_a_change() {
        let w = peer_wg();
        let ctx = ApplyContext::new("r1");
        let v = w
            .diff(&out(
                "no",
                "key=none\n",
                "file=none\n",
                "none",
                "disabled",
                "inactive",
            ))
            .unwrap();
        let text = w.apply(&v, &ctx).render().unwrap();
        let order: Vec<usize> = [
            "wg genkey",
            "chmod 0600 \"$t\"",
            "dp='/etc/systemd/system/wg-quick@wg0.service.d/rampart-userspace.conf'",
            "systemctl daemon-reload",
            "systemctl enable",
            "systemctl restart",
        ]
        .iter()
        .map(|p| text.find(p).unwrap_or_else(|| panic!("{p} in {text}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.starts_with("(\numask 077\n"));
        // Never blocks on network-online.target: queued, its dependencies ignored while the
        // target is not reached, then a bounded wait that names the unit.
        let guard = text
            .find("systemctl is-active network-online.target")
            .unwrap();
        let queued = text
            .find("systemctl restart --no-block $jm -- \"$n\"")
            .unwrap();
        assert!(guard < queued, "{text}");
        assert!(text.contains("jm=--job-mode=ignore-dependencies"), "{text}");
        assert!(
            text.contains(&format!("did not come up within {START_WAIT_SECS} s")),
            "{text}"
        );
        let v = Verdict::Modify(vec![Change::new(
            "state",
            Some("inactive".into()),
            Some("active".into()),
        )]);
        let text = w.apply(&v, &ctx).render().unwrap();
        assert!(text.contains("systemctl start"), "{text}");
        assert!(
            !text.contains("restart") && !text.contains("base64 -d"),
            "{text}"
        );
    }
}
