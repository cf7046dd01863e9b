//! localfs: files rampart writes on the operator's machine (reports, the fact cache, the
//! schedule's units), always whole, and readable by their owner only unless said otherwise:
//! a report can hold what a host holds (findings, evidence), so it is no one else's to read.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `data` to a temporary file beside `path` (mode 0600), syncs it, then renames it
/// over `path` (so an older, more open file is replaced, not kept): a reader (node_exporter's
/// textfile collector, systemd, cron) sees the old file or the new one, never half of one.
/// The temporary name ends in `.tmp`, so a collector that reads `*.prom` never picks it up.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    PendingWrite::create(path)?.commit(data)
}

/// [`write_atomically`] with another mode, for files that other programs must read and that
/// hold nothing secret (the schedule's systemd units and cron file).
pub fn write_atomically_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    PendingWrite::create_mode(path, mode)?.commit(data)
}

/// Makes `dir` and its missing parents, each new one mode 0700 (the fact cache).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A whole-file write opened now and finished later: [`PendingWrite::create`] makes the
/// temporary file in the target's folder, so a folder that is missing or not writable, or a
/// target that is a folder, is found before any work; [`PendingWrite::commit`] fills it and
/// renames it over the target. Dropped without a commit, it removes its temporary file.
#[derive(Debug)]
pub struct PendingWrite {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
}

impl PendingWrite {
    /// A write of a file only its owner may read (mode 0600).
    pub fn create(path: &Path) -> std::io::Result<PendingWrite> {
        PendingWrite::create_mode(path, 0o600)
    }

    /// A write of a file with this exact mode, whatever the umask.
    pub fn create_mode(path: &Path, mode: u32) -> std::io::Result<PendingWrite> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let dir = folder(path);
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file name"))?
            .to_string_lossy();
        if path.is_dir() {
            return Err(std::io::Error::other("it is a folder"));
        }
        let tmp = dir.join(format!(
            ".{name}.rampart-{}-{}.tmp",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode is exact, whatever the umask.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        Ok(PendingWrite {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// The file this write replaces.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data`, syncs, and renames the temporary file over the target.
    pub fn commit(mut self, data: &[u8]) -> std::io::Result<()> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("committed"))?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        std::fs::File::open(folder(&self.path))?.sync_all()
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The folder a file is in (`.` for a bare name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
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

    #[test]
    fn a_pending_write_finds_a_bad_target_first_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PendingWrite::create(dir.path()).is_err(), "a folder");
        assert!(PendingWrite::create(&dir.path().join("none/x.prom")).is_err());
        let a = PendingWrite::create(&dir.path().join("a.prom")).unwrap();
        let b = PendingWrite::create(&dir.path().join("a.prom")).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "two temporaries"
        );
        drop(b);
        a.commit(b"a\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.prom")]);
    }
}
