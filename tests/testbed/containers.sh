# The container tier of the testbed: hosts h1..hN, each a systemd-nspawn machine booting the
# cached image through its own overlay, inside its own network namespace, with a veth on the
# bridge. Sourced by the `testbed` dispatcher, not run. See docs/testbed.md for the measured
# facts behind the choices below.
#
# Per host hN (N = 1..99), everything lives in:
#   $RUN/hosts/hN/{upper,work,root}  overlay (root = merged tree nspawn boots)
#   $RUN/hosts/hN.env                NAME=hN, TIER=container, ADDR=10.203.0.(100+N),
#                                    FLAVOUR=bookworm|vps|trixie|arm64|socket (image.sh),
#                                    LOGIN=the first login (root; pi on arm64)
#   $RUN/hosts/hN.pub                the host's SSH public keys, "type base64" per line
#   $RUN/hosts/hN.pid, hN.log        systemd-nspawn's pid and output
#   netns rt-hN (with eth0), veth rt-hN on $BRIDGE
#   /srv/rampart-agent inside: the agent cache, read-only (agent.sh), once it is built

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/agent.sh"

# Seconds to wait for sshd of every host, counted from the start of `containers_up`.
CT_BOOT_TIMEOUT=${RAMPART_TESTBED_BOOT_TIMEOUT:-60}
# Seconds nspawn gets to end a container after the second SIGTERM before it is killed (ct_kill).
CT_STOP_TIMEOUT=10

# hN -> N, refusing anything else (names end up in paths, netns and link names).
ct_num() {
    local n=${1#h}
    if [ "h$n" != "$1" ] || ! [[ $n =~ ^[1-9][0-9]?$ ]]; then
        die "'$1' is not a container host name (h1..h99); hint: testbed list"
    fi
    echo "$n"
}

# The pid of hN's systemd-nspawn if it is running. Only a pid from our pid file whose command
# line is our nspawn for this host counts, so a reused pid is never taken for ours (and a zombie,
# whose command line is empty, counts as gone).
ct_pid() {
    local pidfile=$RUN/hosts/$1.pid pid cmd
    [ -s "$pidfile" ] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # (2>/dev/null before <: a failed < is reported before later redirections apply.)
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == systemd-nspawn\ *" -D $RUN/hosts/$1/root "* ]] || return 1
    echo "$pid"
}

# A host's flavour, from its env file (bookworm when it has none: hosts of earlier runs).
ct_flavour() {
    local f
    f=$(sed -n 's/^FLAVOUR=//p' "$RUN/hosts/$1.env" 2>/dev/null | head -n1)
    echo "${f:-bookworm}"
}

ct_mount() {
    local d=$RUN/hosts/$1 flavour lower
    mountpoint -q "$d/root" && return 0
    flavour=$(ct_flavour "$1")
    lower=$(flavour_rootfs "$flavour")
    [ -f "$lower/.rampart-image" ] || die "$1: no $flavour image at $lower; hint: testbed image --flavour $flavour"
    if [ "$(flavour_arch "$flavour")" != amd64 ]; then
        ensure_binfmt "$(flavour_arch "$flavour")"
    fi
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$d/upper,workdir=$d/work" "$d/root"
}

ct_umount() {
    local d=$RUN/hosts/$1
    mountpoint -q "$d/root" 2>/dev/null || return 0
    umount "$d/root"
}

# Prints the last lines of a host's nspawn output and of its journal, for error messages
# (with --console=passive the boot messages are not in nspawn's output).
ct_log_tail() {
    local logf=$RUN/hosts/$1.log journal=$RUN/hosts/$1/root/var/log/journal
    if [ -s "$logf" ]; then
        printf -- '--- last lines of %s ---\n' "$logf" >&2
        tail -n 15 "$logf" >&2
    fi
    if [ -d "$journal" ] && command -v journalctl >/dev/null; then
        printf -- '--- last lines of the journal of %s ---\n' "$1" >&2
        journalctl -D "$journal" -n 15 --no-pager -q >&2 2>/dev/null || true
    fi
    printf -- '---\n' >&2
}

# Makes everything of hN but the running machine: env file, network namespace, overlay,
# hostname, SSH host keys. $2: its flavour (default bookworm).
ct_create() {
    local name=$1 flavour=${2:-bookworm} n addr mac d ns kind login=root
    n=$(ct_num "$name")
    [ "$flavour" != arm64 ] || login=pi
    addr=$(host_addr "$n")
    mac=$(host_mac "$n")
    d=$RUN/hosts/$name
    ns=rt-$name
    mkdir -p "$d/upper" "$d/work" "$d/root"
    # Written first so that `down` and `list` see a host that failed half-way.
    printf 'NAME=%s\nTIER=container\nADDR=%s\nFLAVOUR=%s\nLOGIN=%s\n' "$name" "$addr" "$flavour" "$login" \
        >"$RUN/hosts/$name.env"

    # Network: eth0 inside the namespace with a FIXED MAC per host number (a reused address
    # with a new MAC stalled ssh for 35-40 s, TESTBED.md), the peer on the bridge. No gateway.
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip -n "$ns" link set eth0 address "$mac"
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip link set "$ns" master "$BRIDGE" up

    # A fresh copy-on-write tree per host.
    ct_mount "$name"
    local root=$d/root
    echo "$name" >"$root/etc/hostname"
    # sudo complains without the host's own name in /etc/hosts (TESTBED.md).
    cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$name
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
    # The kernel takes audit requests only from the initial PID namespace (TESTBED.md), so
    # auditd cannot run in a container: it fails and restarts a few times, leaving the host
    # "degraded", and a poweroff that caught it between restarts hung (seen before the cgroup
    # fix below, ct_cgroup_enter). Skip it as a unit this kind of host does not support; audit is
    # the VM tier's job. `systemctl start auditd` then succeeds without doing anything.
    mkdir -p "$root/etc/systemd/system/auditd.service.d"
    printf '[Unit]\nConditionVirtualization=!container\n' \
        >"$root/etc/systemd/system/auditd.service.d/rampart-testbed-container.conf"
    if [ "$flavour" = socket ]; then
        # sshd socket-activated, as on Ubuntu 24.04 or a Debian admin's choice: systemd listens
        # on ssh.socket (port 22 from the unit, not from sshd_config) and starts sshd per
        # connection; ssh.service is not enabled.
        rm -f "$root/etc/systemd/system/multi-user.target.wants/ssh.service" \
            "$root/etc/systemd/system/sshd.service"
        mkdir -p "$root/etc/systemd/system/sockets.target.wants"
        ln -sf /lib/systemd/system/ssh.socket "$root/etc/systemd/system/sockets.target.wants/ssh.socket"
    fi
    # SSH host keys made here, from outside, before boot: a first-boot unit inside failed in
    # about 1 boot of 50 (219/CGROUP), and this way known_hosts needs no network scan.
    # ed25519 + ecdsa only (RSA keygen is slow, TESTBED.md).
    rm -f "$root"/etc/ssh/ssh_host_*
    : >"$RUN/hosts/$name.pub.tmp"
    for kind in ed25519 ecdsa; do
        ssh-keygen -q -N '' -t "$kind" -C "root@$name" -f "$root/etc/ssh/ssh_host_${kind}_key"
        cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_${kind}_key.pub" >>"$RUN/hosts/$name.pub.tmp"
    done
    mv "$RUN/hosts/$name.pub.tmp" "$RUN/hosts/$name.pub"
    # Only this host's keys, for the readiness probe below.
    sed "s/^/$addr /" "$RUN/hosts/$name.pub" >"$d/known_hosts"
}

# Each host's nspawn runs in cgroups of its own. These machines have the "hybrid" cgroup
# layout (v1 controllers, name=systemd at /sys/fs/cgroup/systemd, cgroup2 at
# /sys/fs/cgroup/unified) and no systemd. With --keep-unit nspawn splits ITS OWN cgroup into
# "supervisor" and "payload" and boots the container in "payload"; started from the root
# cgroup, every container got the same /payload, so all the containers' systemds shared
# /payload/system.slice/*. Measured: "Failed to kill control group ...: Input/output error",
# unit stops waiting out their timeout, and poweroffs that never ended ("systemd-halt.service:
# Failed at step CGROUP", about 3 hosts in 20 after ssh logins) -- likely also the 219/CGROUP
# of TESTBED.md. nspawn takes its path from the cgroup2 hierarchy, and the container's systemd
# uses name=systemd, so the host gets rampart-testbed/hN in both. Neither has controllers
# here (the controllers are on v1 hierarchies): this only groups processes, it limits nothing.
# (On a machine with only cgroup2 at /sys/fs/cgroup, nothing is done here.)
CT_CGROUP_ROOTS="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"

ct_cgroup_enter() {
    local root
    for root in $CT_CGROUP_ROOTS; do
        [ -f "$root/cgroup.procs" ] || continue
        mkdir -p "$root/rampart-testbed/$1"
        echo "$BASHPID" >"$root/rampart-testbed/$1/cgroup.procs"
    done
}

# Removes hN's cgroups once empty (nspawn leaves supervisor/ and payload/... behind).
ct_cgroup_remove() {
    local root
    for root in $CT_CGROUP_ROOTS; do
        [ -d "$root/rampart-testbed/$1" ] || continue
        find "$root/rampart-testbed/$1" -depth -type d -exec rmdir {} + 2>/dev/null ||
            log "$1: cgroup $root/rampart-testbed/$1 is not empty, left in place"
    done
}

# Starts hN's systemd-nspawn in the background (its own session, so it outlives this shell and
# a Ctrl-C of `testbed up`), and records its pid.
ct_launch() {
    local name=$1 d=$RUN/hosts/$1
    # SYSTEMD_NSPAWN_API_VFS_WRITABLE=network: with --network-namespace-path nspawn mounts
    # /proc/sys read-only; this makes /proc/sys/net (only) writable inside (TESTBED.md).
    # --register=no --keep-unit: this machine has no systemd to register with.
    # In a non-interactive shell the background child is no process group leader, so setsid
    # execs nspawn in place (it forks only for a group leader).
    # The subshell first moves itself into the host's own cgroups (ct_cgroup_enter), then execs
    # env -> setsid -> nspawn, all in place, so $! is nspawn's pid.
    # The agent cache (agent.sh), when built, READ-ONLY at $AGENT_MOUNT: what hosts install
    # Node and OpenClaw from, shared by all of them instead of copied into each.
    local -a agent_bind=()
    if agent_cache_ready; then
        agent_bind=(--bind-ro="$AGENT_CACHE:$AGENT_MOUNT")
    fi
    (
        # Only stdin, stdout and stderr go along: nspawn outlives this shell, and any other
        # inherited descriptor stays open as long as the host runs. One holding a lock (the
        # suite's `flock /work/suite.lock cargo test ...` whose test made this host fresh)
        # would keep that lock taken until the host stops.
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        ct_cgroup_enter "$name"
        exec env SYSTEMD_NSPAWN_API_VFS_WRITABLE=network setsid systemd-nspawn --quiet \
            --register=no --keep-unit -M "$name" -D "$d/root" \
            --network-namespace-path="/run/netns/rt-$name" \
            --capability=CAP_NET_ADMIN --bind=/dev/net/tun --console=passive \
            "${agent_bind[@]}" -b
    ) </dev/null >>"$RUN/hosts/$name.log" 2>&1 &
    local pid=$! i
    echo "$pid" >"$RUN/hosts/$name.pid"
    # Until the child has exec'd nspawn its command line is still this shell's, and ct_pid
    # would take the host for dead: wait for the exec (milliseconds).
    for ((i = 0; i < 100; i++)); do
        ct_pid "$name" >/dev/null && return 0
        sleep 0.05
    done
    ct_log_tail "$name"
    die "$name: systemd-nspawn did not start; hint: see $RUN/hosts/$name.log"
}

# Waits until sshd of hN shows the host key we made and lets root in with the test key, or,
# on a host hardened since (`testbed start` after a test's apply), refuses root by name.
# $2: the value of $SECONDS after which to give up.
ct_wait_ssh() {
    local name=$1 deadline=$2 addr err login
    addr=$(host_addr "$(ct_num "$name")")
    login=$(sed -n 's/^LOGIN=//p' "$RUN/hosts/$name.env" 2>/dev/null | head -n1)
    login=${login:-root}
    while :; do
        if ! ct_pid "$name" >/dev/null; then
            ct_log_tail "$name"
            die "$name: systemd-nspawn exited while booting; hint: see $RUN/hosts/$name.log and journalctl -D $RUN/hosts/$name/root/var/log/journal"
        fi
        # A cheap TCP check first, so that ssh runs only once sshd listens.
        if timeout 2 bash -c "exec 3<>/dev/tcp/$addr/22" 2>/dev/null; then
            if err=$(timeout 15 ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes \
                -o UserKnownHostsFile="$RUN/hosts/$name/known_hosts" -o GlobalKnownHostsFile=/dev/null \
                -o ConnectTimeout=5 -o LogLevel=ERROR -o IdentitiesOnly=yes -i "$TEST_KEY" \
                "$login@$addr" true </dev/null 2>&1 >/dev/null); then
                return 0
            fi
            # The host key matched (else ssh says so); only root's login is refused.
            case $err in *"Permission denied"*) return 0 ;; esac
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            ct_log_tail "$name"
            die "$name: sshd did not answer on $addr:22 in time (RAMPART_TESTBED_BOOT_TIMEOUT=$CT_BOOT_TIMEOUT s); hint: see $RUN/hosts/$name.log and journalctl -D $RUN/hosts/$name/root/var/log/journal, then 'testbed down'"
        fi
        sleep 0.2
    done
}

# One host, from nothing to sshd answering. Runs in a background subshell per host.
# $3: its flavour (default bookworm).
ct_up_one() {
    local name=$1 deadline=$2 flavour=${3:-bookworm}
    # (In its own background subshell so that errexit stays on inside it, yet the failure
    # gets the host's name.)
    ct_create "$name" "$flavour" &
    if ! wait $!; then
        die "$name: could not make its namespace, overlay or keys (error above); hint: testbed down"
    fi
    ct_launch "$name"
    # Under emulation an arm64 host boots in about a minute instead of a second.
    [ "$flavour" != arm64 ] || deadline=$((deadline + 240))
    ct_wait_ssh "$name" "$deadline"
}

# containers_up N: starts h1..hN in parallel and returns when sshd answers on all of them.
containers_up() {
    local count=${1:-}
    if ! [[ $count =~ ^[0-9]+$ ]] || [ "$count" -gt 99 ]; then
        die "containers_up: want a number of hosts 0..99, got '$count'"
    fi
    [ "$count" -gt 0 ] || return 0
    [ -f "$ROOTFS/.rampart-image" ] || die "no image at $ROOTFS; hint: testbed image"
    ip link show "$BRIDGE" >/dev/null 2>&1 || die "no bridge $BRIDGE; hint: call ensure_bridge first"
    local start=$EPOCHREALTIME deadline=$((SECONDS + CT_BOOT_TIMEOUT)) i failed=0
    # With the default of 128 only ~20 hosts boot ("Too many open files", TESTBED.md).
    # Only ever raised, never lowered.
    if [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 8192 ]; then
        sysctl -q -w fs.inotify.max_user_instances=8192
    fi
    mkdir -p "$RUN/hosts"
    local -a pids=()
    for ((i = 1; i <= count; i++)); do
        ct_up_one "h$i" "$deadline" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" || failed=$((failed + 1))
    done
    [ "$failed" -eq 0 ] || die "$failed of $count container hosts did not come up (errors above); hint: 'testbed down' cleans up"
    log "$count container hosts ready in $(ct_elapsed "$start") s"
}

# Seconds since an $EPOCHREALTIME value, with one decimal.
ct_elapsed() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# Powers hN off: SIGTERM to nspawn makes the container's systemd shut down cleanly (~0.3-2 s).
# Before each host had its own cgroups (ct_cgroup_enter) the very last step sometimes failed
# ("systemd-halt.service: Failed at step CGROUP") and the container stayed "stopping" for ever,
# all its services already stopped. Kept as a safety net: after $CT_HALT_WAIT s a second
# SIGTERM, which makes nspawn end the container at once, and SIGKILL only if even that did not
# work. Only the pid from our pid file is ever signalled.
CT_HALT_WAIT=5

ct_wait_gone() { # NAME SECONDS: true once hN's nspawn is gone
    local deadline=$((SECONDS + $2))
    while ct_pid "$1" >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

ct_kill() {
    local name=$1 pid kids
    pid=$(ct_pid "$name") || { rm -f "$RUN/hosts/$name.pid"; ct_cgroup_remove "$name"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! ct_wait_gone "$name" "$CT_HALT_WAIT"; then
        log "$name: no poweroff in $CT_HALT_WAIT s, ending it (see $RUN/hosts/$name.log)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! ct_wait_gone "$name" "$CT_STOP_TIMEOUT"; then
            log "$name: still there, killing it"
            # nspawn's child is the container's PID 1; killing it ends the whole container.
            kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
            # shellcheck disable=SC2086 # $kids: zero or more pids
            kill -KILL "$pid" $kids 2>/dev/null || true
            ct_wait_gone "$name" 10 || die "$name: systemd-nspawn (pid $pid) does not go away"
        fi
    fi
    rm -f "$RUN/hosts/$name.pid"
    ct_cgroup_remove "$name"
}

# container_stop NAME: powers the host off but keeps its overlay, address and keys, so that
# container_start brings the same host back. While stopped its eth0 is down: the address does
# not answer at all, as for a host that is off (rather than "connection refused").
container_stop() {
    local name=$1 n
    n=$(ct_num "$name")
    [ -f "$RUN/hosts/$name.env" ] || die "no container host $name; hint: testbed list"
    ct_kill "$name"
    ip -n "rt-$name" link set eth0 down 2>/dev/null || true
    ip neigh del "$(host_addr "$n")" dev "$BRIDGE" 2>/dev/null || true
    ct_umount "$name"
}

# container_start NAME: boots a stopped host again, same overlay, address and keys.
container_start() {
    local name=$1
    ct_num "$name" >/dev/null
    [ -f "$RUN/hosts/$name.env" ] || die "no container host $name; hint: testbed list"
    if ct_pid "$name" >/dev/null; then
        log "$name is already running"
        return 0
    fi
    local start=$EPOCHREALTIME
    ct_mount "$name"
    ip -n "rt-$name" link set eth0 up
    ct_launch "$name"
    local timeout=$CT_BOOT_TIMEOUT
    [ "$(ct_flavour "$name")" != arm64 ] || timeout=$((timeout + 240))
    ct_wait_ssh "$name" $((SECONDS + timeout))
    log "$name ready in $(ct_elapsed "$start") s"
}

# Removes every trace of hN, whatever state a crashed run left it in.
ct_destroy() {
    local name=$1 n d=$RUN/hosts/$1
    n=$(ct_num "$name")
    ct_kill "$name"
    if ! ct_umount "$name"; then
        log "$name: overlay still busy, detaching it lazily"
        umount -l "$d/root" || true
    fi
    # Deleting the namespace deletes eth0 and with it its veth peer; the explicit link delete
    # covers a run that crashed between creating the two.
    ip netns del "rt-$name" 2>/dev/null || true
    ip link del "rt-$name" 2>/dev/null || true
    ip neigh del "$(host_addr "$n")" dev "$BRIDGE" 2>/dev/null || true
    # Never remove a folder through a mounted overlay.
    if mountpoint -q "$d/root" 2>/dev/null; then
        log "$name: $d/root is still mounted, leaving $d"
    else
        rm -rf --one-file-system "$d"
    fi
    rm -f "$RUN/hosts/$name".{env,pub,pub.tmp,pid,log}
}

# The container hosts there are traces of: env files, host folders, namespaces, veths,
# cgroups.
ct_names() {
    local root
    {
        for root in $CT_CGROUP_ROOTS; do
            if [ -d "$root/rampart-testbed" ]; then
                find "$root/rampart-testbed" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'
            fi
        done
        if [ -d "$RUN/hosts" ]; then
            find "$RUN/hosts" -maxdepth 1 \( -name 'h*.env' -o -name 'h*' -type d \) -printf '%f\n' | sed 's/\.env$//'
        fi
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^rt-\(h[0-9]*\)$/\1/p'
        ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | sed -n 's/^rt-\(h[0-9]*\)@.*$/\1/p'
    } | grep -E '^h[1-9][0-9]?$' | sort -uV
}

# containers_down: removes all container hosts, in parallel.
containers_down() {
    local name failed=0
    local -a pids=()
    for name in $(ct_names); do
        ct_destroy "$name" &
        pids+=($!)
    done
    for name in "${pids[@]}"; do
        wait "$name" || failed=$((failed + 1))
    done
    [ "$failed" -eq 0 ] || die "$failed container hosts were not removed cleanly (errors above)"
    for name in $CT_CGROUP_ROOTS; do
        rmdir "$name/rampart-testbed" 2>/dev/null || true
    done
}
