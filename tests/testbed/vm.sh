# VM tier of the testbed: real Debian kernels under qemu (TCG, software emulation: KVM is not
# usable on these machines), for what containers cannot give: auditd/auditctl, kernel
# WireGuard, modprobe, kernel sysctls. Sourced (after lib.sh) by the `testbed` dispatcher.
#
#   vm_prepare      once per image: kernel, small initrd, base disk, a cold boot of a base VM
#                   whose paused state is saved to a file. Cached in $VM_DIR,
#                   $CACHE/vm-$IMAGE_STAMP-<hash of this file>/ (~35 s to make).
#   vms_up M        vm1..vmM started from the saved state (~6 s each instead of ~35 s), each
#                   with its own clock, hostname, SSH host keys and bridge address; writes
#                   $RUN/hosts/vmK.env and $RUN/hosts/vmK.pub once ssh answers at its address
#                   with its new host key.
#   vm_stop NAME    powers one VM off cleanly; its disk overlay, keys and files are kept.
#   vm_start NAME [fresh]
#                   boots a stopped VM again: by default a real cold boot of the disk it had
#                   (~25-40 s; what rampart changed on disk stays, like a reboot); with `fresh`
#                   (or when it has no disk) a new copy from the saved state (~5 s; disk changes
#                   gone). Same host keys, MAC and address either way, so known_hosts stays valid.
#   vms_down        ends every testbed qemu (by pid files only), removes taps and VM files;
#                   idempotent, also after a crashed run.
#
# Each VM has two NICs: a user-mode one (restrict=on: no way out) whose only use is the
# testbed's control channel, ssh on 127.0.0.1:(VM_PORT_BASE+K); and a tap on $BRIDGE with
# vm_addr K/24 and MAC vm_mac K (no gateway), which is what tests and rampart use.
# Needs: qemu-system-x86_64, qemu-img, busybox-static, cpio, e2fsprogs, openssh-client,
# python3 (QMP), iproute2.

# The VM cache is rebuilt when the image or this file changes.
VM_STAMP=$IMAGE_STAMP-$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-8)
VM_DIR=$CACHE/vm-$VM_STAMP
VM_PORT_BASE=${RAMPART_TESTBED_VM_PORT:-22200}  # base VM: this port; vmK: this + K
VM_TAP=${RAMPART_TESTBED_VM_TAP:-rampvm}           # taps: ${VM_TAP}K, ${VM_TAP}b (base)
VM_MAX_PARALLEL=3                                # restores at once (2 cores)
VM_CTL_MAC=52:54:00:12:34:56                     # the user-mode NIC, same in every copy
VM_BASE_MAC=02:52:00:00:01:00                    # the bridge NIC as saved; copies change it
VM_CMDLINE='root=/dev/vda rw console=ttyS0 net.ifnames=0'
VM_SSH_KNOWN_ALIAS=rampart-vm-base

# ---------------------------------------------------------------------------------------------
# small helpers

# vm_qmp SOCKET CMD [ARGS-JSON] [CMD [ARGS-JSON]]...: runs QMP commands, prints each result as
# one JSON line; fails on a QMP error.
vm_qmp() {
    python3 - "$@" <<'EOF'
import json, socket, sys
sock_path, rest = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sock_path)
f = s.makefile("rw")
def recv():
    while True:
        line = f.readline()
        if not line:
            sys.exit("qmp: connection closed")
        msg = json.loads(line)
        if "event" in msg:
            continue
        return msg
def call(cmd, args=None):
    req = {"execute": cmd}
    if args:
        req["arguments"] = args
    f.write(json.dumps(req) + "\n"); f.flush()
    msg = recv()
    if "error" in msg:
        sys.exit("qmp: %s: %s" % (cmd, msg["error"].get("desc")))
    return msg.get("return")
recv()  # greeting
call("qmp_capabilities")
i = 0
while i < len(rest):
    cmd = rest[i]; args = None
    if i + 1 < len(rest) and rest[i + 1].startswith("{"):
        args = json.loads(rest[i + 1]); i += 1
    i += 1
    try:
        print(json.dumps(call(cmd, args)))
    except (ConnectionError, OSError):
        if cmd != "quit":
            raise
EOF
}

vm_ssh_opts() { # KNOWN_HOSTS_FILE
    printf '%s\n' -F /dev/null -i "$TEST_KEY" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$1" -o GlobalKnownHostsFile=/dev/null \
        -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=6 -o LogLevel=ERROR
}

# vm_ctl_ssh PORT KNOWN_HOSTS ALIAS [SSH-OPTIONS... --] CMD...: ssh to a VM's control port.
vm_ctl_ssh() {
    local port=$1 kh=$2 alias=$3 opts extra=()
    shift 3
    if [ "${1:-}" != "${1#-}" ]; then
        while [ $# -gt 0 ] && [ "$1" != -- ]; do
            extra+=("$1")
            shift
        done
        shift
    fi
    mapfile -t opts < <(vm_ssh_opts "$kh")
    ssh "${opts[@]}" "${extra[@]}" -o HostKeyAlias="$alias" -p "$port" root@127.0.0.1 "$@"
}

# vm_wait_ssh SECONDS PIDFILE SSH-ARGS...: retries `SSH-ARGS true` until it works; fails at
# once (status 2) if the qemu of PIDFILE is gone.
vm_wait_ssh() {
    local limit=$1 pidfile=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@" true </dev/null 2>/dev/null; do
        vm_pid_alive "$pidfile" || return 2
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}

# vm_pid_alive PIDFILE: the qemu of that pid file is running (and is ours: its command line
# carries -name rampart-...).
vm_pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- '-name rampart-vm' || return 1
}

# vm_kill_pidfile PIDFILE: ends that qemu (TERM, then KILL), if it is ours and alive.
vm_kill_pidfile() {
    local f=$1 pid i
    if vm_pid_alive "$f"; then
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
        for i in $(seq 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
    fi
    rm -f "$f"
}

vm_port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

vm_tap_add() { # TAP [BRIDGE]
    ip link del "$1" 2>/dev/null || true
    ip tuntap add dev "$1" mode tap || return 1
    if [ -n "${2:-}" ]; then ip link set "$1" master "$2" || return 1; fi
    ip link set "$1" up
}

# vm_qemu DIR DISK PORT TAP MAC [EXTRA...]: starts qemu in the background, in a session of its
# own, with its files (pid, qmp socket, console, stderr) in DIR; returns once QMP answers.
# Copies must have the same devices as the saved VM.
vm_qemu() {
    local dir=$1 disk=$2 port=$3 tap=$4 mac=$5 name pid i
    shift 5
    name=rampart-$(basename "$dir")
    rm -f "$dir/qmp.sock" "$dir/qemu.pid"
    setsid qemu-system-x86_64 -name "$name" \
        -accel tcg,thread=multi,tb-size=128 -cpu max -m 512 -smp 1 \
        -nodefaults -no-user-config -display none -serial "file:$dir/console.log" \
        -kernel "${VM_BOOT_DIR:-$VM_DIR}/vmlinuz" -initrd "${VM_BOOT_DIR:-$VM_DIR}/initrd.img" \
        -append "$VM_CMDLINE" \
        -drive "file=$disk,format=qcow2,if=virtio,cache=unsafe" \
        -device vmgenid,guid=auto \
        -netdev "user,id=u0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" \
        -device "virtio-net-pci,netdev=u0,mac=$VM_CTL_MAC,addr=0x3" \
        -netdev "tap,id=t0,ifname=$tap,script=no,downscript=no,vnet_hdr=on" \
        -device "virtio-net-pci,netdev=t0,mac=$mac,addr=0x4" \
        -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
        -pidfile "$dir/qemu.pid" "$@" \
        </dev/null >>"$dir/qemu.log" 2>&1 &
    pid=$!
    for i in $(seq 300); do
        if [ -S "$dir/qmp.sock" ] && [ -s "$dir/qemu.pid" ]; then
            return 0
        fi
        if [ -s "$dir/qemu.pid" ]; then pid=$(cat "$dir/qemu.pid"); fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    cat "$dir/qemu.log" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

# ---------------------------------------------------------------------------------------------
# vm_prepare

vm_wait_image() {
    local f pid waited=0
    while [ ! -f "$ROOTFS/.rampart-image" ]; do
        local building=0
        for f in "$CACHE"/rootfs-building.*; do
            [ -e "$f" ] || continue
            pid=${f##*.}
            if [ -d "/proc/$pid" ]; then building=1; fi
        done
        if [ $building = 0 ]; then
            log "no image at $ROOTFS; building it"
            bash "$HERE/image.sh" || die "image build failed"
            continue
        fi
        [ $((waited % 30)) = 0 ] && log "waiting for the image build running in $CACHE/rootfs-building.*"
        [ $waited -lt 1200 ] || die "image build did not finish within 20 minutes"
        sleep 2
        waited=$((waited + 2))
    done
}

# Modules (paths relative to /lib/modules/KVER) to load, deps first, for NAMES.
vm_module_order() {
    local moddir=$1
    shift
    python3 - "$moddir" "$@" <<'EOF'
import sys, os
moddir, names = sys.argv[1], sys.argv[2:]
deps = {}
for line in open(os.path.join(moddir, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
byname = {}
for mod in deps:
    base = os.path.basename(mod).split(".ko")[0]
    byname[base.replace("-", "_")] = mod
builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_")
           for l in open(os.path.join(moddir, "modules.builtin"))}
out = []
def visit(mod):
    if mod in out:
        return
    for d in deps[mod]:
        visit(d)
    out.append(mod)
for n in names:
    n = n.replace("-", "_")
    if n in byname:
        visit(byname[n])
    elif n not in builtin:
        sys.exit("module %s neither in modules.dep nor built in" % n)
print("\n".join(out))
EOF
}

vm_make_initrd() { # OUT_DIR
    local out=$1 kver moddir t m
    kver=$(ls "$ROOTFS/lib/modules" | sort -V | tail -n1)
    moddir=$ROOTFS/lib/modules/$kver
    t=$out/initrd.tree
    mkdir -p "$t/bin" "$t/dev" "$t/proc" "$t/sys" "$t/newroot" "$t/lib/modules"
    cp "$(command -v busybox)" "$t/bin/busybox"
    file -L "$t/bin/busybox" 2>/dev/null | grep -q 'statically linked' \
        || ldd "$t/bin/busybox" 2>&1 | grep -q 'not a dynamic' \
        || die "busybox is not static; hint: apt-get install busybox-static"
    : >"$t/modules.list"
    for m in $(vm_module_order "$moddir" virtio_pci virtio_blk crc32c_generic ext4); do
        case $m in
        *.ko) cp "$moddir/$m" "$t/lib/modules/" ;;
        *.ko.xz) xz -dc "$moddir/$m" >"$t/lib/modules/$(basename "$m" .xz)" ;;
        *.ko.zst) zstd -qdc "$moddir/$m" >"$t/lib/modules/$(basename "$m" .zst)" ;;
        *) die "unknown module file $m" ;;
        esac
        m=$(basename "$m")
        echo "${m%.ko*}.ko" >>"$t/modules.list"
    done
    cat >"$t/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.list); do
    insmod "/lib/modules/$m" || echo "initrd: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "initrd: cannot mount /dev/vda"; poweroff -f
fi
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
echo "initrd: switch_root failed"; poweroff -f
EOF
    chmod 0755 "$t/init"
    (cd "$t" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initrd.img" || return 1
    rm -rf "$t"
    cp "$ROOTFS/boot/vmlinuz-$kver" "$out/vmlinuz"
}

# Writes the files that make the rootfs copy at $1 a VM disk.
vm_stage_rootfs() {
    local r=$1 out=$2 t
    printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' >"$r/etc/fstab"
    echo rampart-vm-base >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 rampart-vm-base\n' >"$r/etc/hosts"
    mkdir -p "$r/etc/systemd/network"
    # The control NIC: slirp's fixed guest address, no gateway, no DNS (static, so that no
    # DHCP lease or default route via slirp exists; restrict=on drops outbound anyway).
    cat >"$r/etc/systemd/network/10-testbed-ctl.network" <<EOF
[Match]
MACAddress=$VM_CTL_MAC

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    # The bridge NIC (eth1) is left alone until vms_up gives it its address.
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/etc/systemd/system/sockets.target.wants"
    ln -sf /lib/systemd/system/systemd-networkd.service "$r/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    ln -sf /lib/systemd/system/systemd-networkd.socket "$r/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
    # Base host keys, made here; their .pub lets the control channel check them strictly.
    rm -f "$r"/etc/ssh/ssh_host_*
    for t in ed25519 ecdsa; do
        ssh-keygen -q -t $t -N '' -C '' -f "$r/etc/ssh/ssh_host_${t}_key" || return 1
        cp "$r/etc/ssh/ssh_host_${t}_key.pub" "$out/"
    done
    # Under TCG with -cpu max the guest would load kvm_amd/kvm_intel (nested virtualization):
    # slower boots and nothing the tests use.
    printf 'blacklist kvm_amd\nblacklist kvm_intel\n' >"$r/etc/modprobe.d/rampart-testbed.conf"
    # Not needed in the VM (booted with the small initrd).
    rm -f "$r"/boot/initrd.img* "$r"/initrd.img "$r"/initrd.img.old
}

vm_need_tools() {
    local c missing=""
    for c in qemu-system-x86_64 qemu-img busybox cpio gzip mke2fs ssh ssh-keygen python3 ip ss flock setsid; do
        command -v "$c" >/dev/null || missing="$missing $c"
    done
    [ -z "$missing" ] || die "missing:$missing; hint: apt-get install qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs openssh-client python3 iproute2 util-linux"
}

vm_prepare() (
    vm_need_tools
    [ -f "$VM_DIR/.ready" ] && exit 0
    vm_wait_image
    mkdir -p "$CACHE"
    exec 9>"$CACHE/vm.lock"
    flock 9
    [ -f "$VM_DIR/.ready" ] && exit 0
    # Leftovers of a crashed earlier run.
    local d
    for d in "$CACHE"/vm-building.*; do
        [ -e "$d" ] || continue
        vm_kill_pidfile "$d/qemu.pid"
        rm -rf "$d"
    done
    ip link del "${VM_TAP}b" 2>/dev/null || true

    local tmp=$CACHE/vm-building.$BASHPID start=$SECONDS t0
    mkdir -p "$tmp"
    trap 'vm_kill_pidfile "'"$tmp"'/qemu.pid"; ip link del "${VM_TAP}b" 2>/dev/null || true
        cp "'"$tmp"'/console.log" "'"$CACHE"'/vm-prepare-console.log" 2>/dev/null || true; rm -rf "'"$tmp"'"' EXIT
    log "preparing the VM tier in $tmp (disk, initrd, cold boot and saved state, ~1-2 min)"

    vm_make_initrd "$tmp" || die "initrd build failed"
    cp -a "$ROOTFS" "$tmp/rootfs" || die "copy of the rootfs failed"
    vm_stage_rootfs "$tmp/rootfs" "$tmp" || die "staging the VM disk failed"
    mke2fs -q -t ext4 -L rampart-root -d "$tmp/rootfs" "$tmp/base.ext4" 3G >"$tmp/mke2fs.log" 2>&1 \
        || { cat "$tmp/mke2fs.log" >&2; die "mke2fs failed"; }
    rm -rf "$tmp/rootfs"
    cat "$tmp"/ssh_host_*_key.pub | awk -v a="$VM_SSH_KNOWN_ALIAS" '{print a, $1, $2}' >"$tmp/known_hosts"
    (cd "$tmp" && qemu-img create -q -f qcow2 -F raw -b base.ext4 boot.qcow2) || die "qemu-img failed"
    log "disk and initrd ready in $((SECONDS - start)) s"

    # Cold boot of the base VM. The bridge NIC's tap is on no bridge (it only has to exist so
    # the copies' virtio-net offers the same features); nothing is sent anywhere.
    local port=$VM_PORT_BASE
    vm_port_free "$port" || die "port $port is in use; hint: RAMPART_TESTBED_VM_PORT=another base"
    vm_tap_add "${VM_TAP}b" || die "cannot create tap ${VM_TAP}b"
    # Built in the temporary folder, so the paths of the kernel and initrd point there.
    local VM_BOOT_DIR=$tmp try rc
    for try in 1 2; do
        t0=$SECONDS
        : >"$tmp/console.log"
        vm_qemu "$tmp" "$tmp/boot.qcow2" "$port" "${VM_TAP}b" "$VM_BASE_MAC" || die "qemu did not start"
        rc=0
        vm_wait_ssh 300 "$tmp/qemu.pid" vm_ctl_ssh "$port" "$tmp/known_hosts" "$VM_SSH_KNOWN_ALIAS" || rc=$?
        [ $rc != 0 ] || break
        tail -n 30 "$tmp/console.log" >&2
        cat "$tmp/qemu.log" >&2
        vm_kill_pidfile "$tmp/qemu.pid"
        if [ $rc != 2 ] || [ $try != 1 ]; then die "base VM: no ssh within 300 s (console above)"; fi
        # A qemu that ended by itself during the cold boot is tried once more on a new disk.
        log "base VM: qemu ended during its cold boot (see above); trying once more"
        rm -f "$tmp/boot.qcow2"
        (cd "$tmp" && qemu-img create -q -f qcow2 -F raw -b base.ext4 boot.qcow2) || die "qemu-img failed"
    done
    local boot=$((SECONDS - t0))
    # Let the boot settle (units still starting) so every copy starts from a quiet system.
    vm_ctl_ssh "$port" "$tmp/known_hosts" "$VM_SSH_KNOWN_ALIAS" \
        'systemctl is-system-running --wait >/dev/null 2>&1; systemctl is-active auditd ssh systemd-networkd; sync' \
        </dev/null >"$tmp/base-check.log" 2>&1 \
        || { cat "$tmp/base-check.log" >&2; die "base VM: auditd, ssh or networkd not active"; }
    local settled=$((SECONDS - t0))
    vm_qmp "$tmp/qmp.sock" stop >/dev/null || die "qmp stop failed"
    vm_qmp "$tmp/qmp.sock" migrate "{\"uri\": \"exec:cat > $tmp/state\"}" >/dev/null || die "qmp migrate failed"
    local st i
    for i in $(seq 600); do
        st=$(vm_qmp "$tmp/qmp.sock" query-migrate | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",""))')
        case $st in
        completed) break ;;
        failed | cancelled) die "saving the VM state failed: $st" ;;
        esac
        sleep 0.2
    done
    [ "$st" = completed ] || die "saving the VM state did not complete"
    vm_qmp "$tmp/qmp.sock" quit >/dev/null 2>&1 || true
    vm_kill_pidfile "$tmp/qemu.pid"
    ip link del "${VM_TAP}b" 2>/dev/null || true
    chmod a-w "$tmp/boot.qcow2" "$tmp/base.ext4" "$tmp/state"
    rm -f "$tmp/qmp.sock"
    local total=$((SECONDS - t0))
    printf 'cold_boot_to_ssh_s=%s\nboot_settled_s=%s\nboot_and_save_s=%s\nprepare_total_s=%s\nstate_bytes=%s\n' \
        "$boot" "$settled" "$total" "$((SECONDS - start))" "$(stat -c %s "$tmp/state")" >"$tmp/timings"
    touch "$tmp/.ready"
    rm -rf "$VM_DIR"
    mv "$tmp" "$VM_DIR" || die "cannot move $tmp to $VM_DIR"
    trap - EXIT
    log "VM state saved: cold boot to ssh ${boot} s, settled ${settled} s, boot+save ${total} s, all $((SECONDS - start)) s"
    # VM caches of older images are removed.
    find "$CACHE" -maxdepth 1 -name 'vm-*' ! -name "vm-$VM_STAMP" ! -name 'vm-building.*' -exec rm -rf {} + || true
)

# ---------------------------------------------------------------------------------------------
# vms_up and friends

vm_num() { # vmK -> K
    case $1 in
    vm[0-9]*) echo "${1#vm}" ;;
    *) die "not a VM name: $1 (expected vmK)" ;;
    esac
}

# Makes the host keys of vmK once; vm_start reuses them.
vm_make_keys() {
    local k=$1 d=$RUN/hosts/vm$1 t
    mkdir -p "$d/keys"
    for t in ed25519 ecdsa; do
        [ -f "$d/keys/ssh_host_${t}_key" ] || ssh-keygen -q -t $t -N '' -C '' -f "$d/keys/ssh_host_${t}_key"
    done
    local addr
    addr=$(vm_addr "$k")
    awk '{print $1, $2}' "$d/keys"/ssh_host_*_key.pub >"$d/keys/pub"
    awk -v h="$addr" '{print h, $1, $2}' "$d/keys/pub" >"$d/known_hosts"
    awk -v h="vm$k-ctl" '{print h, $1, $2}' "$d/keys/pub" >>"$d/known_hosts"
}

# The script run in a restored copy, as root, over the control channel.
vm_settle_script() { # K
    local k=$1 d=$RUN/hosts/vm$1 name=vm$1 t mac addr
    mac=$(vm_mac "$k")
    addr=$(vm_addr "$k")
    cat <<EOF
set -e
echo $name >/etc/hostname
hostname $name
sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
echo '127.0.1.1 $name' >>/etc/hosts
# A machine id of its own (the base one was made at the base's boot).
if mountpoint -q /etc/machine-id; then umount /etc/machine-id; fi
echo $(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') >/etc/machine-id
# Fresh host keys, made outside.
rm -f /etc/ssh/ssh_host_*
umask 077
EOF
    for t in ed25519 ecdsa; do
        printf "base64 -d >/etc/ssh/ssh_host_%s_key <<'KEY'\n%s\nKEY\n" "$t" "$(base64 -w0 "$d/keys/ssh_host_${t}_key")"
        printf "base64 -d >/etc/ssh/ssh_host_%s_key.pub <<'KEY'\n%s\nKEY\n" "$t" "$(base64 -w0 "$d/keys/ssh_host_${t}_key.pub")"
    done
    cat <<EOF
umask 022
chmod 0644 /etc/ssh/ssh_host_*_key.pub
# The bridge NIC: its MAC and address (persisted for networkd too; no gateway).
cat >/etc/systemd/network/20-testbed-bridge.network <<'NET'
[Match]
Name=eth1

[Link]
MACAddress=$mac

[Network]
Address=$addr/24
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
ip link set eth1 down
ip link set eth1 address $mac
ip addr flush dev eth1
ip addr add $addr/24 dev eth1
ip link set eth1 up
networkctl reload
systemctl restart ssh
EOF
}

# vm_up_one K: starts vmK from the saved state and settles it. Its log: $RUN/hosts/vmK/up.log.
vm_up_one() (
    local k=$1 name=vm$1 d=$RUN/hosts/vm$1 port tap mac addr t0=$SECONDS i st
    port=$((VM_PORT_BASE + k))
    tap=$VM_TAP$k
    mac=$(vm_mac "$k")
    addr=$(vm_addr "$k")
    vm_kill_pidfile "$d/qemu.pid"
    rm -f "$d/disk.qcow2"
    echo "$tap" >"$d/tap"
    vm_make_keys "$k" || die "$name: host keys"
    vm_port_free "$port" || die "$name: port $port is in use"
    qemu-img create -q -f qcow2 -F qcow2 -b "$VM_DIR/boot.qcow2" "$d/disk.qcow2" || die "$name: qemu-img"
    vm_tap_add "$tap" "$BRIDGE" || die "$name: cannot create tap $tap on $BRIDGE"
    ip neigh del "$addr" dev "$BRIDGE" 2>/dev/null || true
    vm_qemu "$d" "$d/disk.qcow2" "$port" "$tap" "$mac" -incoming "exec:cat $VM_DIR/state" \
        || die "$name: qemu did not start"
    for i in $(seq 600); do
        st=$(vm_qmp "$d/qmp.sock" query-status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || true)
        case $st in
        inmigrate | '') sleep 0.1 ;;
        *) break ;;
        esac
    done
    [ "$st" = paused ] || die "$name: state not restored (status '$st'); see $d/qemu.log"
    vm_qmp "$d/qmp.sock" cont >/dev/null || die "$name: qmp cont failed"
    local restored=$((SECONDS - t0))
    # One control connection (checked against the base host key) for all that follows, so
    # that the clock is set without the delay of an ssh login under TCG (~1-2 s).
    local mux=$d/ctl.sock end=$((SECONDS + 60))
    rm -f "$mux"
    until vm_ctl_ssh "$port" "$VM_DIR/known_hosts" "$VM_SSH_KNOWN_ALIAS" -M -S "$mux" -fN -- </dev/null 2>/dev/null; do
        [ $SECONDS -lt $end ] || die "$name: no ssh on the control port $port"
        sleep 0.5
    done
    vm_ctl_ssh "$port" "$VM_DIR/known_hosts" "$VM_SSH_KNOWN_ALIAS" -S "$mux" -- "date -s @$(date +%s.%N) >/dev/null" </dev/null \
        || die "$name: setting the clock failed"
    vm_settle_script "$k" | vm_ctl_ssh "$port" "$VM_DIR/known_hosts" "$VM_SSH_KNOWN_ALIAS" -S "$mux" -- bash -s \
        || die "$name: settling the copy failed"
    ssh -S "$mux" -O exit root@127.0.0.1 2>/dev/null || true
    rm -f "$mux"
    # From the controller, over the bridge, with the new host key only.
    local opts
    mapfile -t opts < <(vm_ssh_opts "$d/known_hosts")
    vm_wait_ssh 60 "$d/qemu.pid" ssh "${opts[@]}" "root@$addr" || die "$name: no ssh at $addr with its new host key"
    printf 'NAME=%s\nTIER=vm\nADDR=%s\n' "$name" "$addr" >"$RUN/hosts/$name.env.tmp"
    cp "$d/keys/pub" "$RUN/hosts/$name.pub"
    mv "$RUN/hosts/$name.env.tmp" "$RUN/hosts/$name.env"
    log "$name up at $addr (restored in ${restored} s, ready in $((SECONDS - t0)) s)"
)

# vm_up_many K...: vm_up_one for each, at most VM_MAX_PARALLEL at once.
vm_up_many() {
    [ -f "$VM_DIR/.ready" ] || die "no saved VM state; run vm_prepare first"
    ensure_bridge
    mkdir -p "$RUN/hosts"
    local k p running failed=0 start=$SECONDS
    local -A pids=()
    for k in "$@"; do
        mkdir -p "$RUN/hosts/vm$k"
        while :; do
            running=0
            for p in "${pids[@]}"; do
                if kill -0 "$p" 2>/dev/null; then running=$((running + 1)); fi
            done
            [ "$running" -ge "$VM_MAX_PARALLEL" ] || break
            sleep 0.5
        done
        vm_up_one "$k" >"$RUN/hosts/vm$k/up.log" 2>&1 &
        pids[$k]=$!
    done
    for k in "$@"; do
        if ! wait "${pids[$k]}"; then
            failed=$((failed + 1))
            log "vm$k failed:"
            tail -n 20 "$RUN/hosts/vm$k/up.log" >&2
        else
            cat "$RUN/hosts/vm$k/up.log" >&2
        fi
    done
    [ "$failed" = 0 ] || die "$failed of $# VMs did not come up"
    log "$# VM(s) up in $((SECONDS - start)) s"
}

vms_up() {
    local m=${1:?usage: vms_up M}
    [ "$m" -ge 1 ] 2>/dev/null || die "vms_up: M must be a number >= 1"
    vm_prepare
    vm_up_many $(seq 1 "$m")
}

vm_running() { # NAME: its qemu runs
    vm_pid_alive "$RUN/hosts/$1/qemu.pid"
}

# vm_stop NAME: powers vmK off cleanly (systemctl poweroff over the control channel; killed
# after 60 s), keeping its disk overlay, keys and files, like a container host's stop.
vm_stop() {
    local name=${1:?usage: vm_stop vmK} k d addr pid
    k=$(vm_num "$name")
    d=$RUN/hosts/$name
    [ -d "$d/keys" ] || die "no VM $name in this testbed; hint: testbed list"
    addr=$(vm_addr "$k")
    if vm_running "$name"; then
        pid=$(cat "$d/qemu.pid")
        vm_ctl_ssh "$((VM_PORT_BASE + k))" "$d/known_hosts" "$name-ctl" 'systemctl --no-block poweroff' \
            </dev/null >/dev/null 2>&1 || log "$name: no poweroff over ssh; ending its qemu"
        for _ in $(seq 600); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then log "$name: still running after 60 s; ending its qemu"; fi
    fi
    vm_kill_pidfile "$d/qemu.pid"
    ip link del "$VM_TAP$k" 2>/dev/null || true
    ip neigh del "$addr" dev "$BRIDGE" 2>/dev/null || true
    rm -f "$d/qmp.sock"
}

# vm_start NAME [fresh]: boots a stopped vmK again. By default a real (cold) boot of the disk
# it had (changes made before vm_stop are kept; ~25-40 s under TCG): the disk already holds its
# hostname, host keys, machine id and bridge address. With `fresh`, or when it has no disk
# (never started, or vms_down), it is started anew from the saved state (~5 s): disk changes are
# gone, host keys, MAC and address stay the same.
vm_start() {
    local name=${1:?usage: vm_start vmK [fresh]} mode=${2:-} k d port tap addr t0=$SECONDS opts
    k=$(vm_num "$name")
    d=$RUN/hosts/$name
    if vm_running "$name"; then
        log "$name is already running"
        return 0
    fi
    if [ "$mode" = fresh ] || [ ! -f "$d/disk.qcow2" ]; then
        vm_up_many "$k"
        return
    fi
    [ -f "$VM_DIR/.ready" ] || die "no saved VM state; run vm_prepare first"
    ensure_bridge
    port=$((VM_PORT_BASE + k))
    tap=$VM_TAP$k
    addr=$(vm_addr "$k")
    vm_port_free "$port" || die "$name: port $port is in use"
    vm_tap_add "$tap" "$BRIDGE" || die "$name: cannot create tap $tap on $BRIDGE"
    ip neigh del "$addr" dev "$BRIDGE" 2>/dev/null || true
    vm_qemu "$d" "$d/disk.qcow2" "$port" "$tap" "$(vm_mac "$k")" || die "$name: qemu did not start"
    mapfile -t opts < <(vm_ssh_opts "$d/known_hosts")
    vm_wait_ssh 300 "$d/qemu.pid" ssh "${opts[@]}" "root@$addr" \
        || { tail -n 30 "$d/console.log" >&2; die "$name: no ssh at $addr within 300 s of its boot"; }
    log "$name booted from its disk, ready in $((SECONDS - t0)) s"
}

# Taps named like ours that no process holds (no carrier) are left over from a crashed run.
vm_tap_orphan() {
    [ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null || echo 0)" != 1 ]
}

vms_down() {
    local d f k prep_running=false
    for d in "$RUN"/hosts/vm[0-9]*/; do
        [ -d "$d" ] || continue
        vm_kill_pidfile "$d/qemu.pid"
        if [ -s "$d/tap" ]; then ip link del "$(cat "$d/tap")" 2>/dev/null || true; fi
    done
    # A vm_prepare that crashed (its own trap normally does this).
    for d in "$CACHE"/vm-building.*; do
        [ -d "$d" ] || continue
        if [ -d "/proc/${d##*.}" ]; then
            prep_running=true
        else
            vm_kill_pidfile "$d/qemu.pid"
            rm -rf "$d"
        fi
    done
    # Other taps of ours that a crash left (a running vm_prepare's or another run's are busy).
    for f in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$VM_TAP([0-9]+|b)\$" || true); do
        if [ "$f" = "${VM_TAP}b" ] && $prep_running; then continue; fi
        if vm_tap_orphan "$f"; then ip link del "$f" 2>/dev/null || true; fi
    done
    for d in "$RUN"/hosts/vm[0-9]*/; do
        [ -d "$d" ] || continue
        k=$(basename "$d")
        k=${k#vm}
        ip neigh del "$(vm_addr "$k")" dev "$BRIDGE" 2>/dev/null || true
        rm -rf "$d"
    done
    rm -f "$RUN"/hosts/vm[0-9]*.env "$RUN"/hosts/vm[0-9]*.pub
}
