#!/usr/bin/env bash
# Builds the Debian bookworm root file system that every test host starts from, once per
# machine (cached under $CACHE, keyed by a hash of this file). Containers boot it through an
# overlay; the VM tier makes its disk from it (vm.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=systemd-sysv,dbus,openssh-server,sudo,nftables,wireguard-tools,wireguard-go,auditd,iproute2,iputils-ping,procps,kmod,python3,python3-apt,linux-image-amd64,less,ca-certificates

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
