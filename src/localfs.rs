//! localfs: files rampart writes on the operator's machine (reports, the fact cache, the
//! schedule's units), always whole, and readable by their owner only unless said otherwise:
//! a report can hold what a host holds (findings, evidence), so it is no one else's to read.

use std::io::Write;
use std::path::Path;

/// Writes `data` to a temporary file beside `path` (mode 0600), syncs it, then renames it
/// over `path` (so an older, more open file is replaced, not kept): a reader (node_exporter's textfile collector, systemd, cron)
/// sees the old file or the new one, never half of one. The temporary name ends in `.tmp`,
/// so a collector that reads `*.prom` never picks it up.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomically_mode(path, data, 0o600)
}

/// [`write_atomically`] with another mode (before the umask), for files that other programs
/// must read and that hold nothing secret (the schedule's systemd units and cron file).
pub fn write_atomically_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.rampart-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode is exact, whatever the umask.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes `dir` and its missing parents, each new one mode 0700 (the fact cache).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rampart.prom");
        std::fs::write(&path, "old\n").unwrap();
        write_atomically(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rampart.prom")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a report is its owner's only");
        assert!(write_atomically(&dir.path().join("no/such/dir/x"), b"x").is_err());
    }
}
