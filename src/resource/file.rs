//! file: four resource types over one path each, sharing one probe and one writer.
//!
//! - `file`: a regular file's whole content, its owner, group and mode.
//! - `directory`: a folder, made with its missing parents (like `mkdir -p`; parents get
//!   mode 0755 and the connecting user as owner, or in a folder another account controls,
//!   that account), its owner, group and mode.
//! - `absent`: nothing at a path. A file, symlink or folder there is copied to the backup
//!   folder, then removed (`rm -rf` for a folder).
//! - `lines`: whole lines that must be in a text file, and lines that must not be. Missing
//!   lines are added at the end, unwanted ones removed; every other line stays, in order.
//!
//! Files are written atomically: a temporary file in the same folder gets the content, the
//! owner, group and mode, and is then renamed over the path. Before a file's content is
//! replaced or a path removed, what was there is copied to [`ApplyContext::backup_dir`] under
//! its full path (`/var/lib/rampart/backups/<run>/etc/motd`). The first copy in a run wins,
//! so a rerun never overwrites the original with rampart's own output; a folder removed after
//! files in it were backed up is merged in, those earlier copies winning. The writer, the
//! backups and owner, group and mode are [`fsfile`](super::fsfile)'s.
//!
//! A `file` or `lines` step never creates a missing folder: that is an error that names it (a
//! `directory` step makes folders). A `file` step replaces a symlink at its path with a
//! regular file (the link is backed up, its target untouched); `lines` refuses symlinks. No
//! type replaces a folder with a file or the other way round: that takes an `absent` step.
//! Rendering templates into `content` is the engine's job: this module gets the final text.
//!
//! ## Probe output
//!
//! Every probe prints, one field a line (base64 keeps hostile bytes on one line):
//!
//! ```text
//! kind none|file|dir|link|other
//! target <base64 of the symlink's target and a newline>     (kind link)
//! stat <owner> <uid> <group> <gid> <octal mode> <size>      (kind file, dir, other)
//! content                                                    (file, lines: a file of at
//! <base64 of the whole content, in lines>                     most 1 MiB)
//! end
//! sha1 <40 hex digits>                                       (file, lines: a larger file)
//! ```
//!
//! `file` and `lines` do not follow a symlink at the path (it is reported as `link`);
//! `directory` does (a symlink to a folder is that folder), but only a link root made in a
//! folder only root controls: every probe and apply first walks to the path with fsfile's
//! `rw_cd`, and a link anyone else could have planted, on the way or at the path, is
//! `kind unsafe` (the step fails and names it), never followed. The tools used are POSIX sh plus
//! `stat -c`, `base64`, `sha1sum`, `readlink` and `mktemp`, found in GNU coreutils and in
//! busybox. Large files are compared by SHA-1 because that is the hash crate rampart already
//! depends on; the comparison is against the operator's own content, so only a second
//! preimage would fool it.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::fsfile::{
    AsPerm, MAX_CONTENT, Meta, PermField, Perms, WALK, Write, apply_script, backup_path,
    backup_script, check_path, content_block, guarded_probe, guarded_probe_folder, name_of, parent,
    parse_stat, perm_fields, refusal, sha1_hex, shown,
};
use super::{
    ApplyContext, Change, ParamError, ProbeError, Resource, TypeInfo, Typed, Verdict, Work, params,
};
use crate::remote::Script;

pub const FILE: TypeInfo = TypeInfo {
    name: "file",
    params: &["path", "content", "owner", "group", "mode", "backup"],
    build: |v| Ok(Box::new(File::try_from(params::<FileParams>(v)?)?)),
};

pub const DIRECTORY: TypeInfo = TypeInfo {
    name: "directory",
    params: &["path", "owner", "group", "mode"],
    build: |v| {
        Ok(Box::new(Directory::try_from(params::<DirectoryParams>(
            v,
        )?)?))
    },
};

pub const ABSENT: TypeInfo = TypeInfo {
    name: "absent",
    params: &["path", "backup"],
    build: |v| Ok(Box::new(Absent::try_from(params::<AbsentParams>(v)?)?)),
};

pub const LINES: TypeInfo = TypeInfo {
    name: "lines",
    params: &[
        "path", "present", "absent", "create", "owner", "group", "mode", "backup",
    ],
    build: |v| Ok(Box::new(Lines::try_from(params::<LinesParams>(v)?)?)),
};

// ---------------------------------------------------------------------------------------
// Parameters as written, and their checks.

fn yes() -> bool {
    true
}

/// `file` as written in the playbook (after templating).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    pub path: String,
    pub content: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// A string of octal digits (`"0644"`, `"644"`); a YAML number is refused.
    pub mode: Option<Value>,
    #[serde(default = "yes")]
    pub backup: bool,
}

/// `directory` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryParams {
    pub path: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Value>,
}

/// `absent` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsentParams {
    pub path: String,
    #[serde(default = "yes")]
    pub backup: bool,
}

/// `lines` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesParams {
    pub path: String,
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
    #[serde(default = "yes")]
    pub create: bool,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Value>,
    #[serde(default = "yes")]
    pub backup: bool,
}

// ---------------------------------------------------------------------------------------
// Probe and parse, shared by the four types (fsfile.rs reads the `stat` line).

/// What kind of thing is at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    None,
    File,
    Dir,
    /// A symlink (one that `directory` does not follow: dangling, or to a non-folder).
    Link {
        target: String,
    },
    /// A device, FIFO or socket.
    Other,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::None => "nothing".to_string(),
            Kind::File => "a file".to_string(),
            Kind::Dir => "a folder".to_string(),
            Kind::Link { target } => format!("a symlink to {}", shown(target)),
            Kind::Other => "a special file (device, FIFO or socket)".to_string(),
        }
    }
}

/// A regular file's content, as the probe gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Bytes(Vec<u8>),
    /// Larger than [`MAX_CONTENT`]: only its hash.
    Large {
        sha1: String,
    },
}

impl Content {
    fn equals(&self, data: &[u8]) -> bool {
        match self {
            Content::Bytes(b) => b == data,
            Content::Large { sha1 } => *sha1 == sha1_hex(data),
        }
    }

    /// The text for the `before` side of a change: the content itself when it is UTF-8,
    /// else a description.
    fn before_text(&self, size: u64) -> String {
        match self {
            Content::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => t.to_string(),
                Err(_) => format!("<{size} bytes, not UTF-8 text, sha1 {}>", sha1_hex(b)),
            },
            Content::Large { sha1 } => format!("<{size} bytes, sha1 {sha1}>"),
        }
    }
}

/// What a probe found at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    kind: Kind,
    meta: Option<Meta>,
    content: Option<Content>,
}

/// The probe of `path`. `follow`: a symlink to a folder counts as that folder (`directory`).
/// `content`: print a regular file's content (or hash, when large). `link_unsafe`: a link at
/// the path that root must not follow is refused (`kind unsafe`), not reported as a link.
/// Either way the walk to the path refuses links planted on the way (fsfile's `rw_guard`).
fn probe_path(path: &str, follow: bool, content: bool, link_unsafe: bool) -> Script {
    let (is_link, stat) = if follow {
        ("[ -L \"$p\" ] && [ ! -d \"$p\" ]", "stat -L -c")
    } else {
        ("[ -L \"$p\" ]", "stat -c")
    };
    let open = if follow {
        guarded_probe_folder(path)
    } else {
        guarded_probe(path, link_unsafe)
    };
    let mut s = open
        .raw("if ")
        .raw(is_link)
        .raw(
            "; then\n\
         \x20 printf 'kind link\\ntarget %s\\n' \"$(readlink \"$p\" | base64 | tr -d '\\n')\"\n\
         else\n\
         \x20 if [ -d \"$p\" ]; then k=dir; elif [ -f \"$p\" ]; then k=file\n\
         \x20 elif [ -e \"$p\" ]; then k=other; else k=none; fi\n\
         \x20 printf 'kind %s\\n' \"$k\"\n\
         \x20 if [ \"$k\" != none ]; then ",
        )
        .raw(stat)
        .raw(" 'stat %U %u %G %g %a %s' \"$p\"; fi\n");
    if content {
        s = s.raw(
            "  if [ \"$k\" = file ]; then\n\
             \x20   if [ \"$(stat -c %s \"$p\")\" -le 1048576 ]; then\n\
             \x20     printf 'content\\n'; rw_as base64 -- \"$p\" && printf 'end\\n'\n\
             \x20   else\n\
             \x20     printf 'sha1 %s\\n' \"$(rw_as sh -c 'sha1sum <\"$1\"' rampart-sha1 \"$p\" | cut -d ' ' -f 1)\"\n\
             \x20   fi\n\
             \x20 fi\n",
        );
    }
    s.raw("fi\nfi\n)\n")
}

/// Parses the probe's output. Pure.
fn parse(out: &str) -> Result<Observed, ProbeError> {
    refusal(out)?;
    let err = |m: String| ProbeError::new(m, out);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = out.lines();
    let kind = match lines.next() {
        Some("kind none") => Kind::None,
        Some("kind file") => Kind::File,
        Some("kind dir") => Kind::Dir,
        Some("kind link") => Kind::Link {
            target: String::new(),
        },
        Some("kind other") => Kind::Other,
        Some(l) => return Err(err(format!("expected a `kind` line first, found {l:?}"))),
        None => return Err(err("the probe printed nothing".to_string())),
    };
    let mut obs = Observed {
        kind,
        meta: None,
        content: None,
    };
    while let Some(line) = lines.next() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (key, &mut obs.kind) {
            ("target", Kind::Link { target }) => {
                let bytes = b64
                    .decode(rest)
                    .map_err(|e| err(format!("the symlink target is not base64: {e}")))?;
                let text = String::from_utf8_lossy(&bytes);
                *target = text.strip_suffix('\n').unwrap_or(&text).to_string();
            }
            ("stat", Kind::File | Kind::Dir | Kind::Other) if obs.meta.is_none() => {
                obs.meta = Some(parse_stat(rest).ok_or_else(|| {
                    err(format!(
                        "expected `stat OWNER UID GROUP GID MODE SIZE`, found {line:?}"
                    ))
                })?);
            }
            ("content", Kind::File) if rest.is_empty() && obs.content.is_none() => {
                obs.content = Some(Content::Bytes(content_block(&mut lines).map_err(err)?));
            }
            ("sha1", Kind::File)
                if obs.content.is_none()
                    && rest.len() == 40
                    && rest.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                obs.content = Some(Content::Large {
                    sha1: rest.to_ascii_lowercase(),
                });
            }
            _ => return Err(err(format!("unexpected line {line:?}"))),
        }
    }
    if matches!(obs.kind, Kind::File | Kind::Dir | Kind::Other) && obs.meta.is_none() {
        return Err(err("no `stat` line (stat failed?)".to_string()));
    }
    Ok(obs)
}

crate::fields! {
    /// The fields of the `file`, `directory`, `absent` and `lines` types.
    pub enum FsField {
        Content = "content",
        /// What is at the path: a file, a folder, a symlink, nothing.
        Type = "type",
        Owner = "owner",
        Group = "group",
        Mode = "mode",
    }
}

impl From<PermField> for FsField {
    fn from(f: PermField) -> FsField {
        match f {
            PermField::Owner => FsField::Owner,
            PermField::Group => FsField::Group,
            PermField::Mode => FsField::Mode,
        }
    }
}

impl AsPerm for FsField {
    fn perm(&self) -> Option<PermField> {
        match self {
            FsField::Owner => Some(PermField::Owner),
            FsField::Group => Some(PermField::Group),
            FsField::Mode => Some(PermField::Mode),
            FsField::Content | FsField::Type => None,
        }
    }
}

/// What a probe of the four types found, with the output it came from (quoted by errors).
pub struct Found<'a> {
    obs: Observed,
    out: &'a str,
}

fn found(out: &str) -> Result<Found<'_>, ProbeError> {
    Ok(Found {
        obs: parse(out)?,
        out,
    })
}

// ---------------------------------------------------------------------------------------
// file

/// `file`: a regular file with exactly this content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub content: String,
    perms: Perms,
    pub backup: bool,
}

impl TryFrom<FileParams> for File {
    type Error = ParamError;
    fn try_from(p: FileParams) -> Result<File, ParamError> {
        check_path("file", &p.path)?;
        if p.path == "/" {
            return Err(ParamError("file: path \"/\" is the root folder".into()));
        }
        Ok(File {
            perms: Perms::from_params("file", p.owner, p.group, &p.mode)?,
            path: p.path,
            content: p.content,
            backup: p.backup,
        })
    }
}

impl Resource for File {
    fn plain_fields(&self) -> &'static [&'static str] {
        &["type", "owner", "group", "mode"]
    }

    fn fs_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn id(&self) -> String {
        format!("file {}", shown(&self.path))
    }

    /// Mode 0600 or stricter: a secrets file.
    fn sensitive(&self) -> bool {
        self.perms.mode.is_some_and(|m| m & 0o077 == 0)
    }

    /// Puts back what this run's apply replaced: the run's backup of the file, or no file
    /// when there was none. Only with backups on (the default).
    fn restore(&self, ctx: &ApplyContext) -> Option<Script> {
        if !self.backup {
            return None;
        }
        let backup = backup_path(ctx, &self.path);
        Some(
            Script::new()
                .raw("b=")
                .arg(&backup)
                .raw(" p=")
                .arg(&self.path)
                .raw("\nif [ -e \"$b\" ] || [ -L \"$b\" ]; then\n  cp -a \"$b\" \"$p.rampart-restore\" && mv -f \"$p.rampart-restore\" \"$p\"\nelse\n  rm -f \"$p\"\nfi\n"),
        )
    }

    fn probe(&self) -> Script {
        probe_path(&self.path, false, true, true)
    }

    fn probed_after(&self, probe_output: &str, _verdict: &Verdict) -> Option<String> {
        super::after::file_probe_after(probe_output, self.content.as_bytes(), &self.perms, 0o644)
    }
}

impl Typed for File {
    type Observed<'a> = Found<'a>;
    type Field = FsField;

    fn parse<'a>(&self, out: &'a str) -> Result<Found<'a>, ProbeError> {
        found(out)
    }

    fn compare(&self, found: &Found<'_>) -> Result<Verdict<FsField>, ProbeError> {
        let (obs, probe_output) = (&found.obs, found.out);
        let want = Some(self.content.clone());
        match &obs.kind {
            Kind::None => {
                let mut changes = vec![Change::of(FsField::Content, None, want)];
                changes.extend(self.perms.changes(None, Some(0o644)));
                Ok(Verdict::Create(changes))
            }
            Kind::Link { .. } => {
                let mut changes = vec![
                    Change::of(
                        FsField::Type,
                        Some(obs.kind.describe()),
                        Some("a file".into()),
                    ),
                    Change::of(FsField::Content, None, want),
                ];
                changes.extend(self.perms.changes(None, None));
                Ok(Verdict::Modify(changes))
            }
            Kind::Dir | Kind::Other => Err(ProbeError::new(
                format!(
                    "{} is {}, not a regular file; a file step does not replace it \
                     (add an absent step before this one)",
                    shown(&self.path),
                    obs.kind.describe()
                ),
                probe_output,
            )),
            Kind::File => {
                let meta = obs.meta.as_ref().expect("parse checks stat");
                let Some(content) = &obs.content else {
                    return Err(ProbeError::new("no content for a file", probe_output));
                };
                let mut changes = Vec::new();
                if !content.equals(self.content.as_bytes()) {
                    let before = content.before_text(meta.size);
                    // Found with mode 0600 or stricter: a secrets file, whatever the step
                    // wants; neither side of the change is shown.
                    let change = if meta.mode & 0o077 == 0 {
                        Change::of(
                            FsField::Content,
                            Some(crate::secrets::fingerprint(&before)),
                            Some(crate::secrets::fingerprint(&self.content)),
                        )
                    } else {
                        Change::of(FsField::Content, Some(before), want)
                    };
                    changes.push(change);
                }
                changes.extend(self.perms.changes(Some(meta), None));
                if changes.is_empty() {
                    Ok(Verdict::InLine(format!("{} is in line", self.id())))
                } else {
                    Ok(Verdict::Modify(changes))
                }
            }
        }
    }

    fn converge(&self, work: Work<'_, FsField>, ctx: &ApplyContext) -> Script {
        let verdict = match work {
            Work::Converge(v) => v,
            // As a notified handler: the walk to the file and the check that it is still a
            // regular file; nothing changes (a file step has no action of its own).
            Work::Notified => &Verdict::Modify(Vec::new()),
        };
        let changes = match verdict {
            Verdict::Create(c) | Verdict::Modify(c) => c,
            Verdict::InLine(_) | Verdict::Remove(_) => return Script::new(),
        };
        // A new owner is given by a rewrite (the temporary file gets it before the rename):
        // root never chowns a name that someone else could swap for a link to another file.
        let has = |f: FsField| changes.iter().any(|c| c.field == f);
        if has(FsField::Content) || has(FsField::Type) || has(FsField::Owner) {
            apply_script(
                Write {
                    path: &self.path,
                    content: self.content.as_bytes(),
                    perms: &self.perms,
                    new_mode: 0o644,
                    backup: self.backup.then(|| backup_path(ctx, &self.path)),
                    check: Script::new(),
                    make_folder: false,
                    replace_link: true,
                }
                .script(),
            )
        } else {
            self.perms.apply_to_file(&self.path, &perm_fields(changes))
        }
    }
}

// ---------------------------------------------------------------------------------------
// directory

/// `directory`: a folder, made with its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub path: String,
    perms: Perms,
}

impl TryFrom<DirectoryParams> for Directory {
    type Error = ParamError;
    fn try_from(p: DirectoryParams) -> Result<Directory, ParamError> {
        check_path("directory", &p.path)?;
        Ok(Directory {
            perms: Perms::from_params("directory", p.owner, p.group, &p.mode)?,
            path: p.path,
        })
    }
}

impl Resource for Directory {
    fn plain_fields(&self) -> &'static [&'static str] {
        &["type", "owner", "group", "mode"]
    }

    fn fs_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn id(&self) -> String {
        format!("directory {}", shown(&self.path))
    }

    fn probe(&self) -> Script {
        probe_path(&self.path, true, false, true)
    }
}

impl Typed for Directory {
    type Observed<'a> = Found<'a>;
    type Field = FsField;

    fn parse<'a>(&self, out: &'a str) -> Result<Found<'a>, ProbeError> {
        found(out)
    }

    fn compare(&self, found: &Found<'_>) -> Result<Verdict<FsField>, ProbeError> {
        let (obs, probe_output) = (&found.obs, found.out);
        match &obs.kind {
            Kind::None => {
                let mut changes = vec![Change::of(FsField::Type, None, Some("a folder".into()))];
                changes.extend(self.perms.changes(None, Some(0o755)));
                Ok(Verdict::Create(changes))
            }
            Kind::Dir => {
                let changes = self.perms.changes(obs.meta.as_ref(), None);
                if changes.is_empty() {
                    Ok(Verdict::InLine(format!("{} is in line", self.id())))
                } else {
                    Ok(Verdict::Modify(changes))
                }
            }
            Kind::File | Kind::Link { .. } | Kind::Other => Err(ProbeError::new(
                format!(
                    "{} is {}, not a folder; a directory step does not replace it \
                     (add an absent step before this one)",
                    shown(&self.path),
                    obs.kind.describe()
                ),
                probe_output,
            )),
        }
    }

    /// The walk to the folder (fsfile's `rw_cd`: no link followed that someone else could
    /// have planted, missing parents made 0755 and given to whoever controls their folder),
    /// the folder made (0700) if missing, then the walk into it: owner, group and mode are
    /// set on `.`, the folder the script stands in, so no swap of its name can redirect them.
    /// In a folder another account controls, a new folder without a wanted owner goes to that
    /// account, and any other wanted owner is refused (that account could swap the folder).
    fn converge(&self, work: Work<'_, FsField>, ctx: &ApplyContext) -> Script {
        let _ = ctx;
        let verdict = match work {
            Work::Converge(v) => v,
            // As a notified handler: owner, group and mode only where they differ (none).
            Work::Notified => &Verdict::Modify(Vec::new()),
        };
        let (changes, create) = match verdict {
            Verdict::Create(c) => (c, true),
            Verdict::Modify(c) => (c, false),
            Verdict::InLine(_) | Verdict::Remove(_) => return Script::new(),
        };
        let mut s = Script::new()
            .raw("p=")
            .arg(&self.path)
            .raw("\nd=")
            .arg(parent(&self.path).unwrap_or("/"))
            .raw("\nn=")
            .arg(name_of(&self.path))
            .raw("\n")
            .raw(WALK)
            .raw("made=\n");
        if create {
            s = s.raw(
                "rw_cd \"$d\" 1 || die \"cannot create $p: $rw_err\"\n\
                 if [ -L \"./$n\" ]; then\n\
                 \x20 rw_planted \"$n\" || die \"cannot create $p: $rw_err\"\n\
                 elif [ ! -e \"./$n\" ]; then\n\
                 \x20 mkdir -m 0700 -- \"./$n\" || [ -d \"./$n\" ] || die \"cannot create $p\"\n\
                 \x20 made=1\n\
                 fi\n",
            );
        }
        s = s.raw(
            "rw_cd \"$p\" 0\n\
             case $? in\n\
             \x20 0) ;;\n\
             \x20 1) die \"cannot change $p: $rw_err\" ;;\n\
             \x20 *) die \"$p exists and is not a folder (or is no longer one); run again\" ;;\n\
             esac\n",
        );
        let owner_rule = match &self.perms.owner {
            Some(o) => Script::new().raw("  wu=$(id -u ").arg(o).raw(
                " 2>/dev/null) || wu=\n\
                 \x20 [ \"$wu\" = \"$pu\" ] || die \"refusing to give $p to ",
            )
            .arg(o)
            .raw(
                ": the folder that holds it is controlled by $(rw_name \"$pu\"), who can \
                 rename or swap it at any moment. hint: give it to that account, or keep it in \
                 a folder only root controls\"\n",
            ),
            None => Script::new().raw(
                "  if [ -n \"$made\" ]; then rw_give \"$pu\" || die \"cannot give $p to uid $pu\"; fi\n",
            ),
        };
        s = s
            .raw("if [ \"$pu\" != 0 ] && [ \"$rw_me\" = 0 ]; then\n")
            .then(owner_rule)
            .raw("fi\n");
        let perms = if create {
            // Made 0700, then given its owner and mode: never more open than wanted.
            Perms {
                mode: self.perms.mode.or(Some(0o755)),
                ..self.perms.clone()
            }
        } else {
            self.perms.clone()
        };
        apply_script(s.then(perms.apply_in_place(&perm_fields(changes), ".")))
    }
}

// ---------------------------------------------------------------------------------------
// absent

/// `absent`: nothing at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    pub path: String,
    pub backup: bool,
}

impl TryFrom<AbsentParams> for Absent {
    type Error = ParamError;
    fn try_from(p: AbsentParams) -> Result<Absent, ParamError> {
        check_path("absent", &p.path)?;
        if p.path == "/" {
            return Err(ParamError("absent: refusing to remove \"/\"".into()));
        }
        Ok(Absent {
            path: p.path,
            backup: p.backup,
        })
    }
}

impl Resource for Absent {
    fn id(&self) -> String {
        format!("absent {}", shown(&self.path))
    }

    fn probe(&self) -> Script {
        probe_path(&self.path, false, false, false)
    }
}

impl Typed for Absent {
    type Observed<'a> = Found<'a>;
    type Field = FsField;

    fn parse<'a>(&self, out: &'a str) -> Result<Found<'a>, ProbeError> {
        found(out)
    }

    fn compare(&self, found: &Found<'_>) -> Result<Verdict<FsField>, ProbeError> {
        let obs = &found.obs;
        let what = match (&obs.kind, &obs.meta) {
            (Kind::None, _) => {
                return Ok(Verdict::InLine(format!(
                    "{} is in line: nothing there",
                    self.id()
                )));
            }
            (Kind::File, Some(m)) => format!("a file of {} bytes", m.size),
            (kind, _) => kind.describe(),
        };
        Ok(Verdict::Remove(vec![Change::of(
            FsField::Type,
            Some(what),
            None,
        )]))
    }

    fn converge(&self, work: Work<'_, FsField>, ctx: &ApplyContext) -> Script {
        let Work::Converge(verdict) = work else {
            // As a notified handler: nothing (only a verdict says what is there).
            return Script::new();
        };
        if !matches!(verdict, Verdict::Remove(_)) {
            return Script::new();
        }
        // The walk to the folder refuses links planted on the way; then everything works on
        // `./NAME` in the folder reached: a link there is backed up and removed, not followed.
        let mut s = Script::new()
            .raw("p=")
            .arg(&self.path)
            .raw("\nd=")
            .arg(parent(&self.path).unwrap_or("/"))
            .raw("\nf=./")
            .arg(name_of(&self.path))
            .raw("\n")
            .raw(WALK)
            .raw(
                "rw_cd \"$d\" 0\ncase $? in\n  0) ;;\n  1) die \"cannot remove $p: $rw_err\" ;;\n  \
                 *) exit 0 ;;\nesac\n\
                 if [ -e \"$f\" ] || [ -L \"$f\" ]; then\n",
            );
        if self.backup {
            let dir = ctx.backup_dir();
            if dir.starts_with(&format!("{}/", self.path)) {
                // cp -a would copy the folder into itself, and rm -rf would take the backup.
                s = s.raw("die \"$p holds the backup folder; remove it with backup: false\"\n");
            } else {
                s = s.then(backup_script(&backup_path(ctx, &self.path), "cp -a", true));
            }
        }
        apply_script(s.raw("rm -rf -- \"$f\" || die \"cannot remove $p\"\nfi\n"))
    }
}

// ---------------------------------------------------------------------------------------
// lines

/// `lines`: whole lines present in, or absent from, a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    pub path: String,
    pub present: Vec<String>,
    pub absent: Vec<String>,
    pub create: bool,
    /// Applied only when the file is created.
    perms: Perms,
    pub backup: bool,
}

impl TryFrom<LinesParams> for Lines {
    type Error = ParamError;
    fn try_from(p: LinesParams) -> Result<Lines, ParamError> {
        check_path("lines", &p.path)?;
        if p.path == "/" {
            return Err(ParamError("lines: path \"/\" is the root folder".into()));
        }
        if p.present.is_empty() && p.absent.is_empty() {
            return Err(ParamError(
                "lines: give `present` or `absent` lines (or both)".into(),
            ));
        }
        for line in p.present.iter().chain(&p.absent) {
            if line.contains('\n') {
                return Err(ParamError(format!(
                    "lines: {line:?} holds a newline; give each line as its own list item"
                )));
            }
        }
        if let Some(both) = p.present.iter().find(|l| p.absent.contains(l)) {
            return Err(ParamError(format!(
                "lines: {both:?} is in both `present` and `absent`"
            )));
        }
        Ok(Lines {
            perms: Perms::from_params("lines", p.owner, p.group, &p.mode)?,
            path: p.path,
            present: p.present,
            absent: p.absent,
            create: p.create,
            backup: p.backup,
        })
    }
}

/// The text after removing `absent` lines and appending missing `present` ones (with a final
/// newline), or `None` when nothing changes. Every other line stays, in order.
pub fn edit_lines(old: &str, present: &[String], absent: &[String]) -> Option<String> {
    let mut lines: Vec<&str> = if old.is_empty() {
        Vec::new()
    } else {
        old.strip_suffix('\n').unwrap_or(old).split('\n').collect()
    };
    let before = lines.len();
    lines.retain(|l| !absent.iter().any(|a| a == l));
    let mut changed = lines.len() != before;
    for p in present {
        if !lines.contains(&p.as_str()) {
            lines.push(p);
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    Some(text)
}

impl Lines {
    fn in_line(&self, detail: &str) -> Verdict<FsField> {
        Verdict::InLine(format!("{} is in line: {detail}", self.id()))
    }
}

impl Resource for Lines {
    fn plain_fields(&self) -> &'static [&'static str] {
        &["type", "owner", "group", "mode"]
    }

    /// Mode 0600 or stricter: a secrets file.
    fn sensitive(&self) -> bool {
        self.perms.mode.is_some_and(|m| m & 0o077 == 0)
    }

    fn fs_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn id(&self) -> String {
        format!("lines {}", shown(&self.path))
    }

    fn probe(&self) -> Script {
        probe_path(&self.path, false, true, true)
    }

    /// Permissions are applied only when the file is created.
    fn probed_after(&self, probe_output: &str, verdict: &Verdict) -> Option<String> {
        let new = verdict.changes().iter().find(|c| c.field == FsField::Content.text())?;
        let keep = Perms::default();
        let perms = if matches!(verdict, Verdict::Create(_)) {
            &self.perms
        } else {
            &keep
        };
        super::after::file_probe_after(probe_output, new.after.as_deref()?.as_bytes(), perms, 0o644)
    }
}

impl Typed for Lines {
    type Observed<'a> = Found<'a>;
    type Field = FsField;

    fn parse<'a>(&self, out: &'a str) -> Result<Found<'a>, ProbeError> {
        found(out)
    }

    fn compare(&self, found: &Found<'_>) -> Result<Verdict<FsField>, ProbeError> {
        let (obs, probe_output) = (&found.obs, found.out);
        let refuse = |why: String| Err(ProbeError::new(why, probe_output));
        match (&obs.kind, &obs.content) {
            (Kind::None, _) if !self.create => {
                Ok(self.in_line("the file does not exist and create is false"))
            }
            (Kind::None, _) => match edit_lines("", &self.present, &self.absent) {
                None => Ok(self.in_line("the file does not exist and no line must be present")),
                Some(text) => {
                    let mut changes = vec![Change::of(FsField::Content, None, Some(text))];
                    changes.extend(self.perms.changes(None, Some(0o644)));
                    Ok(Verdict::Create(changes))
                }
            },
            (Kind::File, Some(Content::Bytes(bytes))) => {
                let Ok(old) = std::str::from_utf8(bytes) else {
                    return refuse(format!(
                        "{} is not UTF-8 text; lines edits text files only",
                        shown(&self.path)
                    ));
                };
                match edit_lines(old, &self.present, &self.absent) {
                    None => Ok(self.in_line(&format!(
                        "{} present and {} absent lines",
                        self.present.len(),
                        self.absent.len()
                    ))),
                    Some(new) => Ok(Verdict::Modify(vec![Change::of(
                        FsField::Content,
                        Some(old.to_string()),
                        Some(new),
                    )])),
                }
            }
            (Kind::File, Some(Content::Large { .. })) => refuse(format!(
                "{} is larger than {MAX_CONTENT} bytes; lines edits smaller files only",
                shown(&self.path)
            )),
            (Kind::File, None) => refuse("no content for a file".to_string()),
            (kind, _) => refuse(format!(
                "{} is {}, not a regular file; lines edits regular files only",
                shown(&self.path),
                kind.describe()
            )),
        }
    }

    fn converge(&self, work: Work<'_, FsField>, ctx: &ApplyContext) -> Script {
        let verdict = match work {
            Work::Converge(v) => v,
            // As a notified handler: nothing (the edit is made on the probed text).
            Work::Notified => return Script::new(),
        };
        let (changes, create) = match verdict {
            Verdict::Create(c) => (c, true),
            Verdict::Modify(c) => (c, false),
            Verdict::InLine(_) | Verdict::Remove(_) => return Script::new(),
        };
        let Some(content) = changes.iter().find(|c| c.field == FsField::Content) else {
            return Script::new();
        };
        let new = content.after.as_deref().unwrap_or("");
        // The edit was made on the probed text: if the file changed since, stop; if it
        // already holds the result (a rerun), there is nothing left to do.
        let check = Script::new()
            .raw("if [ -e \"$f\" ] || [ -L \"$f\" ]; then\n")
            .raw("  h=$(sha1sum <\"$f\" | cut -d ' ' -f 1)\n  if [ \"$h\" = ")
            .arg(&sha1_hex(new.as_bytes()))
            .raw(" ]; then exit 0; fi\n");
        let check = match &content.before {
            Some(old) => check
                .raw("  [ \"$h\" = ")
                .arg(&sha1_hex(old.as_bytes()))
                .raw(" ] || die \"$p changed since it was probed; run again\"\nfi\n"),
            None => check.raw("  die \"$p appeared since it was probed; run again\"\nfi\n"),
        };
        let keep = Perms::default();
        apply_script(
            Write {
                path: &self.path,
                content: new.as_bytes(),
                perms: if create { &self.perms } else { &keep },
                new_mode: 0o644,
                backup: self.backup.then(|| backup_path(ctx, &self.path)),
                check,
                make_folder: false,
                replace_link: true,
            }
            .script(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{b64, converge_one, run_local};
    use crate::transport::local::LocalSession;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn build(info: &TypeInfo, v: Value) -> Box<dyn Resource> {
        (info.build)(v).unwrap()
    }

    fn build_err(info: &TypeInfo, v: Value) -> String {
        (info.build)(v).unwrap_err().to_string()
    }

    fn motd() -> Box<dyn Resource> {
        build(
            &FILE,
            json!({"path": "/etc/motd", "content": "hello\n", "owner": "root", "mode": "0644"}),
        )
    }

    // ---- parameters ----

    #[test]
    fn params_list_every_key_the_types_accept() {
        for (info, v) in [
            (
                &FILE,
                json!({"path": "/a", "content": "", "owner": "root", "group": "root",
                       "mode": "644", "backup": false}),
            ),
            (
                &DIRECTORY,
                json!({"path": "/a", "owner": "0", "group": "adm", "mode": "0750"}),
            ),
            (&ABSENT, json!({"path": "/a", "backup": false})),
            (
                &LINES,
                json!({"path": "/a", "present": ["x"], "absent": ["y"], "create": false,
                       "owner": "root", "group": "root", "mode": "0600", "backup": true}),
            ),
        ] {
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            assert_eq!(keys, info.params, "{}", info.name);
            build(info, v);
        }
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        let cases = [
            (
                &FILE,
                json!({"path": "etc/motd", "content": ""}),
                "file: path \"etc/motd\" is not absolute (it must start with /)",
            ),
            (
                &FILE,
                json!({"path": "/etc/../motd", "content": ""}),
                "file: path \"/etc/../motd\" contains a . or .. part; write the plain path",
            ),
            (
                &FILE,
                json!({"path": "/etc/motd", "content": "", "mode": 644}),
                "file: mode 644 is a number; write it as a quoted string of octal digits, \
                 e.g. mode: \"0644\", so that YAML cannot read it as decimal",
            ),
            (
                &DIRECTORY,
                json!({"path": "/x", "mode": "0985"}),
                "directory: mode \"0985\" is not an octal mode; write 3 or 4 digits 0-7, e.g. \"0644\"",
            ),
            (
                &DIRECTORY,
                json!({"path": "/x/", "owner": "root"}),
                "directory: path \"/x/\" ends with /; write it without",
            ),
            (
                &FILE,
                json!({"path": "/x", "content": "", "owner": "-R"}),
                "file: owner \"-R\" is not a user or group name (no spaces, `:` or leading `-`)",
            ),
            (
                &ABSENT,
                json!({"path": "/"}),
                "absent: refusing to remove \"/\"",
            ),
            (
                &LINES,
                json!({"path": "/x", "present": ["a\nb"]}),
                "lines: \"a\\nb\" holds a newline; give each line as its own list item",
            ),
            (
                &LINES,
                json!({"path": "/x", "present": ["a"], "absent": ["a"]}),
                "lines: \"a\" is in both `present` and `absent`",
            ),
            (
                &LINES,
                json!({"path": "/x"}),
                "lines: give `present` or `absent` lines (or both)",
            ),
        ];
        for (info, v, want) in cases {
            assert_eq!(build_err(info, v), want);
        }
        assert!(build_err(&FILE, json!({"path": "/x"})).contains("missing field `content`"));
        assert!(
            build_err(&FILE, json!({"path": "/x", "content": "", "conent": 1}))
                .contains("unknown field `conent`")
        );
    }

    // ---- diffs on recorded probe output ----

    #[test]
    fn file_in_line() {
        let out = "kind file\nstat root 0 root 0 644 6\ncontent\naGVsbG8K\nend\n";
        assert_eq!(
            motd().diff(out).unwrap(),
            Verdict::InLine("file /etc/motd is in line".into())
        );
    }

    #[test]
    fn file_missing_is_created_with_its_content_and_mode() {
        assert_eq!(
            motd().diff("kind none\n").unwrap(),
            Verdict::Create(vec![
                Change::new("content", None, Some("hello\n".into())),
                Change::new("owner", None, Some("root".into())),
                Change::new("mode", None, Some("0644".into())),
            ])
        );
    }

    #[test]
    fn file_content_owner_and_mode_drift_with_the_old_text() {
        // "node_modules/\n.env\n", owned by uid 1000 without a name, mode 0666.
        let out = "kind file\nstat UNKNOWN 1000 users 100 666 19\ncontent\n\
                   bm9kZV9tb2R1bGVzLwouZW52Cg==\nend\n";
        let v = motd().diff(out).unwrap();
        assert_eq!(
            v,
            Verdict::Modify(vec![
                Change::new(
                    "content",
                    Some("node_modules/\n.env\n".into()),
                    Some("hello\n".into())
                ),
                Change::new("owner", Some("1000".into()), Some("root".into())),
                Change::new("mode", Some("0666".into()), Some("0644".into())),
            ])
        );
        assert!(v.changes()[0].is_text());
    }

    #[test]
    fn owner_given_as_a_number_matches_the_uid() {
        let f = build(
            &FILE,
            json!({"path": "/etc/motd", "content": "hello\n", "owner": "0", "group": "0"}),
        );
        let out = "kind file\nstat root 0 root 0 600 6\ncontent\naGVsbG8K\nend\n";
        assert!(f.diff(out).unwrap().is_in_line());
    }

    #[test]
    fn mode_only_drift() {
        let out = "kind file\nstat root 0 root 0 4644 6\ncontent\naGVsbG8K\nend\n";
        assert_eq!(
            motd().diff(out).unwrap(),
            Verdict::Modify(vec![Change::new(
                "mode",
                Some("4644".into()),
                Some("0644".into())
            )])
        );
    }

    #[test]
    fn large_files_compare_by_hash() {
        let f = build(&FILE, json!({"path": "/big", "content": ""}));
        let same = "kind file\nstat root 0 root 0 644 2000000\n\
                    sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709\n";
        assert!(f.diff(same).unwrap().is_in_line());
        let other = "kind file\nstat root 0 root 0 644 2000000\n\
                     sha1 0000000000000000000000000000000000000000\n";
        assert_eq!(
            f.diff(other).unwrap(),
            Verdict::Modify(vec![Change::new(
                "content",
                Some("<2000000 bytes, sha1 0000000000000000000000000000000000000000>".into()),
                Some(String::new())
            )])
        );
    }

    #[test]
    fn symlink_is_replaced_by_a_file() {
        // Target "/usr/lib/motd\n".
        let out = "kind link\ntarget L3Vzci9saWIvbW90ZAo=\n";
        assert_eq!(
            motd().diff(out).unwrap().changes()[0],
            Change::new(
                "type",
                Some("a symlink to /usr/lib/motd".into()),
                Some("a file".into())
            )
        );
    }

    #[test]
    fn a_folder_where_a_file_should_be_is_an_error() {
        let err = motd()
            .diff("kind dir\nstat root 0 root 0 755 4096\n")
            .unwrap_err();
        assert_eq!(
            err.message,
            "/etc/motd is a folder, not a regular file; a file step does not replace it \
             (add an absent step before this one)"
        );
    }

    #[test]
    fn junk_and_garbled_output_is_a_probe_error() {
        for (out, want) in [
            ("", "the probe printed nothing"),
            (
                "Welcome to Ubuntu\nkind file\n",
                "expected a `kind` line first, found \"Welcome to Ubuntu\"",
            ),
            (
                "kind file\nstat root 0 root\ncontent\naGVsbG8K\nend\n",
                "expected `stat OWNER UID GROUP GID MODE SIZE`, found \"stat root 0 root\"",
            ),
            (
                "kind file\nstat root 0 root 0 644 6\ncontent\naGVsbG8K\n",
                "the content has no `end` line (the file could not be read whole)",
            ),
            (
                "kind file\nstat root 0 root 0 644 6\ncontent\n#not base64#\nend\n",
                "the content is not base64: Invalid symbol 35, offset 0.",
            ),
            (
                "kind file\ncontent\naGVsbG8K\nend\n",
                "no `stat` line (stat failed?)",
            ),
            (
                "kind none\nstat root 0 root 0 644 6\n",
                "unexpected line \"stat root 0 root 0 644 6\"",
            ),
            (
                "kind file\nstat root 0 root 0 644 6\ncontent\naGVsbG8K\nend\ngarbage\n",
                "unexpected line \"garbage\"",
            ),
            (
                "kind file\nstat root 0 root 0 644 6\n",
                "no content for a file",
            ),
        ] {
            let err = motd().diff(out).unwrap_err();
            assert_eq!(err.message, want, "{out:?}");
            assert!(err.to_string().contains(out.trim_end()));
        }
    }

    #[test]
    fn directory_diffs() {
        let d = build(&DIRECTORY, json!({"path": "/srv/agent", "mode": "0750"}));
        assert_eq!(
            d.diff("kind none\n").unwrap(),
            Verdict::Create(vec![
                Change::new("type", None, Some("a folder".into())),
                Change::new("mode", None, Some("0750".into())),
            ])
        );
        assert_eq!(
            d.diff("kind dir\nstat root 0 root 0 750 4096\n").unwrap(),
            Verdict::InLine("directory /srv/agent is in line".into())
        );
        assert_eq!(
            d.diff("kind dir\nstat root 0 root 0 755 4096\n").unwrap(),
            Verdict::Modify(vec![Change::new(
                "mode",
                Some("0755".into()),
                Some("0750".into())
            )])
        );
        let err = d.diff("kind file\nstat root 0 root 0 644 3\n").unwrap_err();
        assert!(
            err.message
                .starts_with("/srv/agent is a file, not a folder")
        );
    }

    #[test]
    fn absent_diffs() {
        let a = build(&ABSENT, json!({"path": "/etc/cron.d/evil"}));
        assert_eq!(
            a.diff("kind none\n").unwrap(),
            Verdict::InLine("absent /etc/cron.d/evil is in line: nothing there".into())
        );
        assert_eq!(
            a.diff("kind file\nstat root 0 root 0 644 12\n").unwrap(),
            Verdict::Remove(vec![Change::new(
                "type",
                Some("a file of 12 bytes".into()),
                None
            )])
        );
        assert_eq!(
            a.diff("kind dir\nstat root 0 root 0 755 4096\n")
                .unwrap()
                .action(),
            "remove"
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn edit_lines_keeps_other_lines_in_order() {
        let p = strings(&[".env", "*.key"]);
        let a = strings(&["secrets.txt"]);
        assert_eq!(
            edit_lines("target/\nsecrets.txt\n.env\n# end", &p, &a).as_deref(),
            Some("target/\n.env\n# end\n*.key\n")
        );
        assert_eq!(edit_lines("", &p, &a).as_deref(), Some(".env\n*.key\n"));
        assert_eq!(edit_lines("*.key\n\n.env\n", &p, &a), None);
        // No final newline and nothing to do: left as it is.
        assert_eq!(edit_lines("*.key\n.env", &p, &a), None);
        // Only a whole, exact line matches.
        assert_eq!(
            edit_lines(" .env\n.env \n*.key\r\nsecrets.txt.bak\n", &p, &a).as_deref(),
            Some(" .env\n.env \n*.key\r\nsecrets.txt.bak\n.env\n*.key\n")
        );
        // Removing the last line leaves an empty file.
        assert_eq!(edit_lines("secrets.txt\n", &[], &a).as_deref(), Some(""));
        // Blank lines are lines.
        assert_eq!(
            edit_lines("a\n\n\nb\n", &strings(&["c"]), &[]).as_deref(),
            Some("a\n\n\nb\nc\n")
        );
    }

    #[test]
    fn lines_diffs() {
        let l = build(
            &LINES,
            json!({"path": "/srv/agent/.gitignore", "present": [".env"], "absent": ["*"],
                   "mode": "0600"}),
        );
        assert_eq!(
            l.diff("kind none\n").unwrap(),
            Verdict::Create(vec![
                Change::new("content", None, Some(".env\n".into())),
                Change::new("mode", None, Some("0600".into())),
            ])
        );
        // "node_modules/\n.env\n": mode is not managed on an existing file.
        let out =
            "kind file\nstat root 0 root 0 644 19\ncontent\nbm9kZV9tb2R1bGVzLwouZW52Cg==\nend\n";
        assert_eq!(
            l.diff(out).unwrap(),
            Verdict::InLine(
                "lines /srv/agent/.gitignore is in line: 1 present and 1 absent lines".into()
            )
        );
        let no_create = build(
            &LINES,
            json!({"path": "/x", "present": ["a"], "create": false}),
        );
        assert!(no_create.diff("kind none\n").unwrap().is_in_line());
        let big = "kind file\nstat root 0 root 0 644 2000000\n\
                   sha1 0000000000000000000000000000000000000000\n";
        assert!(
            l.diff(big)
                .unwrap_err()
                .message
                .contains("is larger than 1048576 bytes")
        );
        let binary = "kind file\nstat root 0 root 0 644 2\ncontent\n//4=\nend\n";
        assert!(l.diff(binary).unwrap_err().message.contains("not UTF-8"));
    }

    #[test]
    fn content_travels_as_a_payload_never_as_shell_text() {
        let f = build(
            &FILE,
            json!({"path": "/etc/motd", "content": "x'; rm -rf / #$(id)\n"}),
        );
        let v = f.diff("kind none\n").unwrap();
        let script = f.apply(&v, &ApplyContext::new("r1"));
        let shown = script.to_string();
        assert!(!shown.contains("rm -rf"), "{shown}");
        assert!(shown.contains("<<payload: 20 bytes>>"), "{shown}");
        assert!(
            shown.contains("'/var/lib/rampart/backups/r1/etc/motd'"),
            "{shown}"
        );
    }

    // ---- real runs on this machine, in a temporary folder ----

    fn ctx(dir: &Path) -> ApplyContext {
        let mut ctx = ApplyContext::new("run1");
        ctx.backup_root = format!("{}/backups", dir.display());
        ctx
    }

    fn backup_of(dir: &Path, path: &Path) -> std::path::PathBuf {
        Path::new(&format!("{}/backups/run1{}", dir.display(), path.display())).to_path_buf()
    }

    async fn converge(res: &dyn Resource, ctx: &ApplyContext) -> (Verdict, Verdict) {
        let (before, after) = converge_one(&LocalSession::default(), res, ctx)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", res.id()));
        assert!(
            after.is_in_line(),
            "{} is not in line after apply: {after:?}",
            res.id()
        );
        (before, after)
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn file_create_rerun_modify_and_mode_only() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("motd");
        let file = |content: &str, mode: &str| {
            build(
                &FILE,
                json!({"path": s(&path), "content": content, "mode": mode}),
            )
        };

        let (before, _) = converge(&*file("one\n", "0640"), &ctx).await;
        assert_eq!(before.action(), "create");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        assert_eq!(mode_of(&path), 0o640);
        assert!(!backup_of(tmp.path(), &path).exists());

        let (before, _) = converge(&*file("one\n", "0640"), &ctx).await;
        assert!(before.is_in_line(), "{before:?}");

        let (before, _) = converge(&*file("two\n", "0640"), &ctx).await;
        assert_eq!(
            before,
            Verdict::Modify(vec![Change::new(
                "content",
                Some("one\n".into()),
                Some("two\n".into())
            )])
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(mode_of(&path), 0o640, "mode kept through the rewrite");
        let backup = backup_of(tmp.path(), &path);
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one\n");
        assert_eq!(mode_of(&backup), 0o640, "cp -p keeps the mode");
        assert_eq!(mode_of(backup.parent().unwrap()), 0o700);
        assert_eq!(mode_of(&tmp.path().join("backups/run1")), 0o700);

        // A second change in the same run keeps the first backup (the state before the run).
        converge(&*file("three\n", "0640"), &ctx).await;
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one\n");

        let inode = std::fs::metadata(&path).unwrap().ino();
        let (before, _) = converge(&*file("three\n", "600"), &ctx).await;
        assert_eq!(
            before,
            Verdict::Modify(vec![Change::new(
                "mode",
                Some("0640".into()),
                Some("0600".into())
            )])
        );
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "changed in place"
        );

        // Nothing but the file is left in its folder (no temporary files).
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn large_files_are_probed_by_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("big");
        let big = "0123456789abcde\n".repeat(70_000); // 1.12 MB
        let f = build(&FILE, json!({"path": s(&path), "content": big}));
        assert_eq!(converge(&*f, &ctx).await.0.action(), "create");
        assert!(converge(&*f, &ctx).await.0.is_in_line());
        let small = build(&FILE, json!({"path": s(&path), "content": "small\n"}));
        let (before, _) = converge(&*small, &ctx).await;
        assert_eq!(
            before.changes()[0].before.as_deref(),
            Some(format!("<1120000 bytes, sha1 {}>", sha1_hex(big.as_bytes())).as_str())
        );
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &path)).unwrap(),
            big
        );
    }

    #[tokio::test]
    async fn file_without_a_mode_keeps_the_old_one_and_new_files_get_0644() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("conf");
        let f = |c: &str| {
            build(
                &FILE,
                json!({"path": s(&path), "content": c, "backup": false}),
            )
        };
        converge(&*f("a"), &ctx).await;
        assert_eq!(mode_of(&path), 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o751)).unwrap();
        converge(&*f("b"), &ctx).await;
        assert_eq!(mode_of(&path), 0o751);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        assert!(!tmp.path().join("backups").exists(), "backup: false");
    }

    #[tokio::test]
    async fn file_owner_and_group_are_set() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("owned");
        let (uid, gid) = (
            std::fs::metadata(tmp.path()).unwrap().uid(),
            std::fs::metadata(tmp.path()).unwrap().gid(),
        );
        // Our own uid and gid, by number: works as root and as anyone else.
        let f = build(
            &FILE,
            json!({"path": s(&path), "content": "x\n", "owner": uid.to_string(),
                   "group": gid.to_string(), "mode": "0600"}),
        );
        let (before, _) = converge(&*f, &ctx).await;
        assert_eq!(before.changes().len(), 4, "{before:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), uid);
    }

    #[tokio::test]
    async fn hostile_paths_and_contents_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let dir = tmp.path().join("it's $(id) a\nb");
        let path = dir.join("x 'y' `touch pwned` \"z\"\n");
        let content = "'; rm -rf / #\n$(touch pwned)\n@@RAMPART_PAYLOAD@@\n\u{0}\n";

        let d = build(&DIRECTORY, json!({"path": s(&dir), "mode": "0750"}));
        converge(&*d, &ctx).await;
        let f = build(&FILE, json!({"path": s(&path), "content": content}));
        let (before, _) = converge(&*f, &ctx).await;
        assert_eq!(before.action(), "create");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        let f2 = build(&FILE, json!({"path": s(&path), "content": "new"}));
        converge(&*f2, &ctx).await;
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &path)).unwrap(),
            content
        );
        let l = build(
            &LINES,
            json!({"path": s(&path), "present": ["$(touch pwned)", "it's"]}),
        );
        converge(&*l, &ctx).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "new\n$(touch pwned)\nit's\n"
        );
        // Removing the folder backs it up too, merged with the backups of files inside it
        // made earlier in this run, which win (they hold the state before the run).
        std::fs::write(dir.join("untouched"), "u").unwrap();
        let a = build(&ABSENT, json!({"path": s(&dir)}));
        converge(&*a, &ctx).await;
        assert!(!dir.exists());
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &path)).unwrap(),
            content
        );
        let dir_backup = backup_of(tmp.path(), &dir);
        assert_eq!(
            std::fs::read_to_string(dir_backup.join("untouched")).unwrap(),
            "u"
        );
        assert_eq!(
            mode_of(&dir_backup),
            0o750,
            "the folder's own mode, not 0700"
        );
        let names = std::fs::read_dir(dir_backup.parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(names, 1, "no temporary folder left in the backups");
        for place in [tmp.path().to_path_buf(), std::env::current_dir().unwrap()] {
            assert!(!place.join("pwned").exists(), "a value ran as a command");
        }
    }

    #[tokio::test]
    async fn missing_folder_is_an_error_that_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("no/such/file");
        let f = build(&FILE, json!({"path": s(&path), "content": "x"}));
        let err = converge_one(&LocalSession::default(), &*f, &ctx(tmp.path()))
            .await
            .unwrap_err();
        let want = format!(
            "rampart: cannot write {}: its folder {} does not exist",
            path.display(),
            path.parent().unwrap().display()
        );
        assert!(err.contains(&want), "{err}");
        assert!(!tmp.path().join("no").exists());
    }

    #[tokio::test]
    async fn symlink_at_a_file_path_is_replaced_and_backed_up() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let target = tmp.path().join("target");
        std::fs::write(&target, "keep me\n").unwrap();
        let path = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let f = build(&FILE, json!({"path": s(&path), "content": "mine\n"}));
        let (before, _) = converge(&*f, &ctx).await;
        assert_eq!(before.changes()[0].field, "type");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        let backup = backup_of(tmp.path(), &path);
        assert_eq!(std::fs::read_link(backup).unwrap(), target);
    }

    #[tokio::test]
    async fn directory_with_parents_then_mode_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("a/b/c");
        let d = |mode: &str| build(&DIRECTORY, json!({"path": s(&path), "mode": mode}));
        let (before, _) = converge(&*d("0750"), &ctx).await;
        assert_eq!(before.action(), "create");
        assert_eq!(mode_of(&path), 0o750);
        assert_eq!(mode_of(&tmp.path().join("a/b")), 0o755);
        assert!(converge(&*d("0750"), &ctx).await.0.is_in_line());
        let (before, _) = converge(&*d("0700"), &ctx).await;
        assert_eq!(before.action(), "modify");
        assert_eq!(mode_of(&path), 0o700);
        // Without a mode, a new folder gets 0755 and an existing one keeps its own.
        let plain = build(&DIRECTORY, json!({"path": s(&tmp.path().join("p"))}));
        converge(&*plain, &ctx).await;
        assert_eq!(mode_of(&tmp.path().join("p")), 0o755);
        let kept = build(&DIRECTORY, json!({"path": s(&path)}));
        assert!(converge(&*kept, &ctx).await.0.is_in_line());
    }

    #[tokio::test]
    async fn lines_add_and_remove_keeping_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join(".gitignore");
        std::fs::write(&path, "target/\nsecrets.txt\n# keep\n\nnode_modules/").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let l = build(
            &LINES,
            json!({"path": s(&path), "present": [".env", "node_modules/", "*.key"],
                   "absent": ["secrets.txt"], "mode": "0600"}),
        );
        let (before, _) = converge(&*l, &ctx).await;
        assert_eq!(
            before,
            Verdict::Modify(vec![Change::new(
                "content",
                Some("target/\nsecrets.txt\n# keep\n\nnode_modules/".into()),
                Some("target/\n# keep\n\nnode_modules/\n.env\n*.key\n".into())
            )])
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "target/\n# keep\n\nnode_modules/\n.env\n*.key\n"
        );
        assert_eq!(mode_of(&path), 0o664, "mode is only set when creating");
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &path)).unwrap(),
            "target/\nsecrets.txt\n# keep\n\nnode_modules/"
        );
        assert!(converge(&*l, &ctx).await.0.is_in_line());

        // Created when missing, with its mode.
        let new = tmp.path().join("new");
        let l = build(
            &LINES,
            json!({"path": s(&new), "present": ["a", "b"], "mode": "0600"}),
        );
        assert_eq!(converge(&*l, &ctx).await.0.action(), "create");
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "a\nb\n");
        assert_eq!(mode_of(&new), 0o600);
    }

    #[tokio::test]
    async fn lines_apply_refuses_a_file_changed_since_the_probe() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let path = tmp.path().join("f");
        std::fs::write(&path, "a\n").unwrap();
        let l = build(&LINES, json!({"path": s(&path), "present": ["b"]}));
        let out = run_local(l.probe()).await;
        let verdict = l.diff(&String::from_utf8(out.stdout).unwrap()).unwrap();
        std::fs::write(&path, "a\nc\n").unwrap();
        let out = run_local(l.apply(&verdict, &ctx)).await;
        assert!(!out.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("changed since it was probed"),
            "{}",
            out.stderr_block()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nc\n");
        // Applied once, the same script again is a no-op, not an error.
        std::fs::write(&path, "a\n").unwrap();
        assert!(run_local(l.apply(&verdict, &ctx)).await.success());
        assert!(run_local(l.apply(&verdict, &ctx)).await.success());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
    }

    #[tokio::test]
    async fn absent_removes_files_links_and_folders_after_a_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let file = tmp.path().join("evil.conf");
        std::fs::write(&file, "bad\n").unwrap();
        let dir = tmp.path().join("evil.d");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x"), "x\n").unwrap();
        let link = tmp.path().join("evil.link");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        for p in [&link, &file, &dir] {
            let a = build(&ABSENT, json!({"path": s(p)}));
            let (before, after) = converge(&*a, &ctx).await;
            assert_eq!(before.action(), "remove");
            assert_eq!(
                after,
                Verdict::InLine(format!("absent {} is in line: nothing there", p.display()))
            );
            assert!(std::fs::symlink_metadata(p).is_err(), "{p:?} is gone");
        }
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &file)).unwrap(),
            "bad\n"
        );
        assert_eq!(
            std::fs::read_link(backup_of(tmp.path(), &link)).unwrap(),
            file
        );
        assert_eq!(
            std::fs::read_to_string(backup_of(tmp.path(), &dir).join("sub/x")).unwrap(),
            "x\n"
        );
        let a = build(&ABSENT, json!({"path": s(&file)}));
        assert!(converge(&*a, &ctx).await.0.is_in_line());
    }

    /// The uid this test process runs as (the owner of its /proc entry).
    fn my_uid() -> u32 {
        std::fs::metadata("/proc/self").unwrap().uid()
    }

    /// A folder owned by `nobody` (65534) in a root folder, standing in for the agent's home.
    /// Needs root, like rampart on a host; `None` (the test says so and passes) otherwise.
    fn agent_home(tmp: &Path) -> Option<std::path::PathBuf> {
        if my_uid() != 0 {
            eprintln!("not root: the tests of folders another account controls need root");
            return None;
        }
        let home = tmp.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
        // nobody must reach its folder through the test's private temporary folder.
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
        Some(home)
    }

    #[tokio::test]
    async fn links_planted_in_a_folder_root_does_not_control_are_refused_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let Some(home) = agent_home(tmp.path()) else {
            return;
        };
        let etc = tmp.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::os::unix::fs::symlink(&etc, home.join("logs")).unwrap();
        std::os::unix::fs::symlink(&etc, home.join("workspace")).unwrap();
        std::os::unix::fs::lchown(home.join("logs"), Some(65534), Some(65534)).unwrap();

        let d = build(
            &DIRECTORY,
            json!({"path": s(&home.join("logs")), "owner": "nobody", "mode": "0700"}),
        );
        let err = converge_one(&LocalSession::default(), &*d, &ctx)
            .await
            .unwrap_err();
        let want = format!(
            "refusing to follow {}: it is a symbolic link (to {}) in a folder that nobody \
             (uid 65534) controls",
            home.join("logs").display(),
            etc.display()
        );
        assert!(err.contains(&want), "{err}");
        // Even an apply made from a stale verdict (the swap came after the probe) refuses.
        let stale = Verdict::Modify(vec![Change::new("owner", Some("root".into()), None)]);
        let out = run_local(d.apply(&stale, &ctx)).await;
        assert!(!out.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&want),
            "{}",
            out.stderr_block()
        );

        for info in [&FILE, &LINES] {
            let path = home.join("workspace/SOUL.md");
            let r = match info.name {
                "file" => build(info, json!({"path": s(&path), "content": "x\n"})),
                _ => build(info, json!({"path": s(&path), "present": ["x"]})),
            };
            let err = converge_one(&LocalSession::default(), &*r, &ctx)
                .await
                .unwrap_err();
            assert!(
                err.contains(&format!(
                    "refusing to follow {}",
                    home.join("workspace").display()
                )),
                "{err}"
            );
            let stale = Verdict::Create(vec![Change::new("content", None, Some("x\n".into()))]);
            let out = run_local(r.apply(&stale, &ctx)).await;
            assert!(!out.success(), "{}", info.name);
        }
        let a = build(&ABSENT, json!({"path": s(&home.join("workspace/keep"))}));
        std::fs::write(etc.join("keep"), "k").unwrap();
        let stale = Verdict::Remove(vec![Change::new("type", Some("a file".into()), None)]);
        assert!(!run_local(a.apply(&stale, &ctx)).await.success());
        assert_eq!(std::fs::read_to_string(etc.join("keep")).unwrap(), "k");
        assert!(
            std::fs::read_dir(&etc).unwrap().count() == 1,
            "nothing written in etc"
        );
        assert_eq!(std::fs::metadata(&etc).unwrap().uid(), 0);
        // The link itself is what `absent` removes: backed up as a link, target untouched.
        let a = build(&ABSENT, json!({"path": s(&home.join("logs"))}));
        assert_eq!(converge(&*a, &ctx).await.0.action(), "remove");
        assert!(etc.exists());
        assert!(
            std::fs::symlink_metadata(backup_of(tmp.path(), &home.join("logs")))
                .unwrap()
                .is_symlink()
        );
    }

    #[tokio::test]
    async fn in_a_folder_another_account_controls_files_are_written_as_that_account() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        let Some(home) = agent_home(tmp.path()) else {
            return;
        };
        let path = home.join("ws/SOUL.md");
        let d = build(
            &DIRECTORY,
            json!({"path": s(&home.join("ws")), "mode": "0700"}),
        );
        converge(&*d, &ctx).await;
        assert_eq!(
            std::fs::metadata(home.join("ws")).unwrap().uid(),
            65534,
            "a new folder without an owner goes to whoever controls its folder"
        );
        let f = |c: &str| {
            build(
                &FILE,
                json!({"path": s(&path), "content": c, "owner": "nobody", "mode": "0600"}),
            )
        };
        assert_eq!(converge(&*f("one\n"), &ctx).await.0.action(), "create");
        converge(&*f("two\n"), &ctx).await;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o600));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let backup = backup_of(tmp.path(), &path);
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "one\n");
        assert_eq!(std::fs::metadata(&backup).unwrap().uid(), 65534);
        let l = build(&LINES, json!({"path": s(&path), "present": ["three"]}));
        converge(&*l, &ctx).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\nthree\n");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);

        // The probe reads a file there as that account: a hard link to a root-only file shows
        // nothing of its content.
        let secret = tmp.path().join("shadow");
        std::fs::write(&secret, "root-only-content\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(&secret, home.join("ws/h")).unwrap();
        let h = build(
            &FILE,
            json!({"path": s(&home.join("ws/h")), "content": "x"}),
        );
        let out = run_local(h.probe()).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("kind file\n"), "{text}");
        assert!(!text.contains(&b64("root-only-content\n")), "{text}");
        assert!(
            h.diff(&text).is_err(),
            "an unreadable file is no state to compare"
        );

        // root cannot keep a file of its own there, nor give a folder there to someone else.
        let rootfile = build(
            &FILE,
            json!({"path": s(&home.join("ws/root.conf")), "content": "x", "owner": "root"}),
        );
        let err = converge_one(&LocalSession::default(), &*rootfile, &ctx)
            .await
            .unwrap_err();
        assert!(
            err.contains("root cannot keep a file of someone else's there"),
            "{err}"
        );
        assert!(!home.join("ws/root.conf").exists());
        let rootdir = build(
            &DIRECTORY,
            json!({"path": s(&home.join("ws/sub")), "owner": "root"}),
        );
        let err = converge_one(&LocalSession::default(), &*rootdir, &ctx)
            .await
            .unwrap_err();
        assert!(err.contains("refusing to give"), "{err}");
        let names: Vec<_> = std::fs::read_dir(home.join("ws"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".rampart")),
            "no temporary file left: {names:?}"
        );
    }

    #[tokio::test]
    async fn absent_refuses_to_remove_the_folder_holding_the_backups() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = ctx(tmp.path());
        std::fs::create_dir_all(tmp.path().join("backups")).unwrap();
        let a = build(&ABSENT, json!({"path": s(tmp.path())}));
        let err = converge_one(&LocalSession::default(), &*a, &ctx)
            .await
            .unwrap_err();
        assert!(err.contains("holds the backup folder"), "{err}");
        assert!(tmp.path().exists());
    }
}
