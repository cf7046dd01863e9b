//! integrity: the sha256 listing of the binaries and places an attacker uses to persist, as one
//! read-only shell function. `collect` puts its output in every evidence archive
//! (`integrity.sha256`); an integrity baseline recorded at `apply` (issue 13, not built yet)
//! can run the same function and compare.
//!
//! Output: `sha256sum` lines (`HASH  PATH`), one per regular file, in the order the places
//! are listed; a path with a newline or a backslash is escaped the way `sha256sum` does.
//!
//! What it covers: sshd, sudo, su, login, passwd, node and the agent's install
//! (`/opt/rampart-agent`, `/usr/local/bin`), every systemd unit and timer (system and
//! `/etc/systemd/user`), crontabs and `/etc/cron.*`, `/etc/ld.so.preload` and the loader's
//! config, the shell rc/profile files of the system and of every user, every user's
//! `authorized_keys`, setuid/setgid files, PAM (config and modules), sudoers and the SSH
//! config. Files in a home are hashed as whoever controls the home (fsfile's `WALK` refuses a
//! link planted on the way, and `rw_as` reads as the owner), so a link the agent planted there
//! shows root nothing. Setuid files under `/home`, `/tmp`, `/var/tmp` and `/dev/shm` (folders
//! other accounts write) are listed by name only (`SETUID-IN-USER-FOLDER  PATH`): root does not
//! open a file whose name another account can swap.

/// Root-controlled places, as the `integrity` function hashes them (globs expand on the host).
pub const ROOT_PLACES: &[&str] = &[
    "/usr/sbin/sshd",
    "/usr/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/bin/login",
    "/usr/bin/passwd",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/opt/rampart-agent",
    "/etc/systemd",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/usr/local/lib/systemd",
    "/run/systemd/system",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/bash.bashrc",
    "/etc/environment",
    "/etc/rc.local",
    "/etc/pam.d",
    "/etc/security",
    "/lib/x86_64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/x86_64-linux-gnu/security",
    "/usr/lib/aarch64-linux-gnu/security",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
];

/// Where cron jobs live (root-controlled); hashed here, archived whole by `collect`.
pub const CRON_PLACES: &[&str] = &[
    "/etc/crontab",
    "/etc/cron.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/etc/cron.yearly",
    "/etc/anacrontab",
    "/var/spool/cron",
];

/// Files in every home, hashed as the home's owner.
pub const HOME_FILES: &[&str] = &[
    ".ssh/authorized_keys",
    ".ssh/authorized_keys2",
    ".ssh/rc",
    ".bashrc",
    ".profile",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".zshrc",
    ".zprofile",
    ".pam_environment",
];

/// POSIX sh defining `integrity` (prints the listing). Needs fsfile's `WALK` defined before it.
/// Reads only.
pub fn functions() -> String {
    let root: Vec<&str> = ROOT_PLACES.iter().chain(CRON_PLACES).copied().collect();
    functions_over(&root, "/", HOME_FILES)
}

/// [`functions`] over other places (unit tests keep them small): `root` hashed as root,
/// setuid files searched from `setuid_from`, `home` in every home.
fn functions_over(root: &[&str], setuid_from: &str, home: &[&str]) -> String {
    let quote = |items: &[&str]| {
        items
            .iter()
            .map(|p| crate::remote::quote(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"integrity() {{
  for p in {root} $(command -v node openclaw 2>/dev/null); do
    [ -e "$p" ] || continue
    find "$p" -xdev -type f -print0 2>/dev/null
  done | xargs -0 -r sha256sum -- 2>/dev/null
  find {setuid} -xdev \( -path /home -o -path /tmp -o -path /var/tmp -o -path /dev/shm -o -path /proc \) -prune \
    -o -type f \( -perm -4000 -o -perm -2000 \) -print0 2>/dev/null | xargs -0 -r sha256sum -- 2>/dev/null
  for d in /home /tmp /var/tmp /dev/shm; do
    [ -d "$d" ] && find "$d" -xdev -type f \( -perm -4000 -o -perm -2000 \) -printf 'SETUID-IN-USER-FOLDER  %p\n' 2>/dev/null
  done
  getent passwd | cut -d: -f6 | sort -u | while IFS= read -r h; do
    case $h in /?*) ;; *) continue ;; esac
    [ -d "$h" ] || continue
    ( rw_cd "$h" 0 || exit 0
      rw_as sh -c 't=; command -v timeout >/dev/null 2>&1 && t="timeout 30"; B=$1; shift; for f; do [ -f "$f" ] && [ ! -L "$f" ] && printf "%s  %s/%s\n" "$($t sha256sum -- "$f" </dev/null | cut -c1-64)" "$B" "$f"; done' rampart-integrity "$h" {home} </dev/null )
  done
}}
"#,
        root = quote(root),
        setuid = quote(&[setuid_from]),
        home = quote(home),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Script;
    use crate::transport::Session;
    use crate::transport::local::LocalSession;

    /// Runs on this machine as whoever runs the tests: the listing names the system's rc
    /// files with their real hashes, and the script is valid sh.
    #[tokio::test]
    async fn the_listing_hashes_what_sha256sum_hashes() {
        let script = Script::new()
            .raw(crate::resource::fsfile::WALK)
            .raw(&functions_over(
                &["/etc/profile", "/etc/ssh"],
                "/etc",
                HOME_FILES,
            ))
            .raw("integrity\n")
            .render()
            .unwrap();
        let out = LocalSession::default()
            .exec(
                &crate::remote::exec_command(false),
                script.as_bytes(),
                std::time::Duration::from_secs(120),
            )
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr_block());
        let text = String::from_utf8_lossy(&out.stdout);
        let want = std::fs::read("/etc/profile").unwrap();
        use sha2::Digest as _;
        let hash = hex(&sha2::Sha256::digest(&want));
        assert!(
            text.lines().any(|l| l == format!("{hash}  /etc/profile")),
            "{}",
            crate::untrusted::truncate(&text, 2000)
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
