//! tar: a ustar archive writer, just enough for evidence archives (regular files only).
//!
//! Written here rather than with the `tar` crate: the archive holds only regular files whose
//! names rampart builds itself, so a writer is 60 lines; reading archives (where that crate's
//! hardening matters) is never done.

use std::io::Write;

/// The longest name a ustar header holds (prefix 155 + `/` + name 100).
pub const MAX_NAME: usize = 255;

/// Splits `name` into ustar's prefix and name fields, or `None` when it does not fit.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    // The prefix ends at a `/` that leaves at most 100 bytes for the name.
    let bytes = name.as_bytes();
    (0..name.len())
        .rev()
        .filter(|&i| bytes[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&name[..i], &name[i + 1..]))
}

fn octal(field: &mut [u8], value: u64) {
    let n = field.len() - 1;
    let text = format!("{:0width$o}", value, width = n);
    field[..n].copy_from_slice(text.as_bytes());
    field[n] = 0;
}

/// Writes members one after the other; [`Writer::finish`] writes the end blocks.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer { out }
    }

    /// Appends a regular file `name` (mode 0600, owned by uid 0) holding `data`. `name` must
    /// be a relative path of at most [`MAX_NAME`] bytes that splits at a `/` (callers shorten
    /// longer ones).
    pub fn append(&mut self, name: &str, data: &[u8], mtime: u64) -> std::io::Result<()> {
        let (prefix, short) = split_name(name).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tar member name too long: {name}"),
            )
        })?;
        let mut h = [0u8; 512];
        h[..short.len()].copy_from_slice(short.as_bytes());
        octal(&mut h[100..108], 0o600);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], mtime);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is taken with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&vec![0u8; pad])
    }

    /// The two zero blocks that end an archive; returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tar_reads_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let long = format!("files/{}/{}", "d".repeat(120), "f".repeat(90));
        let mut w = Writer::new(std::fs::File::create(&path).unwrap());
        w.append("commands/ps.txt", b"hello\n", 1_700_000_000)
            .unwrap();
        w.append(&long, &[7u8; 1000], 1_700_000_000).unwrap();
        w.append("empty", b"", 0).unwrap();
        w.finish().unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            vec!["commands/ps.txt", long.as_str(), "empty"]
        );
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(x.join(&long)).unwrap(), vec![7u8; 1000]);
        assert_eq!(
            std::fs::read(x.join("commands/ps.txt")).unwrap(),
            b"hello\n"
        );
    }

    #[test]
    fn a_name_that_cannot_split_is_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.append(&"x".repeat(101), b"", 0).is_err());
        assert!(w.append(&format!("{}/y", "x".repeat(156)), b"", 0).is_err());
    }
}
