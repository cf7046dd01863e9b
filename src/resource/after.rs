//! What a file's probe (file.rs's `probe_path` with content, as `file` and `lines` use it)
//! prints once an apply has written new content there. The engine plans a later step with the
//! same probe (a second `lines` on one file) against it, so that steps on one path compose in
//! one apply: that step's edit is made on the text the earlier step leaves, and its
//! changed-since-probed guard expects that text, so a real concurrent change is still refused.

use base64::Engine as _;

use super::fsfile::{Perms, parse_stat, sha1_hex};

/// The largest file whose content the probe prints (larger ones: its sha1).
const PRINTED: usize = 1048576;

/// The probe's output after `content` is written at the path whose probe printed `before`,
/// with `perms` applied (and `new_mode` when the file is new). `None` when it cannot be told
/// (the path is not a file or absent, or a named owner or group whose id the plan cannot
/// know is given).
pub(super) fn file_probe_after(
    before: &str,
    content: &[u8],
    perms: &Perms,
    new_mode: u32,
) -> Option<String> {
    let mut lines = before.lines();
    let meta = match lines.next()? {
        "kind none" => None,
        "kind file" => Some(parse_stat(lines.next()?.strip_prefix("stat ")?)?),
        _ => return None,
    };
    // (name, id) of the owner and group after the write.
    let id = |want: &Option<String>, found: Option<(&str, u32)>| -> Option<(String, u32)> {
        match (want.as_deref(), found) {
            (None, Some((n, i))) => Some((n.to_string(), i)),
            (None, None) | (Some("root" | "0"), _) => Some(("root".into(), 0)),
            (Some(w), Some((n, i))) if w == n || w == i.to_string() => Some((n.to_string(), i)),
            (Some(_), _) => None,
        }
    };
    let (owner, uid) = id(
        &perms.owner,
        meta.as_ref().map(|m| (m.owner.as_str(), m.uid)),
    )?;
    let (group, gid) = id(
        &perms.group,
        meta.as_ref().map(|m| (m.group.as_str(), m.gid)),
    )?;
    let mode = perms
        .mode
        .or(meta.as_ref().map(|m| m.mode))
        .unwrap_or(new_mode);
    let size = content.len();
    let body = if size <= PRINTED {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        let sep = if b64.is_empty() { "" } else { "\n" };
        format!("content\n{b64}{sep}end\n")
    } else {
        format!("sha1 {}\n", sha1_hex(content))
    };
    Some(format!(
        "kind file\nstat {owner} {uid} {group} {gid} {mode:o} {size}\n{body}"
    ))
}
