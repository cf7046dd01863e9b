# Shared settings and helpers of the testbed scripts. Sourced, not run.
# Everything the testbed makes lives under these two folders and on the bridge below, so that
# `testbed down` can find and remove all of it, and nothing else.

set -euo pipefail

# The image cache survives runs on one machine; the run folder holds one testbed's hosts.
CACHE=${RAMPART_TESTBED_CACHE:-/var/cache/rampart-testbed}
RUN=${RAMPART_TESTBED_DIR:-/var/tmp/rampart-testbed}
BRIDGE=rampbr0
NET=10.203.0
BRIDGE_ADDR=$NET.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# An image is rebuilt whenever the script that makes it changes. The default flavour
# (bookworm: h1..h41, the VMs) keeps its path rootfs-STAMP; the others are
# rootfs-FLAVOUR-STAMP, each keyed by this file and its name (image.sh lists them).
FLAVOURS="bookworm vps trixie arm64 socket"
IMAGE_STAMP=$(cat "$HERE/image.sh" | sha256sum | cut -c1-12)
ROOTFS=$CACHE/rootfs-$IMAGE_STAMP
TEST_KEY=$CACHE/id_ed25519

# FLAVOUR -> the path of its image (socket hosts boot the vps image).
flavour_rootfs() {
    case $1 in
        bookworm) echo "$ROOTFS" ;;
        socket) flavour_rootfs vps ;;
        vps | trixie | arm64)
            echo "$CACHE/rootfs-$1-$(printf '%s\n%s\n' "$1" "$(cat "$HERE/image.sh")" | sha256sum | cut -c1-12)"
            ;;
        *) die "no testbed flavour '$1'; hint: one of $FLAVOURS (docs/testbed.md)" ;;
    esac
}

# Registers qemu-user-static's binfmt handler for ARCH (arm64) with the kernel, so that the
# arm64 image's programs run here (debootstrap's second stage, and every container of that
# flavour). Flags: F makes the kernel open the interpreter once, at registration, so that it
# works inside chroots and containers, which do not have it; C gives a setuid program its
# owner's rights (without it `sudo` in an arm64 host says "effective uid is not 0"). Debian's
# file has POF: C is added, and a handler registered without it is registered again.
# scripts/setup installs qemu-user-static.
ensure_binfmt() {
    local name=qemu-${1/arm64/aarch64} d=/proc/sys/fs/binfmt_misc conf
    conf=/usr/lib/binfmt.d/$name.conf
    [ -f "$conf" ] || die "no $conf; hint: apt-get install qemu-user-static (scripts/setup)"
    mountpoint -q "$d" || mount -t binfmt_misc binfmt_misc "$d"
    if [ -e "$d/$name" ] && ! grep -q '^flags:.*C' "$d/$name"; then
        echo -1 >"$d/$name"
    fi
    if [ ! -e "$d/$name" ]; then
        # :name:type:offset:magic:mask:interpreter:flags
        grep -v '^#' "$conf" | sed 's/:\([A-Z]*\)$/:\1C/' | sed 's/C\(.*\)C$/C\1/' >"$d/register"
    fi
    grep -qx enabled "$d/$name" || die "the binfmt handler $name is not enabled; hint: echo 1 >$d/$name"
    grep -q '^flags:.*F' "$d/$name" && grep -q '^flags:.*C' "$d/$name" ||
        die "the binfmt handler $name lacks the F or C flag; hint: echo -1 >$d/$name, then testbed again"
}

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this machine's apt already uses, so that no host name is written here.
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list*; hint: configure apt first"
    printf '%s\n' "$uri"
}

# Container host number N -> address and MAC. Fixed per number: reusing an address with a new
# MAC stalled ssh for 35-40 s (see docs/testbed.md).
host_addr() { echo "$NET.$((100 + $1))"; }
host_mac() { printf '02:52:00:00:00:%02x\n' "$1"; }
vm_addr() { echo "$NET.$((200 + $1))"; }
vm_mac() { printf '02:52:00:00:01:%02x\n' "$1"; }

# A Linux bridge without a set MAC takes the lowest MAC of its ports and changes it when that
# port goes away (measured here), which leaves the hosts' ARP entries for $BRIDGE_ADDR stale and
# stalls ssh like a reused address does. So the bridge gets a fixed MAC of its own.
BRIDGE_MAC=02:52:00:00:ff:01

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" address "$BRIDGE_MAC" type bridge
        ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" address "$BRIDGE_MAC"
    ip link set "$BRIDGE" up
    # Hosts have no default gateway; nothing is forwarded or masqueraded.
}
