#!/usr/bin/env bash
# Builds the Debian bookworm root file system that every test host starts from, once per
# machine (cached under $CACHE, keyed by a hash of this file). Containers boot it through an
# overlay; the VM tier makes its disk from it (vm.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=systemd-sysv,dbus,openssh-server,sudo,nftables,wireguard-tools,wireguard-go,auditd,iproute2,iputils-ping,procps,kmod,python3,python3-apt,linux-image-amd64,less,ca-certificates

# The local package repository's packages, NOT installed in the image: unattended-upgrades (the
# baseline playbook installs it) and hello (tiny, for install/remove tests). Their missing
# dependencies come along. REPO_REINSTALL: installed in the image, also in the repository so
# that a test that removes one can put it back.
REPO_PACKAGES="unattended-upgrades hello"
REPO_REINSTALL="less"

# Hosts have no route out, so apt on a host sees only a repository inside the image:
# /srv/rampart-repo, a flat repository (`deb [trusted=yes] file:/srv/rampart-repo ./`) of the
# .debs above, fetched while the image is built (through the mirror debootstrap used), with a
# Packages index made by dpkg-deb (in every image: no extra tool). The mirror's source is then
# removed and the lists refreshed, so that `apt-get update` on a host reads only local files.
build_local_repo() {
    local root=$1 log=$CACHE/local-repo.log
    local repo=$root/srv/rampart-repo
    {
        mkdir -p "$repo" &&
            chroot "$root" apt-get update &&
            chroot "$root" apt-get install --download-only -y --no-install-recommends $REPO_PACKAGES &&
            mv "$root"/var/cache/apt/archives/*.deb "$repo/" &&
            chroot "$root" sh -c 'cd /srv/rampart-repo && apt-get download -o APT::Sandbox::User=root "$@"' \
                rampart-repo $REPO_REINSTALL &&
            chroot "$root" sh -c 'cd /srv/rampart-repo && for f in *.deb; do
                dpkg-deb -f "$f" &&
                printf "Filename: ./%s\nSize: %s\nSHA256: %s\n\n" "$f" "$(stat -c %s "$f")" \
                    "$(sha256sum <"$f" | cut -d " " -f 1)" || exit 1
            done >Packages' &&
            printf '# Test hosts have no route out: apt uses only the local repository\n# (sources.list.d/rampart-local.list).\n' \
                >"$root/etc/apt/sources.list" &&
            rm -f "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources &&
            echo 'deb [trusted=yes] file:/srv/rampart-repo ./' >"$root/etc/apt/sources.list.d/rampart-local.list" &&
            chroot "$root" apt-get update &&
            chroot "$root" apt-cache policy $REPO_PACKAGES $REPO_REINSTALL
    } >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "the local package repository failed; full log: $log"; }
    local p
    for p in $REPO_PACKAGES $REPO_REINSTALL; do
        ls "$repo/${p}_"*.deb >/dev/null 2>&1 || die "the local repository lacks $p; log: $log"
    done
}

build_image() {
    if [ -f "$ROOTFS/.rampart-image" ]; then
        return 0
    fi
    mkdir -p "$CACHE"
    local tmp=$CACHE/rootfs-building.$$
    rm -rf "$CACHE"/rootfs-building.*
    local start=$SECONDS
    log "building the Debian bookworm image (debootstrap, about 2 minutes) in $tmp"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" "$(debian_mirror)" \
        >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed; full log: $CACHE/debootstrap.log"; }

    if [ ! -f "$TEST_KEY" ]; then
        ssh-keygen -q -t ed25519 -N '' -C rampart-testbed -f "$TEST_KEY"
    fi
    install -d -m 0700 "$tmp/root/.ssh"
    install -m 0600 "$TEST_KEY.pub" "$tmp/root/.ssh/authorized_keys"

    # Each host gets its own host keys, written from outside before boot.
    rm -f "$tmp"/etc/ssh/ssh_host_*
    # systemd makes a machine id per boot when the file is empty.
    : >"$tmp/etc/machine-id"
    rm -f "$tmp/var/lib/dbus/machine-id"
    # Hosts never reach outside and boot fast.
    local unit
    for unit in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer man-db.timer \
        fstrim.timer e2scrub_reap.service e2scrub_all.timer systemd-networkd-wait-online.service \
        getty@tty1.service serial-getty@ttyS0.service; do
        ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
    done
    # The admin of a fresh VPS: root, by key only (Debian's default prohibit-password).
    echo 'UseDNS no' >"$tmp/etc/ssh/sshd_config.d/00-testbed.conf"
    build_local_repo "$tmp"
    chroot "$tmp" apt-get clean
    touch "$tmp/.rampart-image"
    rm -rf "$ROOTFS"
    mv "$tmp" "$ROOTFS"
    log "image ready in $((SECONDS - start)) s: $ROOTFS"
    # Old images of earlier versions of this script are removed.
    find "$CACHE" -maxdepth 1 -name 'rootfs-*' ! -name "rootfs-$IMAGE_STAMP" -exec rm -rf {} + || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    build_image
fi
