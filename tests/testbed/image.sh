#!/usr/bin/env bash
# Builds the Debian root file systems that test hosts start from, once per machine and flavour
# (cached under $CACHE, keyed by a hash of this file and the flavour: lib.sh). Containers boot
# one through an overlay; the VM tier makes its disk from the default flavour's (vm.sh).
#
# Flavours (docs/testbed.md; a host's flavour is FLAVOUR= in its env file, `testbed fresh hN
# --flavour F`; h1..h41 and the VMs are always `bookworm`):
#   bookworm  Debian 12 amd64, auditd and nftables preinstalled, systemd-networkd-wait-online
#             masked: the image every existing test was written for
#   vps       Debian 12 amd64 as a provider's fresh VPS: no auditd or nftables (they are in
#             the local repository, for playbooks to install), systemd-networkd and its
#             wait-online enabled, eth0 configured from outside (as by a provider's
#             ifupdown/cloud-init), so network-online.target waits up to 2 minutes
#   trixie    Debian 13 amd64 (OpenSSH 10, systemd 257), VPS-like as `vps`
#   arm64     Debian 12 arm64 (a Raspberry Pi's userland) under qemu-user emulation
#             (qemu-user-static + binfmt_misc), VPS-like as `vps`, plus the Pi's first login:
#             user `pi` with passwordless sudo and the test key, root SSH login refused
#   socket    the `vps` image with sshd socket-activated (ssh.socket, as on Ubuntu 24.04):
#             set per host when it is made (containers.sh), no image of its own
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES_COMMON=systemd-sysv,dbus,openssh-server,sudo,wireguard-tools,wireguard-go,iproute2,iputils-ping,procps,kmod,python3,python3-apt,less,ca-certificates

# The local package repository's packages, NOT installed in the image: unattended-upgrades (the
# baseline playbook installs it) and hello (tiny, for install/remove tests); on VPS-like
# flavours also auditd and nftables. Their missing dependencies come along. REPO_REINSTALL:
# installed in the image, also in the repository so that a test that removes one can put it
# back.
REPO_PACKAGES="unattended-upgrades hello"
REPO_REINSTALL="less"

# Flavour -> Debian suite, architecture, and whether it is VPS-like (see above).
flavour_suite() { case $1 in trixie) echo trixie ;; *) echo bookworm ;; esac; }
flavour_arch() { case $1 in arm64) echo arm64 ;; *) echo amd64 ;; esac; }
flavour_vps() { [ "$1" != bookworm ]; }
flavour_packages() {
    if flavour_vps "$1"; then
        echo "$PACKAGES_COMMON"
    else
        # Today's image: the VM tier boots its kernel.
        echo "$PACKAGES_COMMON,nftables,auditd,linux-image-amd64"
    fi
}
flavour_repo_packages() {
    if flavour_vps "$1"; then
        echo "$REPO_PACKAGES nftables auditd"
    else
        echo "$REPO_PACKAGES"
    fi
}

# Hosts have no route out, so apt on a host sees only a repository inside the image:
# /srv/rampart-repo, a flat repository (`deb [trusted=yes] file:/srv/rampart-repo ./`) of the
# .debs above, fetched while the image is built (through the mirror debootstrap used), with a
# Packages index made by dpkg-deb (in every image: no extra tool). The mirror's source is then
# removed and the lists refreshed, so that `apt-get update` on a host reads only local files.
build_local_repo() {
    local root=$1 flavour=$2 log=$CACHE/local-repo-$2.log
    local repo=$root/srv/rampart-repo repo_packages
    repo_packages=$(flavour_repo_packages "$flavour")
    {
        mkdir -p "$repo" &&
            chroot "$root" apt-get update &&
            chroot "$root" apt-get install --download-only -y --no-install-recommends $repo_packages &&
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
            chroot "$root" apt-cache policy $repo_packages $REPO_REINSTALL
    } >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "the local package repository failed; full log: $log"; }
    local p
    for p in $repo_packages $REPO_REINSTALL; do
        ls "$repo/${p}_"*.deb >/dev/null 2>&1 || die "the local repository lacks $p; log: $log"
    done
}

# build_image [FLAVOUR]: the flavour's image (default bookworm), unless it is there already.
build_image() {
    local flavour=${1:-bookworm} rootfs
    [ "$flavour" != socket ] || flavour=vps
    rootfs=$(flavour_rootfs "$flavour")
    if [ -f "$rootfs/.rampart-image" ]; then
        return 0
    fi
    local suite arch
    suite=$(flavour_suite "$flavour")
    arch=$(flavour_arch "$flavour")
    mkdir -p "$CACHE"
    local tmp=$CACHE/rootfs-building.$BASHPID d
    # Left behind by a build that died; another flavour's build may be running.
    for d in "$CACHE"/rootfs-building.*; do
        if [ -d "$d" ] && [ ! -d "/proc/${d##*.}" ]; then rm -rf "$d"; fi
    done
    local start=$SECONDS dlog=$CACHE/debootstrap-$flavour.log
    if [ "$arch" != amd64 ]; then
        ensure_binfmt "$arch"
    fi
    log "building the $flavour image (Debian $suite $arch, debootstrap, 2-3 minutes; arm64 under emulation longer) in $tmp"
    debootstrap --arch="$arch" --variant=minbase --include="$(flavour_packages "$flavour")" \
        "$suite" "$tmp" "$(debian_mirror)" >"$dlog" 2>&1 \
        || { tail -n 30 "$dlog" >&2; die "debootstrap failed; full log: $dlog"; }

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
        fstrim.timer e2scrub_reap.service e2scrub_all.timer \
        getty@tty1.service serial-getty@ttyS0.service; do
        ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
    done
    if flavour_vps "$flavour"; then
        # As on a provider's VPS: systemd-networkd runs and network-online.target waits for
        # its wait-online, which waits for links networkd manages. eth0 is configured from
        # outside (containers.sh), as by a provider's ifupdown or cloud-init, so it waits its
        # full 2 minutes after boot, or whenever network-online.target is started again.
        mkdir -p "$tmp/etc/systemd/system/multi-user.target.wants" \
            "$tmp/etc/systemd/system/network-online.target.wants" \
            "$tmp/etc/systemd/system/sockets.target.wants"
        [ -f "$tmp/lib/systemd/system/systemd-networkd-wait-online.service" ] ||
            die "the $flavour image has no systemd-networkd-wait-online.service"
        ln -sf /lib/systemd/system/systemd-networkd.service \
            "$tmp/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
        ln -sf /lib/systemd/system/systemd-networkd.socket \
            "$tmp/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
        ln -sf /lib/systemd/system/systemd-networkd-wait-online.service \
            "$tmp/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"
    else
        ln -sf /dev/null "$tmp/etc/systemd/system/systemd-networkd-wait-online.service"
    fi
    # The admin of a fresh VPS: root, by key only (Debian's default prohibit-password).
    echo 'UseDNS no' >"$tmp/etc/ssh/sshd_config.d/00-testbed.conf"
    if [ "$flavour" = arm64 ]; then
        # Raspberry Pi OS: no root login over SSH; the first login is the Imager's user with
        # passwordless sudo (its /etc/sudoers.d/010_pi-nopasswd).
        printf 'PermitRootLogin no\n' >>"$tmp/etc/ssh/sshd_config.d/00-testbed.conf"
        chroot "$tmp" useradd -m -s /bin/bash -G sudo pi
        echo 'pi ALL=(ALL) NOPASSWD: ALL' >"$tmp/etc/sudoers.d/010_pi-nopasswd"
        chmod 0440 "$tmp/etc/sudoers.d/010_pi-nopasswd"
        install -d -m 0700 -o 1000 -g 1000 "$tmp/home/pi/.ssh"
        install -m 0600 -o 1000 -g 1000 "$TEST_KEY.pub" "$tmp/home/pi/.ssh/authorized_keys"
    fi
    build_local_repo "$tmp" "$flavour"
    chroot "$tmp" apt-get clean
    printf 'FLAVOUR=%s\nSUITE=%s\nARCH=%s\n' "$flavour" "$suite" "$arch" >"$tmp/.rampart-image"
    rm -rf "$rootfs"
    mv "$tmp" "$rootfs"
    log "$flavour image ready in $((SECONDS - start)) s ($(du -sh "$rootfs" | cut -f1)): $rootfs"
    prune_images
}

# Images of earlier versions of this script go, unless a running host still boots from one
# (its overlay names it as lowerdir) or it is the current image of a flavour. A running
# container's lowerdir is its image: removing it under the host broke the host's files.
prune_images() {
    local dir f keep
    for dir in "$CACHE"/rootfs-*; do
        [ -d "$dir" ] || continue
        case $dir in "$CACHE"/rootfs-building.*) continue ;; esac
        keep=false
        for f in $FLAVOURS; do
            [ "$dir" != "$(flavour_rootfs "$f")" ] || keep=true
        done
        if ! $keep && grep -qsF "lowerdir=$dir," /proc/self/mounts; then
            keep=true
        fi
        $keep || rm -rf "$dir"
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    build_image "${1:-bookworm}"
fi
