//! package: OS packages installed or absent, through the host's own package manager.
//!
//! Owns the `package` type: a probe that finds the manager (apt with dpkg, else dnf, yum, apk)
//! and asks it, per named package, whether it is installed (`dpkg-query`, `rpm -q`,
//! `apk info -e`); the pure diff; and the apply. Repositories, pinning and upgrades are not
//! its business: `state: present` installs what is missing and leaves installed versions as
//! they are. Names are real package names (not virtual ones, not `name=version`).
//!
//! ## apt
//!
//! Installs run `DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends`,
//! keeping changed config files (`--force-confdef --force-confold`) and waiting up to two
//! minutes for the dpkg lock (an unattended upgrade may hold it). The package lists are
//! refreshed first (`apt-get update`) when none is younger than a day, and once more before a
//! second try when the install fails on lists that were not just refreshed. On failure the
//! error shows apt's stderr whole and the end of its other output.
//!
//! Removal is `apt-get remove`, not `purge`: the packages' files go, their config files in
//! `/etc` stay (dpkg's `rc` state, which counts as absent). Config an admin edited is kept,
//! and a reinstall finds it again; removing the binaries is what hardening needs. Nothing is
//! auto-removed. apt removes the packages that depend on a removed one without asking, so the
//! apply first simulates (`apt-get -s remove`) and refuses, naming them, when more than the
//! listed packages would go.
//!
//! dnf and yum install with `dnf|yum install -y` and remove with `rpm -e`, which refuses to
//! remove a package others need (dnf would remove them too). apk adds with `apk add` and
//! removes with `apk del`, which keeps a package others need (then the verify says so).
//!
//! A package dpkg holds half-installed (`iU`, `iF`, `iH`) is not installed: the apply runs
//! `dpkg --configure -a` before installing it.
//!
//! ## Probe output
//!
//! ```text
//! rampart-package 1
//! manager=apt                      # apt | dnf | yum | apk | none
//! pkg=less installed 590-2.1~deb12u2     # name, then: installed VERSION (- when unknown)
//! pkg=hello absent                 #   or absent
//! pkg=vim partial iU               #   or partial DPKG-STATUS
//! end
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::kit::{DIE, Fields};
use super::{
    ApplyContext, Change, Field, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work,
    params,
};
use crate::remote::Script;

pub const PACKAGE: TypeInfo = TypeInfo {
    name: "package",
    params: &["names", "state"],
    build,
};

fn build(value: Value) -> Result<Box<dyn Resource>, ParamError> {
    Ok(Box::new(Package::try_from(params::<PackageParams>(
        value,
    )?)?))
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// `present` (default) or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

/// One name or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

/// The `package` step as written (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageParams {
    pub names: Names,
    #[serde(default)]
    pub state: State,
}

/// What the `package` step wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Without duplicates, in the playbook's order.
    pub names: Vec<String>,
    pub state: State,
}

/// A package name as apt, rpm and apk write them (`libc6:amd64`, `python3.11`, `g++`): ASCII
/// letters, digits and `+ - . _ : ~ @`, starting with a letter or digit (never an option, a
/// glob or a version request).
fn check_name(name: &str) -> Result<(), ParamError> {
    let ok = name.len() <= 200
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | ':' | '~' | '@')
        });
    if ok {
        Ok(())
    } else {
        Err(ParamError(format!(
            "package: {name:?} is not a package name: use letters, digits and + - . _ : ~ @, \
             starting with a letter or digit (no versions, no globs)"
        )))
    }
}

impl TryFrom<PackageParams> for Package {
    type Error = ParamError;
    fn try_from(p: PackageParams) -> Result<Package, ParamError> {
        let list = match p.names {
            Names::One(n) => vec![n],
            Names::Many(v) => v,
        };
        let mut names: Vec<String> = Vec::new();
        for n in list {
            let n = n.trim().to_string();
            check_name(&n)?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            return Err(ParamError("package: `names` is empty".into()));
        }
        Ok(Package {
            names,
            state: p.state,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Probe and parse.

const HEADER: &str = "rampart-package 1";

const PROBE: &str = r#"if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then m=apt
elif command -v dnf >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1; then m=dnf
elif command -v yum >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1; then m=yum
elif command -v apk >/dev/null 2>&1; then m=apk
else m=none
fi
printf 'manager=%s\n' "$m"
if [ "$m" != none ]; then
  for n do
    case $m in
      apt)
        st=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}\n' "$n" 2>/dev/null) || st=
        ok=$(printf '%s\n' "$st" | grep '^.[iWt]' | head -n 1)
        half=$(printf '%s\n' "$st" | grep -v '^.[nc]' | grep '|' | head -n 1)
        if [ -n "$ok" ]; then
          printf 'pkg=%s installed %s\n' "$n" "${ok#*|}"
        elif [ -n "$half" ]; then
          half=${half%%|*}
          printf 'pkg=%s partial %s\n' "$n" "${half% }"
        else
          printf 'pkg=%s absent\n' "$n"
        fi
        ;;
      dnf|yum)
        if v=$(rpm -q --qf '%{VERSION}-%{RELEASE}\n' "$n" 2>/dev/null); then
          printf 'pkg=%s installed %s\n' "$n" "$(printf '%s\n' "$v" | head -n 1)"
        else
          printf 'pkg=%s absent\n' "$n"
        fi
        ;;
      apk)
        if apk info -e "$n" >/dev/null 2>&1; then
          printf 'pkg=%s installed -\n' "$n"
        else
          printf 'pkg=%s absent\n' "$n"
        fi
        ;;
    esac
  done
fi
"#;

/// A package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
    Yum,
    Apk,
}

/// One package as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Yes {
        version: Option<String>,
    },
    No,
    /// dpkg's status letters (`iU`): unpacked or configured half-way.
    Partial(String),
}

impl Installed {
    fn describe(&self) -> Option<String> {
        match self {
            Installed::Yes { version: Some(v) } => Some(format!("installed ({v})")),
            Installed::Yes { version: None } => Some("installed".into()),
            Installed::No => None,
            Installed::Partial(s) => Some(format!("half-installed (dpkg status {s})")),
        }
    }
}

/// What the probe found, per wanted name in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub manager: Manager,
    pub packages: Vec<Installed>,
}

pub fn parse(d: &Package, out: &str) -> Result<Observed, ProbeError> {
    let f = Fields::read(out, HEADER, &["manager", "pkg"])?;
    let manager = match f.need("manager")? {
        "apt" => Manager::Apt,
        "dnf" => Manager::Dnf,
        "yum" => Manager::Yum,
        "apk" => Manager::Apk,
        "none" => {
            return Err(f.error(
                "no package manager found on the host (rampart knows apt with dpkg, dnf, yum \
                 and apk)",
            ));
        }
        m => return Err(f.error(format!("unknown manager {m:?}"))),
    };
    let mut found: Vec<Option<Installed>> = vec![None; d.names.len()];
    for line in f.all("pkg") {
        let mut w = line.split(' ');
        let name = w.next().unwrap_or("");
        let Some(i) = d.names.iter().position(|n| n == name) else {
            return Err(f.error(format!("a package the step does not name: {name:?}")));
        };
        let state = match (w.next(), w.next(), w.next()) {
            (Some("absent"), None, None) => Installed::No,
            (Some("installed"), Some(v), None) if !v.is_empty() => Installed::Yes {
                version: (v != "-").then(|| v.to_string()),
            },
            (Some("partial"), Some(s), None) if !s.is_empty() => Installed::Partial(s.into()),
            _ => return Err(f.error(format!("cannot read `pkg={line}`"))),
        };
        if found[i].replace(state).is_some() {
            return Err(f.error(format!("package {name} appears twice")));
        }
    }
    let packages = found
        .into_iter()
        .zip(&d.names)
        .map(|(p, n)| p.ok_or_else(|| f.error(format!("no line for package {n}"))))
        .collect::<Result<_, _>>()?;
    Ok(Observed { manager, packages })
}

// ---------------------------------------------------------------------------------------------
// Diff.

/// The field of a `package` step: one package, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName(pub String);

impl Field for PackageName {
    fn name(&self) -> String {
        self.0.clone()
    }

    fn of(name: &str) -> Option<PackageName> {
        Some(PackageName(name.to_string()))
    }
}

/// Pure: what must change.
pub fn diff(d: &Package, o: &Observed) -> Verdict<PackageName> {
    let pairs = d.names.iter().zip(&o.packages);
    match d.state {
        State::Present => {
            let changes: Vec<Change<PackageName>> = pairs
                .clone()
                .filter(|(_, p)| !matches!(p, Installed::Yes { .. }))
                .map(|(n, p)| {
                    Change::of(
                        PackageName(n.clone()),
                        p.describe(),
                        Some("installed".into()),
                    )
                })
                .collect();
            if changes.is_empty() {
                let list: Vec<String> = pairs
                    .map(|(n, p)| match p {
                        Installed::Yes { version: Some(v) } => format!("{n} {v}"),
                        _ => n.clone(),
                    })
                    .collect();
                Verdict::InLine(format!(
                    "package {} is in line: installed ({})",
                    d.names.join(" "),
                    list.join(", ")
                ))
            } else if changes.len() == d.names.len()
                && o.packages.iter().all(|p| *p == Installed::No)
            {
                Verdict::Create(changes)
            } else {
                Verdict::Modify(changes)
            }
        }
        State::Absent => {
            let changes: Vec<Change<PackageName>> = pairs
                .filter(|(_, p)| **p != Installed::No)
                .map(|(n, p)| Change::of(PackageName(n.clone()), p.describe(), None))
                .collect();
            if changes.is_empty() {
                Verdict::InLine(format!("package {} is in line: absent", d.names.join(" ")))
            } else {
                Verdict::Remove(changes)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apply.

const APPLY_PRELUDE: &str = r#"o=$(mktemp) && e=$(mktemp) || die "cannot create temporary files"
trap 'rm -f "$o" "$e"' EXIT
# apt's output on failure: stderr whole, the end of stdout for context.
failed() {
  printf -- '---- %s: last lines of its output ----\n' "$1" >&2
  tail -n 25 "$o" >&2
  printf -- '---- %s: stderr ----\n' "$1" >&2
  cat "$e" >&2
  printf -- '----\n' >&2
  die "$2"
}
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then m=apt
elif command -v dnf >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1; then m=dnf
elif command -v yum >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1; then m=yum
elif command -v apk >/dev/null 2>&1; then m=apk
else die "no package manager found (apt, dnf, yum or apk)"
fi
export DEBIAN_FRONTEND=noninteractive
"#;

const INSTALL: &str = r#"case $m in
  apt)
    apt_install() {
      apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >"$o" 2>"$e"
    }
    updated=
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
      apt-get update -o DPkg::Lock::Timeout=120 >"$o" 2>"$e" || {
        printf 'rampart: apt-get update failed; installing from the lists there are:\n' >&2
        cat "$e" >&2
      }
      updated=1
    fi
    if [ -n "$partial" ]; then dpkg --configure -a >"$o" 2>"$e" || failed "dpkg --configure -a" "dpkg cannot finish the half-installed packages"; fi
    if ! apt_install "$@"; then
      if [ -z "$updated" ]; then
        printf 'rampart: apt-get install failed; refreshing the package lists and trying again\n'
        apt-get update -o DPkg::Lock::Timeout=120 >"$o" 2>"$e" || true
        apt_install "$@" || failed "apt-get install" "apt-get install $* failed"
      else
        failed "apt-get install" "apt-get install $* failed"
      fi
    fi
    ;;
  dnf|yum) "$m" install -y "$@" >"$o" 2>"$e" || failed "$m install" "$m install $* failed" ;;
  apk) apk add --no-progress "$@" >"$o" 2>"$e" || failed "apk add" "apk add $* failed" ;;
esac
"#;

const REMOVE: &str = r#"case $m in
  apt)
    apt-get -s remove "$@" >"$o" 2>"$e" || failed "apt-get -s remove" "apt-get cannot remove $*"
    w=
    for n do w="$w ${n%%:*}"; done
    extra=
    for p in $(awk '$1 == "Remv" { print $2 }' "$o"); do
      case "$w " in
        *" ${p%%:*} "*) ;;
        *) extra="$extra $p" ;;
      esac
    done
    if [ -n "$extra" ]; then
      die "removing $* would also remove$extra (they depend on it); list them too, or keep $*"
    fi
    apt-get remove -y -o DPkg::Lock::Timeout=120 "$@" >"$o" 2>"$e" || failed "apt-get remove" "apt-get remove $* failed"
    ;;
  dnf|yum) rpm -e "$@" >"$o" 2>"$e" || failed "rpm -e" "rpm -e $* failed (rpm refuses to remove a package others need)" ;;
  apk) apk del --no-progress "$@" >"$o" 2>"$e" || failed "apk del" "apk del $* failed" ;;
esac
"#;

/// Installs or removes the packages the verdict changes; notified as a handler, all of them
/// (installed for `state: present`, removed for `state: absent`).
pub fn apply(d: &Package, work: Work<'_, PackageName>) -> Script {
    let body = match work {
        Work::Converge(Verdict::Create(_) | Verdict::Modify(_)) => INSTALL,
        Work::Converge(Verdict::Remove(_)) => REMOVE,
        Work::Converge(Verdict::InLine(_)) => return Script::new(),
        Work::Notified => match d.state {
            State::Present => INSTALL,
            State::Absent => REMOVE,
        },
    };
    let changes = work.changes();
    let all = changes.is_empty();
    let names: Vec<&String> = d
        .names
        .iter()
        .filter(|n| all || changes.iter().any(|c| c.field.0 == **n))
        .collect();
    let partial = changes
        .iter()
        .any(|c| c.before.as_deref().is_some_and(|b| b.starts_with("half")));
    let mut s = Script::new()
        .raw("(\n")
        .raw(DIE)
        .raw(APPLY_PRELUDE)
        .raw(if partial { "partial=1\n" } else { "partial=\n" })
        .raw("set --");
    for n in names {
        s = s.raw(" ").arg(n);
    }
    s.raw("\n").raw(body).raw(") || exit 1\n")
}

impl Resource for Package {
    fn id(&self) -> String {
        format!("package {}", self.names.join(" "))
    }

    fn probe(&self) -> Script {
        let mut s = Script::new()
            .raw("(\nprintf '")
            .raw(HEADER)
            .raw("\\n'\nset --");
        for n in &self.names {
            s = s.raw(" ").arg(n);
        }
        s.raw("\n").raw(PROBE).raw("printf 'end\\n'\n)\n")
    }
}

impl Typed for Package {
    type Observed<'a> = Observed;
    type Field = PackageName;

    fn parse(&self, out: &str) -> Result<Observed, ProbeError> {
        parse(self, out)
    }

    fn compare(&self, o: &Observed) -> Result<Verdict<PackageName>, ProbeError> {
        Ok(diff(self, o))
    }

    fn converge(&self, work: Work<'_, PackageName>, _ctx: &ApplyContext) -> Script {
        apply(self, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Converge as _;
    use serde_json::json;

    fn package(p: Value) -> Package {
        Package::try_from(params::<PackageParams>(p).unwrap()).unwrap()
    }

    fn err(p: Value) -> String {
        match params::<PackageParams>(p) {
            Err(e) => e.0,
            Ok(p) => Package::try_from(p).unwrap_err().0,
        }
    }

    fn out(manager: &str, pkgs: &[&str]) -> String {
        let mut s = format!("rampart-package 1\nmanager={manager}\n");
        for p in pkgs {
            s.push_str(&format!("pkg={p}\n"));
        }
        s.push_str("end\n");
        s
    }

    fn verdict(d: &Package, out: &str) -> Verdict {
        d.diff(out).unwrap()
    }

    #[test]
    fn every_declared_param_is_accepted() {
        let p = json!({"names": ["hello", "hello", "libc6:amd64", "g++"], "state": "absent"});
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, PACKAGE.params);
        let d = package(p);
        assert_eq!(d.names, ["hello", "libc6:amd64", "g++"]);
        assert_eq!(d.state, State::Absent);
        assert_eq!(package(json!({"names": "hello"})).state, State::Present);
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        assert!(err(json!({"names": []})).contains("`names` is empty"));
        assert!(err(json!({"names": ["x"], "state": "latest"})).contains("unknown variant"));
        assert!(err(json!({"names": ["x"], "version": 1})).contains("unknown field"));
        for bad in ["-y", "hello=2.10", "a b", "*", "$(id)", "", "x;y"] {
            assert!(
                err(json!({ "names": [bad] })).contains("is not a package name"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn present_installs_what_is_missing() {
        let d = package(json!({"names": ["unattended-upgrades", "hello"]}));
        assert_eq!(
            verdict(
                &d,
                &out("apt", &["unattended-upgrades absent", "hello absent"])
            ),
            Verdict::Create(vec![
                Change::new("unattended-upgrades", None, Some("installed".into())),
                Change::new("hello", None, Some("installed".into())),
            ])
        );
        assert_eq!(
            verdict(
                &d,
                &out(
                    "apt",
                    &["hello installed 2.10-3", "unattended-upgrades partial iU"]
                )
            ),
            Verdict::Modify(vec![Change::new(
                "unattended-upgrades",
                Some("half-installed (dpkg status iU)".into()),
                Some("installed".into())
            )])
        );
        assert_eq!(
            verdict(
                &d,
                &out(
                    "apt",
                    &[
                        "unattended-upgrades installed 2.9.1+nmu3",
                        "hello installed 2.10-3"
                    ]
                )
            ),
            Verdict::InLine(
                "package unattended-upgrades hello is in line: installed \
                 (unattended-upgrades 2.9.1+nmu3, hello 2.10-3)"
                    .into()
            )
        );
        let apk = package(json!({"names": "curl"}));
        assert!(verdict(&apk, &out("apk", &["curl installed -"])).is_in_line());
    }

    #[test]
    fn absent_removes_what_is_there() {
        let d = package(json!({"names": ["telnet", "less"], "state": "absent"}));
        assert_eq!(
            verdict(
                &d,
                &out("apt", &["telnet absent", "less installed 590-2.1~deb12u2"])
            ),
            Verdict::Remove(vec![Change::new(
                "less",
                Some("installed (590-2.1~deb12u2)".into()),
                None
            )])
        );
        assert_eq!(
            verdict(&d, &out("dnf", &["telnet absent", "less absent"])),
            Verdict::InLine("package telnet less is in line: absent".into())
        );
    }

    #[test]
    fn junk_and_cut_short_probe_outputs_are_probe_errors() {
        let d = package(json!({"names": ["hello", "less"]}));
        for bad in [
            String::new(),
            "junk\n".into(),
            out("none", &[]),
            out("pacman", &["hello absent", "less absent"]),
            out("apt", &["hello absent"]),
            out("apt", &["hello absent", "less absent", "hello absent"]),
            out("apt", &["hello absent", "less absent", "vim absent"]),
            out("apt", &["hello absent", "less installed"]),
            out("apt", &["hello absent", "less maybe"]),
            out("apt", &["hello absent", "less absent extra"]),
            out("apt", &["hello absent", "less absent"]).replace("end\n", ""),
        ] {
            assert!(d.diff(&bad).is_err(), "{bad:?}");
        }
        let e = d.diff(&out("none", &[])).unwrap_err();
        assert!(e.message.contains("no package manager found"), "{e}");
    }

    #[test]
    fn apply_acts_on_the_changed_names_only() {
        let d = package(json!({"names": ["hello", "less"]}));
        let v = Verdict::Modify(vec![Change::new("hello", None, Some("installed".into()))]);
        let text = d.apply(&v, &ApplyContext::new("t")).render().unwrap();
        assert!(text.contains("set -- 'hello'\n"), "{text}");
        assert!(
            text.contains("apt-get install -y --no-install-recommends"),
            "{text}"
        );
        assert!(text.contains("partial=\n"), "{text}");
        let r = package(json!({"names": ["less"], "state": "absent"}));
        let v = Verdict::Remove(vec![Change::new("less", Some("installed".into()), None)]);
        let text = r.apply(&v, &ApplyContext::new("t")).render().unwrap();
        assert!(text.contains("apt-get -s remove"), "{text}");
        assert!(text.contains("apt-get remove -y"), "{text}");
        assert!(!text.contains("purge"), "{text}");
    }

    /// Notified as a handler, a package step acts on all its names, by its state: a handler
    /// with `state: absent` removes (the empty verdict it used to get meant "install").
    #[test]
    fn a_notified_handler_acts_by_its_state() {
        let ctx = ApplyContext::new("t");
        let add = package(json!({"names": ["hello", "less"]}));
        let text = add.notify(&ctx).render().unwrap();
        assert!(text.contains("set -- 'hello' 'less'\n"), "{text}");
        assert!(text.contains("apt-get install -y"), "{text}");
        let del = package(json!({"names": ["telnet"], "state": "absent"}));
        let text = del.notify(&ctx).render().unwrap();
        assert!(text.contains("set -- 'telnet'\n"), "{text}");
        assert!(text.contains("apt-get remove -y"), "{text}");
        assert!(!text.contains("apt-get install"), "{text}");
        // The engine's way of saying "notified" is the same thing.
        assert_eq!(
            del.apply(&Verdict::Modify(Vec::new()), &ctx).render().unwrap(),
            text
        );
    }

    #[test]
    fn the_probe_runs_under_sh_and_parses() {
        // This machine is Debian: dpkg-query answers for real.
        let d = package(json!({"names": ["dpkg", "rampart-no-such-package"]}));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(d.probe().render().unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let o = parse(&d, &text).unwrap();
        if o.manager == Manager::Apt {
            assert!(
                matches!(o.packages[0], Installed::Yes { version: Some(_) }),
                "{text}"
            );
            assert_eq!(o.packages[1], Installed::No, "{text}");
        }
    }
}
