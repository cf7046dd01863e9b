//! nftables: rampart's own tables of the host's firewall, in their file (`/etc/nftables.conf`,
//! loaded at boot by `nftables.service`) and live in the kernel, loaded atomically under the
//! dead-man switch. Every other table (Docker's `ip nat`/`ip filter`, Tailscale's `ts-input`,
//! UFW's, fail2ban's) is left alone: never flushed, listed, restored or compared.
//!
//! Owns the `nftables` step's parameters, its probe, the pure parse and diff of the probe's
//! output and the apply script. The file's record in the probe, its diff and its write (as a
//! `file` step writes, with its backup) and the copies kept for the restore are
//! [`risky`](super::risky)'s, shared with sshd; running the scripts and confirming the change
//! over a new connection (which disarms the switch) are the engine's.
//!
//! ## Parameters
//!
//! - `ruleset`: rampart's tables, as `nft -f` reads them (playbooks render it from a
//!   template). The step owns the tables it declares at the top level (`table inet rampart
//!   { … }`) and nothing else: the top level may hold only table declarations, `delete table`
//!   of one of them and `define`s; `flush ruleset`, `add rule` into another table or
//!   `include` are refused when the playbook loads, with their line. The load replaces each
//!   owned table in one transaction (`add table F N; delete table F N;` then the ruleset), so
//!   a table that is not declared is never touched.
//! - `path`: the file, `/etc/nftables.conf` unless given.
//! - `enabled`: `true` (default): `nftables.service` is enabled, so the file is loaded at
//!   boot; `false`: it is disabled (the tables then live until the next reboot). Hosts
//!   without systemd are left alone on this point.
//!
//! ## Living beside other tables
//!
//! nftables runs every base chain registered on a hook, table after table by priority; an
//! `accept` only ends the packet's walk through ITS chain, while a `drop` anywhere is final.
//! So another tool's chain with `policy accept` never opens what rampart's input chain drops
//! (the agent port stays closed whatever Docker or UFW load), and rampart's chains must not
//! drop what other tools need: a forward chain with `policy drop` would cut Docker's
//! containers off, and an input chain that drops `tailscale0` would cut Tailscale's own
//! traffic although its `ts-input` chain accepts it. The baseline's template accepts the
//! inventory's VPN interfaces and leaves forwarding open where Docker or a VPN is detected
//! (see docs/hardening.md). Conversely rampart cannot open what another table drops.
//!
//! ## The live tables
//!
//! rampart cannot work out what the kernel will list for a ruleset without loading it, so the
//! live tables are compared with a record: after each load the apply writes
//! `/var/lib/rampart/nftables.loaded`, a line `rampart-nftables-loaded <sha1 of the ruleset
//! text>` followed by `nft -s list table F N` of each owned table as it was right after the
//! load (`-s`: without counters, which change with every packet). The live tables are in line
//! when the record names this ruleset and their live listing is still the recorded one. So a
//! table deleted or edited by hand (`nft delete table inet rampart`, `nft add rule inet
//! rampart …`) is drift, shown as a unified diff of the listings; so is a host where rampart
//! never loaded the ruleset. Other tables changing (Docker starting a container, fail2ban
//! banning) is not. After a reboot the boot-time load of the same file lists the same, so it
//! stays in line.
//!
//! ## Apply
//!
//! 1. `nft -c -f` checks the new ruleset; if nft refuses it, nothing changes and the step fails
//!    with nft's message (line numbers as in the ruleset).
//! 2. When the live tables change: the owned tables are saved (`nft -s list table`), with
//!    copies of the file and of the record; the dead-man switch is armed (its restore deletes
//!    the owned tables and loads the saved ones in one transaction, or, should that fail,
//!    deletes the owned tables, access coming before filtering; then puts the file and the
//!    record back); the ruleset is loaded in one transaction and the record written.
//! 3. The file is written (atomically, the old one backed up) when its content differs.
//! 4. `systemctl enable` (or `disable`) `nftables.service` when that differs.
//!
//! A ruleset that drops the controller's packets may still let the apply's own output out;
//! the engine's confirmation over a NEW connection then fails and the host restores itself.
//!
//! ## Probe output
//!
//! ```text
//! rampart-nftables 1
//! nft /usr/sbin/nft                # or: nft none (not installed)
//! file content <base64>            # or: file none | file other
//! live ok <sha1 of the owned tables' listing>   # or: live failed <base64 of nft's stderr>
//! record <sha1 of the ruleset> <sha1 of the recorded listing>   # or: record none
//! listing <base64>                 # when the listings differ: the live one
//! recorded <base64>                #   and the recorded one
//! enabled enabled                  # `systemctl is-enabled nftables.service`; or: enabled n/a
//! end
//! ```

use serde::Deserialize;

use super::fsfile::{apply_script, parent, sha1_hex};
use super::kit::FileField;
use super::risky::{
    Aside, B64, Current, FILE_PROBE, PATH, check_plain_path, condensed, content_changes,
    decode_text, parse_file_record, write_file,
};
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
    deadman_arm, deadman_dir, params,
};
use crate::remote::Script;

pub const NFTABLES: TypeInfo = TypeInfo {
    name: "nftables",
    params: &["ruleset", "path", "enabled"],
    build: |v| Ok(Box::new(Nftables::try_from(params::<NftablesParams>(v)?)?)),
};

/// The file unless `path` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/nftables.conf";
/// The record of the last load.
pub const RECORD: &str = "/var/lib/rampart/nftables.loaded";

const RECORD_HEADER: &str = "rampart-nftables-loaded";

fn yes() -> bool {
    true
}

/// `nftables` as written in the playbook (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftablesParams {
    pub ruleset: String,
    pub path: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// `nftables`: this ruleset in the file and live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nftables {
    pub path: String,
    pub ruleset: String,
    pub enabled: bool,
    /// The tables the ruleset declares (family, name): the only ones this step touches.
    pub tables: Vec<(String, String)>,
    /// The record of the last load (a test points it elsewhere).
    pub record: String,
}

impl TryFrom<NftablesParams> for Nftables {
    type Error = ParamError;
    fn try_from(p: NftablesParams) -> Result<Nftables, ParamError> {
        let path = p.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
        check_plain_path("nftables: path", &path)?;
        if p.ruleset.trim().is_empty() {
            return Err(ParamError(
                "nftables: ruleset is empty; give the whole ruleset (an empty one would open \
                 the firewall: write `flush ruleset` if that is what you want)"
                    .into(),
            ));
        }
        if p.ruleset.contains('\0') {
            return Err(ParamError("nftables: ruleset contains a NUL byte".into()));
        }
        let tables = owned_tables(&p.ruleset)?;
        Ok(Nftables {
            path,
            ruleset: p.ruleset,
            enabled: p.enabled,
            tables,
            record: RECORD.to_string(),
        })
    }
}

/// The address families of nftables tables.
const FAMILIES: &[&str] = &["ip", "ip6", "inet", "arp", "bridge", "netdev"];

/// The tables a ruleset declares at its top level (`table inet rampart { … }`, `add table …`,
/// `create table …`), in order, without repeats. Pure.
///
/// The step owns these tables and nothing else, so the top level may hold only table
/// declarations, `delete table` of one of them, and `define`/`redefine`/`undefine`: anything
/// else (`flush ruleset`, `add rule ip filter …`, `include`) would reach tables other tools
/// own (Docker's, Tailscale's, UFW's, fail2ban's) and is refused with its line number.
pub fn owned_tables(ruleset: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut tables: Vec<(String, String)> = Vec::new();
    let mut deleted: Vec<((String, String), usize)> = Vec::new();
    let refuse = |line: usize, what: &str, why: &str| {
        ParamError(format!(
            "nftables: ruleset line {line}: `{what}` {why}; rampart replaces only the tables \
             its ruleset declares (say `table inet rampart {{ … }}`) and leaves every other \
             table (Docker's, Tailscale's, UFW's, fail2ban's) alone"
        ))
    };
    let mut statement = |text: &str, line: usize| -> Result<(), ParamError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let table = |rest: &[&str]| -> Option<(String, String)> {
            let (family, name) = match rest {
                [f, n] if FAMILIES.contains(f) => (*f, *n),
                [n] => ("ip", *n),
                _ => return None,
            };
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            ok.then(|| (family.to_string(), name.to_string()))
        };
        match words.as_slice() {
            [] => Ok(()),
            ["define" | "redefine" | "undefine", ..] => Ok(()),
            ["table", rest @ ..] | ["add" | "create", "table", rest @ ..] => match table(rest) {
                Some(t) => {
                    if !tables.contains(&t) {
                        tables.push(t);
                    }
                    Ok(())
                }
                None => Err(refuse(
                    line,
                    text.trim(),
                    "is not a table this step can own",
                )),
            },
            ["delete", "table", rest @ ..] => match table(rest) {
                Some(t) => {
                    deleted.push((t, line));
                    Ok(())
                }
                None => Err(refuse(
                    line,
                    text.trim(),
                    "is not a table this step can own",
                )),
            },
            _ => Err(refuse(line, text.trim(), "is not a table declaration")),
        }
    };
    let (mut depth, mut line, mut start_line) = (0usize, 1usize, 1usize);
    let (mut head, mut comment, mut quoted) = (String::new(), false, false);
    for c in ruleset.chars() {
        if c == '\n' {
            comment = false;
            quoted = false;
        } else if comment {
            continue;
        } else if quoted {
            if c == '"' {
                quoted = false;
            }
            if depth == 0 {
                head.push(c);
            }
            continue;
        }
        match c {
            '#' => comment = true,
            '"' => {
                quoted = true;
                if depth == 0 {
                    head.push(c);
                }
            }
            '{' => {
                if depth == 0 {
                    statement(&head, start_line)?;
                    head.clear();
                }
                depth += 1;
            }
            '}' => depth = depth.saturating_sub(1),
            '\n' | ';' if depth == 0 => {
                statement(&head, start_line)?;
                head.clear();
            }
            _ if depth == 0 => {
                if head.trim().is_empty() {
                    start_line = line;
                }
                head.push(c);
            }
            _ => {}
        }
        if c == '\n' {
            line += 1;
        }
    }
    statement(&head, start_line)?;
    for (t, line) in deleted {
        if !tables.contains(&t) {
            return Err(refuse(
                line,
                &format!("delete table {} {}", t.0, t.1),
                "names a table the ruleset does not declare",
            ));
        }
    }
    if tables.is_empty() {
        return Err(ParamError(
            "nftables: the ruleset declares no table; write rampart's rules in their own \
             table (`table inet rampart { … }`), which is all this step replaces"
                .into(),
        ));
    }
    Ok(tables)
}

fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------
// Probe and parse.

/// The record of the last load, as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    None,
    /// The ruleset's sha1 (anything, when the header was garbled) and the listing's sha1.
    Loaded {
        ruleset: String,
        listing: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    nft: bool,
    file: Current,
    /// The sha1 of the live listing, or why nft could not list it.
    live: Option<Result<String, String>>,
    record: Option<Record>,
    /// The live and the recorded listing, when they differ.
    listings: Option<(String, String)>,
    /// `systemctl is-enabled`'s word; `None`: no systemd.
    enabled: Option<String>,
}

/// Parses the probe's output. Pure.
fn parse(out: &str) -> Result<Observed, ProbeError> {
    let err = |m: String| ProbeError::new(m, &condensed(out));
    let mut lines = out.lines();
    match lines.next() {
        Some("rampart-nftables 1") => {}
        Some(l) => {
            return Err(err(format!(
                "expected `rampart-nftables 1` first, found {l:?}"
            )));
        }
        None => return Err(err("the probe printed nothing".into())),
    }
    let mut obs = Observed {
        nft: false,
        file: Current::None,
        live: None,
        record: None,
        listings: None,
        enabled: None,
    };
    let mut seen = std::collections::BTreeSet::new();
    let (mut listing, mut recorded) = (None, None);
    let mut ended = false;
    for line in lines.by_ref() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        if key == "end" && rest.is_empty() {
            ended = true;
            break;
        }
        if !seen.insert(key) {
            return Err(err(format!("`{key}` twice")));
        }
        let unexpected = || err(format!("unexpected line {line:?}"));
        match key {
            "nft" if !rest.is_empty() => obs.nft = rest != "none",
            "file" => obs.file = parse_file_record(rest, line, out)?,
            "live" => {
                obs.live = Some(match rest.split_once(' ').unwrap_or((rest, "")) {
                    ("ok", h) if is_sha1(h) => Ok(h.to_string()),
                    ("failed", b) => Err(decode_text("live", b, out)?),
                    _ => return Err(unexpected()),
                })
            }
            "record" => {
                obs.record = Some(match rest.split_once(' ') {
                    None if rest == "none" => Record::None,
                    Some((r, l)) if is_sha1(l) => Record::Loaded {
                        ruleset: r.to_string(),
                        listing: l.to_string(),
                    },
                    _ => return Err(unexpected()),
                })
            }
            "listing" => listing = Some(decode_text("listing", rest, out)?),
            "recorded" => recorded = Some(decode_text("recorded", rest, out)?),
            "enabled" => obs.enabled = (rest != "n/a").then(|| rest.to_string()),
            _ => return Err(unexpected()),
        }
    }
    if !ended {
        return Err(err("no `end` line: the probe was cut short".into()));
    }
    if let Some(l) = lines.find(|l| !l.trim().is_empty()) {
        return Err(err(format!("unexpected line after `end`: {l:?}")));
    }
    for key in ["nft", "file", "enabled"] {
        if !seen.contains(key) {
            return Err(err(format!("no `{key}` line")));
        }
    }
    if obs.nft && (obs.live.is_none() || (matches!(obs.live, Some(Ok(_))) && obs.record.is_none()))
    {
        return Err(err(
            "nft is installed but the live ruleset was not listed".into()
        ));
    }
    obs.listings = match (listing, recorded) {
        (Some(l), Some(r)) => Some((l, r)),
        (None, None) => None,
        _ => return Err(err("`listing` and `recorded` come together".into())),
    };
    Ok(obs)
}

crate::fields! {
    /// The fields of an `nftables` step.
    pub enum NftField {
        /// The ruleset file.
        Content = "content",
        Live = "live ruleset",
        /// nftables.service at boot.
        Enabled = "enabled",
    }
}

impl From<FileField> for NftField {
    fn from(f: FileField) -> NftField {
        match f {
            FileField::Content => NftField::Content,
            // content_changes makes content changes only.
            FileField::Type => NftField::Content,
        }
    }
}

/// What the probe found, with its output condensed (quoted by errors).
pub struct NftFound {
    obs: Observed,
    condensed: String,
}

/// The file and the record, kept in the dead-man folder while a load waits for confirmation.
const FILE_ASIDE: Aside = Aside {
    var: "p",
    saved: "nftables.prev",
    none: "nftables.none",
};
const RECORD_ASIDE: Aside = Aside {
    var: "st",
    saved: "nftables.record",
    none: "nftables.norecord",
};

impl Nftables {
    /// `add table F N; delete table F N;` for each owned table, on one line: in one nft
    /// transaction it removes the table whether or not it exists, and nothing else.
    fn deletes(&self) -> String {
        self.tables
            .iter()
            .map(|(f, n)| format!("add table {f} {n}; delete table {f} {n};"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What an apply loads: the owned tables deleted, then the ruleset, in one transaction
    /// (the deletes on the first line, so that nft's line numbers are the ruleset's own).
    fn load_text(&self) -> String {
        format!("{} {}", self.deletes(), self.ruleset)
    }

    /// Shell text defining `owned`: prints `nft -s list table` of each owned table that
    /// exists, in the ruleset's order (the "live listing" this step compares).
    fn owned_fn(&self) -> Script {
        let mut s = Script::new().raw(
            "lt() { if nft list tables 2>/dev/null | grep -qxF \"table $1 $2\"; then \
             nft -s list table \"$1\" \"$2\"; fi; }\nowned() { :",
        );
        for (f, n) in &self.tables {
            s = s.raw("; lt ").arg(f).raw(" ").arg(n);
        }
        s.raw("; }\n")
    }

    fn loaded(&self) -> String {
        format!("the ruleset of {}", self.path)
    }

    /// Shell variables shared by the apply and the dead-man restore.
    fn vars(&self, dm: &str) -> Script {
        Script::new()
            .raw(PATH)
            .raw("p=")
            .arg(&self.path)
            .raw("\nst=")
            .arg(&self.record)
            .raw("\ndm=")
            .arg(dm)
            .raw("\ndel=")
            .arg(&self.deletes())
            .raw("\n")
            .then(self.owned_fn())
    }

    /// The dead-man switch's restore: the owned tables as they were saved back first
    /// (access), then the file and the record. Other tables are never touched; should the
    /// saved tables not load, the owned tables are deleted (access before filtering).
    fn restore(&self, dm: &str) -> Script {
        self.vars(dm)
            .raw(
                "if ! { printf '%s\\n' \"$del\"; cat \"$dm/nftables.saved\"; } | nft -f -; then\n\
                 \x20 logger -t rampart 'dead-man switch: the saved tables did not load; deleting rampart'\\''s tables' 2>/dev/null\n\
                 \x20 printf '%s\\n' \"$del\" | nft -f -\n\
                 fi\n",
            )
            .then(FILE_ASIDE.put_back())
            .then(RECORD_ASIDE.put_back())
    }
}

impl Resource for Nftables {
    fn risky(&self) -> bool {
        true
    }

    fn id(&self) -> String {
        format!("nftables {}", self.path)
    }

    fn probe(&self) -> Script {
        Script::new()
            .raw("(\n")
            .raw(PATH)
            .raw(B64)
            .raw("p=")
            .arg(&self.path)
            .raw("\nst=")
            .arg(&self.record)
            .raw("\n")
            .then(self.owned_fn())
            .raw(
                "echo 'rampart-nftables 1'\n\
                 if command -v nft >/dev/null 2>&1; then printf 'nft %s\\n' \"$(command -v nft)\"; \
                 else echo 'nft none'; fi\n",
            )
            .raw(FILE_PROBE)
            .raw(
                "if command -v nft >/dev/null 2>&1; then\n\
                 \x20 if nft list tables >/dev/null 2>&1; then\n\
                 \x20   ls=$(owned | sha1sum | cut -d ' ' -f 1)\n\
                 \x20   printf 'live ok %s\\n' \"$ls\"\n\
                 \x20   if [ -f \"$st\" ]; then\n\
                 \x20     h=$(head -n 1 \"$st\")\n\
                 \x20     rs=$(tail -n +2 \"$st\" | sha1sum | cut -d ' ' -f 1)\n\
                 \x20     printf 'record %s %s\\n' \"$(printf '%s' \"${h#rampart-nftables-loaded }\" | tr -c '0-9a-f' x)\" \"$rs\"\n\
                 \x20     if [ \"$rs\" != \"$ls\" ]; then\n\
                 \x20       printf 'listing %s\\n' \"$(owned | b64)\"\n\
                 \x20       printf 'recorded %s\\n' \"$(tail -n +2 \"$st\" | b64)\"\n\
                 \x20     fi\n\
                 \x20   else echo 'record none'; fi\n\
                 \x20 else\n\
                 \x20   printf 'live failed %s\\n' \"$(nft list tables 2>&1 >/dev/null | b64)\"\n\
                 \x20 fi\n\
                 fi\n\
                 if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then\n\
                 \x20 printf 'enabled %s\\n' \"$(systemctl is-enabled nftables.service 2>/dev/null)\"\n\
                 else echo 'enabled n/a'; fi\n\
                 echo end\n)\n",
            )
    }
}

impl Typed for Nftables {
    type Observed<'a> = NftFound;
    type Field = NftField;

    fn parse(&self, probe_output: &str) -> Result<NftFound, ProbeError> {
        Ok(NftFound {
            obs: parse(probe_output)?,
            condensed: condensed(probe_output),
        })
    }

    fn compare(&self, found: &NftFound) -> Result<Verdict<NftField>, ProbeError> {
        let obs = &found.obs;
        let err = |m: String| ProbeError::new(m, &found.condensed);
        let (mut changes, create) =
            content_changes(&obs.file, &self.path, &self.ruleset, "an nftables step")
                .map_err(err)?;
        let live = |before: String| Change::of(NftField::Live, Some(before), Some(self.loaded()));
        match (&obs.live, &obs.record) {
            _ if !obs.nft => changes.push(live("nft is not installed".into())),
            (Some(Err(e)), _) => {
                return Err(err(format!(
                    "nft cannot list the live ruleset:\n{}",
                    e.trim_end()
                )));
            }
            (Some(Ok(now)), Some(Record::Loaded { ruleset, listing })) => {
                if *ruleset != sha1_hex(self.ruleset.as_bytes()) {
                    changes.push(live("another ruleset, loaded by rampart before".into()));
                } else if now != listing {
                    let (now, then) = obs.listings.clone().ok_or_else(|| {
                        err("the listings differ but the probe did not print them".into())
                    })?;
                    // `before` must differ from `after` even when both are one line.
                    let now = if now.is_empty() {
                        "(an empty ruleset)\n".to_string()
                    } else {
                        now
                    };
                    changes.push(Change::of(NftField::Live, Some(now), Some(then)));
                }
            }
            _ => changes.push(live(format!(
                "not loaded by rampart (no record in {})",
                self.record
            ))),
        }
        if let Some(word) = &obs.enabled {
            let on = word == "enabled";
            if on != self.enabled {
                let before = if word.is_empty() {
                    "not installed"
                } else {
                    word
                };
                let after = if self.enabled { "enabled" } else { "disabled" };
                changes.push(Change::of(
                    NftField::Enabled,
                    Some(before.into()),
                    Some(after.into()),
                ));
            }
        }
        Ok(if changes.is_empty() {
            Verdict::InLine(format!("{} is in line", self.id()))
        } else if create {
            Verdict::Create(changes)
        } else {
            Verdict::Modify(changes)
        })
    }

    /// As a notified handler: nothing (only a verdict says what differs).
    fn converge(&self, work: Work<'_, NftField>, ctx: &ApplyContext) -> Script {
        let changes = match work {
            Work::Converge(Verdict::Create(c) | Verdict::Modify(c)) => c,
            Work::Converge(Verdict::InLine(_) | Verdict::Remove(_)) => return Script::new(),
            Work::Notified => &Vec::new(),
        };
        let has = |f: NftField| changes.iter().any(|c| c.field == f);
        let dm = deadman_dir(ctx);
        let mut s = self.vars(&dm);
        if has(NftField::Content) || has(NftField::Live) {
            s = s
                .raw(
                    "command -v nft >/dev/null 2>&1 || die \"nft is not installed (a package step \
                     for nftables must come first)\"\n\
                     { mkdir -p \"$dm\" && chmod 700 \"$dm\"; } || die \"cannot create $dm\"\n\
                     new=\"$dm/nftables.rules\"\nbase64 -d >\"$new\" ",
                )
                .payload(self.load_text().as_bytes())
                .raw(
                    "[ $? -eq 0 ] || die \"cannot write $new\"\n\
                     if ! out=$(nft -c -f \"$new\" 2>&1); then\n\
                     \x20 die \"nft refuses the ruleset; nothing was changed:\n$out\"\n\
                     fi\n",
                );
        }
        if has(NftField::Live) {
            let record_dir = parent(&self.record).unwrap_or("/");
            s = s
                .raw("owned >\"$dm/nftables.saved\" || die \"cannot save rampart's live tables\"\n")
                .then(FILE_ASIDE.keep())
                .then(RECORD_ASIDE.keep())
                .then(deadman_arm(ctx, "nftables", self.restore(&dm)))
                .raw(
                    "[ $? -eq 0 ] || die \"cannot arm the dead-man switch; nothing was changed\"\n\
                     if ! out=$(nft -f \"$new\" 2>&1); then\n\
                     \x20 die \"nft could not load the ruleset; the live ruleset is unchanged:\n$out\"\n\
                     fi\n\
                     sd=",
                )
                .arg(record_dir)
                .raw(
                    "\n{ mkdir -p \"$sd\" && { printf '%s %s\\n' ",
                )
                .arg(RECORD_HEADER)
                .raw(" ")
                .arg(&sha1_hex(self.ruleset.as_bytes()))
                .raw(
                    "; owned; } >\"$st.tmp\" && mv -f \"$st.tmp\" \"$st\"; } || \
                     die \"cannot record the loaded ruleset in $st\"\n",
                );
        }
        if has(NftField::Content) {
            s = s.then(write_file(&self.path, &self.ruleset, ctx));
        }
        if has(NftField::Enabled) {
            let verb = if self.enabled { "enable" } else { "disable" };
            s = s
                .raw("systemctl ")
                .raw(verb)
                .raw(" --quiet nftables.service || die \"cannot ")
                .raw(verb)
                .raw(" nftables.service\"\n");
        }
        apply_script(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use crate::resource::b64;
    use crate::resource::risky::bed::Bed;
    use serde_json::{Value, json};
    use std::time::Duration;

    const RULESET: &str = "table inet filter {\n  chain input {\n    \
        type filter hook input priority filter; policy drop;\n    ct state established,related accept\n    \
        tcp dport 22 accept\n  }\n}\n";

    /// `nft -s list table inet filter` of `RULESET` on a testbed host.
    const LISTING: &str = "table inet filter {\n\tchain input {\n\t\t\
        type filter hook input priority filter; policy drop;\n\t\tct state established,related accept\n\t\t\
        tcp dport 22 accept\n\t}\n}\n";

    fn nft(v: Value) -> Nftables {
        Nftables::try_from(params::<NftablesParams>(v).unwrap()).unwrap()
    }

    fn sha(s: &str) -> String {
        sha1_hex(s.as_bytes())
    }

    fn change(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::new(field, before.map(String::from), after.map(String::from))
    }

    /// A probe output: the file, the live listing, the record (ruleset, listing).
    fn probe(
        file: Option<&str>,
        live: &str,
        record: Option<(&str, &str)>,
        enabled: &str,
    ) -> String {
        let mut out = "rampart-nftables 1\nnft /usr/sbin/nft\n".to_string();
        match file {
            Some(c) => out.push_str(&format!("file content {}\n", b64(c))),
            None => out.push_str("file none\n"),
        }
        out.push_str(&format!("live ok {}\n", sha(live)));
        match record {
            None => out.push_str("record none\n"),
            Some((ruleset, listing)) => {
                out.push_str(&format!("record {} {}\n", sha(ruleset), sha(listing)));
                if listing != live {
                    out.push_str(&format!(
                        "listing {}\nrecorded {}\n",
                        b64(live),
                        b64(listing)
                    ));
                }
            }
        }
        out.push_str(&format!("enabled {enabled}\nend\n"));
        out
    }

    #[test]
    fn parameters() {
        let n = nft(json!({"ruleset": RULESET}));
        assert_eq!((n.path.as_str(), n.enabled), ("/etc/nftables.conf", true));
        assert_eq!(n.id(), "nftables /etc/nftables.conf");
        assert!(n.risky());
        let err = |v: Value| match params::<NftablesParams>(v) {
            Err(e) => e.0,
            Ok(p) => Nftables::try_from(p).unwrap_err().0,
        };
        for (v, want) in [
            (json!({"ruleset": "  \n"}), "ruleset is empty"),
            (json!({}), "missing field `ruleset`"),
            (json!({"ruleset": "x", "path": "nft.conf"}), "absolute path"),
            (
                json!({"ruleset": "x", "path": "/etc/../x"}),
                "not a plain path",
            ),
            (
                json!({"ruleset": "x", "rules": "y"}),
                "unknown field `rules`",
            ),
            (
                json!({"ruleset": "x", "enabled": "yes"}),
                "expected a boolean",
            ),
            (
                json!({"ruleset": format!("flush ruleset\n{RULESET}")}),
                "ruleset line 1: `flush ruleset` is not a table declaration; rampart replaces \
                 only the tables its ruleset declares",
            ),
            (
                json!({"ruleset": format!("{RULESET}\n\nadd rule ip filter DOCKER-USER drop\n")}),
                "ruleset line 10: `add rule ip filter DOCKER-USER drop` is not a table",
            ),
            (
                json!({"ruleset": format!("{RULESET}delete table ip nat\n")}),
                "line 8: `delete table ip nat` names a table the ruleset does not declare",
            ),
            (
                json!({"ruleset": "# only a comment\n"}),
                "declares no table",
            ),
            (
                json!({"ruleset": "table inet a$b { }"}),
                "not a table this step can own",
            ),
        ] {
            let e = err(v.clone());
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn the_step_owns_the_tables_its_ruleset_declares() {
        let t = |f: &str, n: &str| (f.to_string(), n.to_string());
        let text = "#!/usr/sbin/nft -f\n# table ip nat { in a comment }\ndefine ssh = 22\n\
            table inet rampart {}\ndelete table inet rampart\n\
            table inet rampart {\n  chain input { type filter hook input priority filter; policy drop;\n\
            \x20   iifname \"tailscale0\" tcp dport $ssh accept; }\n}\n\
            add table bridge br; table extra { chain c { } }\n";
        assert_eq!(
            owned_tables(text).unwrap(),
            vec![t("inet", "rampart"), t("bridge", "br"), t("ip", "extra")]
        );
        let n = nft(json!({"ruleset": text}));
        assert_eq!(
            n.load_text().lines().next().unwrap(),
            "add table inet rampart; delete table inet rampart; add table bridge br; \
             delete table bridge br; add table ip extra; delete table ip extra; #!/usr/sbin/nft -f"
        );
        // The probe lists those tables only, never the whole ruleset.
        let probe = n.probe().render().unwrap();
        assert!(
            probe.contains("lt 'inet' 'rampart'; lt 'bridge' 'br'; lt 'ip' 'extra'"),
            "{probe}"
        );
        assert!(!probe.contains("list ruleset"), "{probe}");
    }

    #[test]
    fn a_fresh_host_gets_the_file_the_live_ruleset_and_the_boot_load() {
        let n = nft(json!({"ruleset": RULESET}));
        let out = probe(None, "", None, "disabled");
        assert_eq!(
            n.diff(&out).unwrap(),
            Verdict::Create(vec![
                change("content", None, Some(RULESET)),
                change(
                    "live ruleset",
                    Some("not loaded by rampart (no record in /var/lib/rampart/nftables.loaded)"),
                    Some("the ruleset of /etc/nftables.conf")
                ),
                change("enabled", Some("disabled"), Some("enabled")),
            ])
        );
    }

    #[test]
    fn in_line_when_file_record_and_listing_agree() {
        let n = nft(json!({"ruleset": RULESET}));
        let out = probe(Some(RULESET), LISTING, Some((RULESET, LISTING)), "enabled");
        assert_eq!(
            n.diff(&out).unwrap(),
            Verdict::InLine("nftables /etc/nftables.conf is in line".into())
        );
        let off = nft(json!({"ruleset": RULESET, "enabled": false}));
        assert!(
            off.diff(&probe(
                Some(RULESET),
                LISTING,
                Some((RULESET, LISTING)),
                "disabled"
            ))
            .unwrap()
            .is_in_line()
        );
        let no_systemd = probe(Some(RULESET), LISTING, Some((RULESET, LISTING)), "n/a");
        assert!(n.diff(&no_systemd).unwrap().is_in_line());
    }

    #[test]
    fn a_flushed_ruleset_is_drift_shown_as_what_comes_back() {
        let n = nft(json!({"ruleset": RULESET}));
        let out = probe(Some(RULESET), "", Some((RULESET, LISTING)), "enabled");
        assert_eq!(
            n.diff(&out).unwrap(),
            Verdict::Modify(vec![change(
                "live ruleset",
                Some("(an empty ruleset)\n"),
                Some(LISTING)
            )])
        );
        // A rule added by hand.
        let edited = LISTING.replace("accept\n\t}", "accept\n\t\ttcp dport 8080 accept\n\t}");
        let v = n
            .diff(&probe(
                Some(RULESET),
                &edited,
                Some((RULESET, LISTING)),
                "enabled",
            ))
            .unwrap();
        assert_eq!(v.changes()[0].before.as_deref(), Some(edited.as_str()));
    }

    #[test]
    fn a_changed_ruleset_changes_the_file_and_the_live_ruleset() {
        let n = nft(json!({"ruleset": RULESET.replace("22", "2222")}));
        let v = n
            .diff(&probe(
                Some(RULESET),
                LISTING,
                Some((RULESET, LISTING)),
                "enabled",
            ))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Modify(vec![
                change("content", Some(RULESET), Some(&n.ruleset)),
                change(
                    "live ruleset",
                    Some("another ruleset, loaded by rampart before"),
                    Some("the ruleset of /etc/nftables.conf")
                ),
            ])
        );
        // The file edited by hand while the live ruleset is the one loaded: the file only.
        let n = nft(json!({"ruleset": RULESET}));
        let v = n
            .diff(&probe(
                Some("# hand\n"),
                LISTING,
                Some((RULESET, LISTING)),
                "enabled",
            ))
            .unwrap();
        assert_eq!(
            v,
            Verdict::Modify(vec![change("content", Some("# hand\n"), Some(RULESET))])
        );
    }

    #[test]
    fn without_nft_the_apply_has_work_to_do() {
        let n = nft(json!({"ruleset": RULESET}));
        let out = "rampart-nftables 1\nnft none\nfile none\nenabled \nend\n";
        assert_eq!(
            n.diff(out).unwrap(),
            Verdict::Create(vec![
                change("content", None, Some(RULESET)),
                change(
                    "live ruleset",
                    Some("nft is not installed"),
                    Some("the ruleset of /etc/nftables.conf")
                ),
                change("enabled", Some("not installed"), Some("enabled")),
            ])
        );
    }

    #[test]
    fn junk_and_failures_are_probe_errors() {
        let n = nft(json!({"ruleset": RULESET}));
        let good = probe(Some(RULESET), "", Some((RULESET, LISTING)), "enabled");
        let failed = good.replace(
            &format!("live ok {}", sha("")),
            &format!(
                "live failed {}",
                b64("Operation not permitted (you must be root)\n")
            ),
        );
        let cases = [
            ("", "the probe printed nothing"),
            (
                "nft: command not found\n",
                "expected `rampart-nftables 1` first",
            ),
            (&good.replace("end\n", ""), "no `end` line"),
            (
                &good.replace("enabled enabled\n", "junk\nenabled enabled\n"),
                "unexpected line \"junk\"",
            ),
            (
                &good.replace("live ok ", "live ok x"),
                "unexpected line \"live ok x",
            ),
            (
                &good.replace("file content", "file content !"),
                "file: not base64",
            ),
            (&good.replace("recorded ", "listing "), "`listing` twice"),
            (&good.replace("enabled enabled\n", ""), "no `enabled` line"),
            (
                &failed,
                "nft cannot list the live ruleset:\nOperation not permitted (you must be root)",
            ),
        ];
        for (out, want) in cases {
            let e = n.diff(out).unwrap_err();
            assert!(e.message.contains(want), "{out:?}: {}", e.message);
        }
    }

    // ---- the scripts, on this machine, with a stand-in for nft that keeps a "live" file ----

    /// A bed whose `nft` keeps each "live" table in a file of `live.d` (`FAMILY_NAME`), with
    /// a foreign table (Docker's `ip nat`) and a table `inet before` of another tool loaded.
    fn nft_bed(deadman_seconds: u32) -> Bed {
        let bed = Bed::new(deadman_seconds);
        std::fs::create_dir_all(bed.path("live.d")).unwrap();
        std::fs::write(bed.path("live.d/ip_nat"), DOCKER).unwrap();
        std::fs::write(bed.path("live.d/inet_before"), "table inet before {\n}\n").unwrap();
        // -c refuses "Bogus"; -f deletes the tables it names in `delete table`, then stores
        // each `table F N {` … `}` it declares; list prints the table files.
        bed.stub(
            "nft",
            &format!(
                "#!/bin/sh\nd={d}/live.d\n\
                 load() {{\n\
                 \x20 grep -o 'delete table [a-z0-9]* [A-Za-z0-9_.-]*' \"$1\" | while read -r _ _ f n; do rm -f \"$d/${{f}}_$n\"; done\n\
                 \x20 sed -e 's/add table [^;]*; delete table [^;]*; *//g' -e '/^delete table /d' -e '/^#/d' -e '/^ *$/d' \"$1\" >\"$1.rest\"\n\
                 \x20 awk -v d=\"$d\" '/^table /{{f=d \"/\" $2 \"_\" $3}} f{{print >f}} /^}}/{{if (f) close(f); f=\"\"}}' \"$1.rest\"\n\
                 }}\n\
                 case \"$*\" in\n\
                 \x20 '-c -f '*) if grep -n Bogus \"$3\" >&2; then echo \"$3:2:1-5: Error: syntax error\" >&2; exit 1; fi ;;\n\
                 \x20 '-f -') cat >\"$d.in\"; load \"$d.in\" ;;\n\
                 \x20 '-f '*) load \"$2\" ;;\n\
                 \x20 'list tables') for f in \"$d\"/*; do [ -f \"$f\" ] && head -n 1 \"$f\" | sed 's/ {{$//'; done; : ;;\n\
                 \x20 '-s list table '*) cat \"$d/${{4}}_$5\" ;;\n\
                 \x20 *) echo \"nft stub: $*\" >&2; exit 2 ;;\n\
                 esac\n",
                d = bed.dir.path().display()
            ),
        );
        bed
    }

    /// Docker's nat table, as another tool left it: never touched by the step.
    const DOCKER: &str = "table ip nat {\n\tchain DOCKER {\n\t}\n}\n";

    /// Every live table, in the stub's file order.
    fn live(bed: &Bed) -> String {
        let mut names: Vec<_> = std::fs::read_dir(bed.path("live.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| bed.read(&format!("live.d/{n}")))
            .collect()
    }

    fn resource(bed: &Bed, ruleset: &str) -> Nftables {
        let mut n = nft(json!({
            "ruleset": ruleset,
            "path": bed.path("nftables.conf").display().to_string(),
        }));
        n.record = bed.path("state/nftables.loaded").display().to_string();
        n
    }

    #[tokio::test]
    async fn load_record_drift_and_an_unconfirmed_restore() {
        let bed = nft_bed(1);
        let old = "table inet rampart {\n\tchain old {\n\t}\n}\n";
        std::fs::write(bed.path("live.d/inet_rampart"), old).unwrap();
        std::fs::write(bed.path("nftables.conf"), old).unwrap();
        let n = resource(&bed, "table inet rampart {\n}\n");
        let v = bed.diff(&n).await;
        assert_eq!(v.action(), "modify");
        let out = bed.run(n.apply(&v, &bed.ctx)).await;
        assert!(out.success(), "{}", out.stderr_block());
        // Only the owned table was replaced: the others are as they were.
        let before = "table inet before {\n}\n";
        assert_eq!(
            live(&bed),
            format!("{before}table inet rampart {{\n}}\n{DOCKER}")
        );
        assert_eq!(bed.read("nftables.conf"), "table inet rampart {\n}\n");
        assert_eq!(
            bed.read("state/nftables.loaded"),
            format!(
                "rampart-nftables-loaded {}\ntable inet rampart {{\n}}\n",
                sha(&n.ruleset)
            )
        );
        assert!(bed.diff(&n).await.is_in_line());
        // Other tools' tables change at run time: no drift.
        std::fs::write(
            bed.path("live.d/ip_nat"),
            "table ip nat {\n\tchain DOCKER2 {\n\t}\n}\n",
        )
        .unwrap();
        assert!(bed.diff(&n).await.is_in_line());
        std::fs::write(bed.path("live.d/ip_nat"), DOCKER).unwrap();
        // rampart's table deleted by hand: drift, shown as the listing that comes back.
        std::fs::remove_file(bed.path("live.d/inet_rampart")).unwrap();
        assert_eq!(
            bed.diff(&n).await,
            Verdict::Modify(vec![change(
                "live ruleset",
                Some("(an empty ruleset)\n"),
                Some("table inet rampart {\n}\n")
            )])
        );
        // Nobody confirmed the load: a second after it, the owned table is as before and the
        // others untouched.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(live(&bed), format!("{before}{old}{DOCKER}"));
        assert_eq!(bed.read("nftables.conf"), old);
        assert_eq!(bed.read("state/nftables.loaded"), "<none>");
    }

    #[tokio::test]
    async fn an_unconfirmed_first_load_deletes_only_its_table() {
        let bed = nft_bed(1);
        let n = resource(&bed, "table inet rampart {\n}\n");
        let v = bed.diff(&n).await;
        assert_eq!(v.action(), "create");
        assert!(bed.run(n.apply(&v, &bed.ctx)).await.success());
        assert!(live(&bed).contains("table inet rampart"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(live(&bed), format!("table inet before {{\n}}\n{DOCKER}"));
        assert_eq!(bed.read("nftables.conf"), "<none>");
    }

    #[tokio::test]
    async fn a_confirmed_load_stays_and_a_file_only_change_does_not_reload() {
        let bed = nft_bed(1);
        let n = resource(&bed, "table inet after {\n}\n");
        let v = bed.diff(&n).await;
        assert_eq!(v.action(), "create");
        assert!(bed.run(n.apply(&v, &bed.ctx)).await.success());
        assert!(
            bed.run(super::super::deadman_disarm(&bed.ctx))
                .await
                .success()
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(bed.read("live.d/inet_after"), "table inet after {\n}\n");
        assert!(bed.diff(&n).await.is_in_line());

        std::fs::write(bed.path("nftables.conf"), "# edited\n").unwrap();
        let v = bed.diff(&n).await;
        assert_eq!(v.changes().len(), 1, "{v:?}");
        let mut ctx = bed.ctx.clone();
        ctx.run_id = "t2".into();
        assert!(bed.run(n.apply(&v, &ctx)).await.success());
        assert!(
            !bed.path("state/deadman/t2/nftables.armed").exists(),
            "no load, no switch"
        );
        assert_eq!(bed.read("nftables.conf"), n.ruleset);
        let backup = format!(
            "{}{}",
            bed.path("state/backups/t2").display(),
            bed.path("nftables.conf").display()
        );
        assert_eq!(std::fs::read_to_string(backup).unwrap(), "# edited\n");
    }

    #[tokio::test]
    async fn a_ruleset_nft_refuses_changes_nothing() {
        let bed = nft_bed(60);
        std::fs::write(bed.path("nftables.conf"), "table inet before {\n}\n").unwrap();
        let n = resource(&bed, "table inet after {\n  Bogus\n}\n");
        let v = bed.diff(&n).await;
        let out = bed.run(n.apply(&v, &bed.ctx)).await;
        assert!(!out.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("rampart: nft refuses the ruleset; nothing was changed:")
                && stderr.contains("nftables.rules:2:1-5: Error: syntax error"),
            "{stderr}"
        );
        assert_eq!(live(&bed), format!("table inet before {{\n}}\n{DOCKER}"));
        assert_eq!(bed.read("nftables.conf"), "table inet before {\n}\n");
        assert_eq!(bed.read("state/nftables.loaded"), "<none>");
        assert!(!bed.path("state/deadman/t1/nftables.armed").exists());
    }
}
