#!/usr/bin/env bash
# A fleet on one machine, for the README's transcript and the idle-cost
# figures: a three-member etcd on loopback ports (authentication on), two
# agents as two hosts (host-a, host-b) governing test cgroups of their own,
# and an approver (alice) in a third "shell". Everything it starts is
# stopped, and everything it makes removed, when it exits.
#
#   tests/fleet-demo.sh            the transcript
#   tests/fleet-demo.sh measure    the agents' CPU and RSS over 60 s idle,
#                                  with and without [fleet]
#
# Run as root from the workspace after `cargo build -p geowall -p
# geowall-tests --bins` (GEOWALL_BIN names another geowall, e.g. a release
# build). Traffic goes to 127.20.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GW=${GEOWALL_BIN:-$ROOT/target/debug/geowall}
PROBE=$ROOT/target/debug/netprobe
MODE=${1:-transcript}
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
TMP=$(mktemp -d /tmp/geowall-fleet-demo.XXXXXX)
PIDS=()
CGROUPS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for cg in "${CGROUPS[@]}"; do
        [ -f "$cg/cgroup.kill" ] && echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    local p
    for p in $(seq "$1" "$(($1 + 400))"); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    exit 1
}

# etcd: three members, 127.0.0.1 ports from 62400.
CLUSTER="" ENDPOINTS=() PORT=62400
for i in 0 1 2; do
    c=$(free_port $PORT); p=$(free_port $((c + 1))); PORT=$((p + 1))
    CLIENT[$i]=$c PEER[$i]=$p
    CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:$p"
    ENDPOINTS+=("\"http://127.0.0.1:$c\"")
done
for i in 0 1 2; do
    etcd --name m$i --data-dir "$TMP/m$i" \
        --listen-client-urls "http://127.0.0.1:${CLIENT[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${CLIENT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${PEER[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PEER[$i]}" \
        --initial-cluster "$CLUSTER" --initial-cluster-token demo \
        --initial-cluster-state new >"$TMP/m$i.log" 2>&1 &
    PIDS+=($!)
done
EPS=$(IFS=,; echo "${ENDPOINTS[*]}")
CTL=(etcdctl --endpoints="http://127.0.0.1:${CLIENT[0]}")
for _ in $(seq 100); do "${CTL[@]}" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
"${CTL[@]}" user add root:rootpw >/dev/null 2>&1
"${CTL[@]}" auth enable >/dev/null

fleet_conf() { # user → a config with only [fleet]
    echo "$1-secret" >"$TMP/$1.pw"
    printf '[fleet]\netcd = [%s]\nuser = "%s"\npassword_file = "%s"\nnode = "%s"\nstate_dir = "%s"\n' \
        "$EPS" "$1" "$TMP/$1.pw" "$1" "$TMP/$1.fleet"
}
echo rootpw >"$TMP/root.pw"
printf '[fleet]\netcd = [%s]\nuser = "root"\npassword_file = "%s"\nstate_dir = "%s/root.fleet"\n' \
    "$EPS" "$TMP/root.pw" "$TMP" >"$TMP/root.toml"
fleet_conf alice >"$TMP/alice.toml"
"$GW" fleet init --config "$TMP/root.toml" >/dev/null
for u in host-a:node host-b:node alice:approver; do
    echo "${u%%:*}-secret" >"$TMP/${u%%:*}.pw"
    "$GW" fleet user add "${u%%:*}" --role "${u##*:}" --password-file "$TMP/${u%%:*}.pw" \
        --config "$TMP/root.toml" >/dev/null
done

# Two hosts: their own cgroup, pins, socket, audit log, approvals state.
printf '127.20.0.0/16 US\n127.30.0.0/16 DE\n' >"$TMP/test.cidr"
agent() { # name, with [fleet]? → starts an agent, prints its config path
    local name=$1 fleet=$2 cg="$CG2/geowall-demo-$$-$1"
    mkdir -p "$cg/work"; CGROUPS+=("$cg")
    {
        printf '[agent]\ncgroup = "/geowall-demo-%s-%s"\nbpffs = "/sys/fs/bpf/geowall-demo-%s-%s"\n' $$ "$name" $$ "$name"
        printf 'audit_log = "%s/%s.audit.jsonl"\nsocket = "%s/%s.sock"\n\n' "$TMP" "$name" "$TMP" "$name"
        printf '[dns]\nenabled = false\n\n[[maps]]\nkind = "cidr"\npath = "%s/test.cidr"\n\n' "$TMP"
        printf '[approvals]\nstate_dir = "%s/%s.approvals"\n\n' "$TMP" "$name"
        printf '[[policy]]\nname = "work"\nallow = ["EU"]\ncgroups = ["/work"]\napprovable = true\nmax_grant = "1h"\n\n'
        [ "$fleet" = yes ] && fleet_conf "$name"
    } >"$TMP/$name.toml"
    "$GW" run --detach-on-exit --config "$TMP/$name.toml" 2>"$TMP/$name.stderr" &
    PIDS+=($!)
    for _ in $(seq 1200); do [ -S "$TMP/$name.sock" ] && break; sleep 0.1; done
    [ -S "$TMP/$name.sock" ] || { echo "agent $name did not start:"; cat "$TMP/$name.stderr"; exit 1; }
}

if [ "$MODE" = measure ]; then
    agent host-a yes; A_PID=${PIDS[-1]}
    agent alone no; B_PID=${PIDS[-1]}
    sleep 5
    ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
    rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
    a0=$(ticks $A_PID) b0=$(ticks $B_PID)
    sleep 60
    a1=$(ticks $A_PID) b1=$(ticks $B_PID)
    hz=$(getconf CLK_TCK)
    echo "idle 60 s, CPU (utime+stime) and RSS:"
    echo "  with [fleet]:    $(( (a1 - a0) * 1000 / hz )) ms CPU, VmRSS $(rss $A_PID) kB"
    echo "  without [fleet]: $(( (b1 - b0) * 1000 / hz )) ms CPU, VmRSS $(rss $B_PID) kB"
    exit 0
fi

agent host-a yes
agent host-b yes
python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.20.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
while True: s.accept()[0].close()' >"$TMP/port" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
DEST=127.20.0.1:$(cat "$TMP/port")
for _ in $(seq 100); do
    "$GW" fleet status --json --config "$TMP/alice.toml" 2>/dev/null | grep -q '"alive":true.*"alive":true' && break
    sleep 0.2
done

say() { printf '\n$ %s\n' "$*"; }
say "geowall fleet status                         # alice's shell"
"$GW" fleet status --config "$TMP/alice.toml" | sed "s|$TMP|/tmp/demo|g"
say "netprobe tcp:$DEST                     # a job on host-a (cgroup work): denied, a request opens"
"$PROBE" --cgroup "$CG2/geowall-demo-$$-host-a/work" "tcp:$DEST"
sleep 1
say "geowall approvals list --fleet --pending      # alice's shell"
"$GW" approvals list --fleet --pending --config "$TMP/alice.toml"
say "geowall approvals approve host-a/1 --fleet --for 10m --reason 'vendor API, ticket 4711'"
"$GW" approvals approve host-a/1 --fleet --for 10m --reason 'vendor API, ticket 4711' --config "$TMP/alice.toml"
say "netprobe tcp:$DEST                     # the job on host-a again"
"$PROBE" --cgroup "$CG2/geowall-demo-$$-host-a/work" "tcp:$DEST"
say "netprobe tcp:$DEST                     # the same job on host-b"
"$PROBE" --cgroup "$CG2/geowall-demo-$$-host-b/work" "tcp:$DEST"
say "geowall log tail -n 4 --config host-a.toml   # host-a's audit log"
"$GW" log tail -n 4 --config "$TMP/host-a.toml" | sed "s|$TMP|/tmp/demo|g"
say "grep '\"event\":\"approved\"' host-a.audit.jsonl"
grep '"event":"approved"' "$TMP/host-a.audit.jsonl" | sed "s|$TMP|/tmp/demo|g"
say "geowall fleet status                         # alice's shell"
sleep 11
"$GW" fleet status --config "$TMP/alice.toml" | sed "s|$TMP|/tmp/demo|g"
