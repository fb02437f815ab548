#!/usr/bin/env bash
# scanfleet lab: real SSH hosts on this machine, one network namespace + overlayfs root + sshd each.
#
#   lab/lab.sh up [NAME=IP ...]      bring up the bridge, the apt proxy and the hosts (default: the 3 scanners)
#   lab/lab.sh down [NAME ...]       end hosts (all when none named), then the proxy and the bridge
#   lab/lab.sh gc                    end the bridge and apt proxy if no host is up any more
#   lab/lab.sh status                list hosts with their state
#   lab/lab.sh ssh NAME [CMD...]     ssh into a host as root
#   lab/lab.sh exec NAME CMD...      run CMD inside a running host (its namespaces and root), as root
#
# Facts this relies on are in ../shared/DESIGN.md ("The lab"). Every process the lab starts is recorded with
# its PID and start time in $LAB_DIR and is ended by that PID only. Hosts get no default route: the only
# network they reach is the lab bridge. Must run as root.
set -euo pipefail

LAB_DIR=${SCANFLEET_LAB_DIR:-/var/lib/scanfleet-lab}
LAB_BRIDGE=${SCANFLEET_LAB_BRIDGE:-sfbr0}
LAB_NET=${SCANFLEET_LAB_NET:-10.77.0}          # /24 prefix of the lab subnet
LAB_GW="$LAB_NET.1"
# The scale lab's space (lab/scale.sh, docs/lab.md "Scale lab"): on the same bridge, on-link in every lab host
# (no gateway: a dead address is one that nothing answers ARP for). This machine itself gets an unreachable
# route for it while the bridge is up, so nothing from outside the lab's namespaces is ever sent towards it.
LAB_SCALE_NET=${SCANFLEET_LAB_SCALE_NET:-10.78.0.0/16}
LAB_SUITE=${SCANFLEET_LAB_SUITE:-bookworm}
ACNG_PORT=3142
DEFAULT_HOSTS=("scanner1=$LAB_NET.11" "scanner2=$LAB_NET.12" "scanner3=$LAB_NET.13")
HERE=$(cd "$(dirname "$0")" && pwd)
BASE="$LAB_DIR/base-$LAB_SUITE"
HOSTS_DIR="$LAB_DIR/hosts"
SSH_KEY="$LAB_DIR/ssh/id_ed25519"
# Where ansible keeps its ssh ControlPersist sockets (ansible.cfg control_path_dir): closed before a host ends.
CP_DIR=${SCANFLEET_CP_DIR:-/tmp/.scanfleet-cp}

die() { echo "lab: error: $*" >&2; exit 1; }
log() { echo "lab: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, mounts and debootstrap need it)"

# --- process bookkeeping: PID plus start time, so a reused PID is never mistaken for ours -------------
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
record_pid() { echo "$1 $(proc_start "$1")" > "$2"; }
# Print the PID recorded in FILE if that very process is still alive.
live_pid() {
  local file=$1 pid start
  [ -f "$file" ] || return 1
  read -r pid start < "$file" || return 1
  [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$start" ] || return 1
  echo "$pid"
}
end_pid() {  # end the process recorded in FILE (by PID), SIGKILL after a grace period
  local file=$1 sig=${2:-TERM} pid i
  if pid=$(live_pid "$file"); then
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do live_pid "$file" >/dev/null || break; sleep 0.1; done
    if live_pid "$file" >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$file"
}

# --- base image ---------------------------------------------------------------------------------------
ensure_tools() {
  local missing=()
  for t in debootstrap apt-cacher-ng ip unshare ssh-keygen ssh; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (run 'make deps' to install them)"
}

ensure_key() {
  mkdir -p "$LAB_DIR/ssh" && chmod 700 "$LAB_DIR/ssh"
  [ -f "$SSH_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C scanfleet-lab -f "$SSH_KEY"
}

ensure_base() {
  local mirror stamp want
  mirror=$("$HERE/mirror.sh")
  want="suite=$LAB_SUITE mirror=$mirror v=3"
  stamp="$BASE/.scanfleet-base"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  if [ -d "$BASE" ]; then
    # an unfinished or outdated base: only remove it when no host uses it
    [ -z "$(running_hosts)" ] || die "base $BASE is outdated but hosts are running; run 'lab/lab.sh down' first"
    rm -rf "$BASE"
  fi
  log "debootstrap $LAB_SUITE from $mirror into $BASE (once; about a minute)"
  debootstrap --variant=minbase \
    --include=openssh-server,python3,iproute2,ca-certificates,sudo,procps \
    "$LAB_SUITE" "$BASE.tmp" "$mirror" > "$LAB_DIR/debootstrap.log" 2>&1 \
    || { rm -rf "$BASE.tmp"; die "debootstrap failed, see $LAB_DIR/debootstrap.log"; }
  mv "$BASE.tmp" "$BASE"
  # Tweaks: key-only root login, no PAM, no daemons started by package scripts, host keys made per host.
  cat > "$BASE/etc/ssh/sshd_config.d/scanfleet-lab.conf" <<EOF
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
  printf '#!/bin/sh\nexit 101\n' > "$BASE/usr/sbin/policy-rc.d" && chmod 755 "$BASE/usr/sbin/policy-rc.d"
  rm -f "$BASE"/etc/ssh/ssh_host_*
  : > "$BASE/etc/resolv.conf"
  echo "deb $mirror $LAB_SUITE main" > "$BASE/etc/apt/sources.list"
  echo "Acquire::http::Proxy \"http://$LAB_GW:$ACNG_PORT\";" > "$BASE/etc/apt/apt.conf.d/01scanfleet-lab-proxy"
  rm -rf "$BASE"/var/lib/apt/lists/* "$BASE"/var/cache/apt/archives/*.deb
  mkdir -p "$BASE/root/.ssh" && chmod 700 "$BASE/root/.ssh"
  echo "$want" > "$stamp"
}

install_key() {  # the lab key may be newer than the base: (re)install it in the base's authorized_keys
  cp "$SSH_KEY.pub" "$BASE/root/.ssh/authorized_keys" && chmod 600 "$BASE/root/.ssh/authorized_keys"
}

# --- network: bridge and apt proxy --------------------------------------------------------------------
ensure_bridge() {
  if ! ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then
    ip link add "$LAB_BRIDGE" type bridge
  fi
  local addrs
  addrs=$(ip -4 -o addr show dev "$LAB_BRIDGE")   # not piped into grep -q: under pipefail that races
  [[ "$addrs" == *"inet $LAB_GW/24"* ]] || ip addr add "$LAB_GW/24" dev "$LAB_BRIDGE"
  ip link set "$LAB_BRIDGE" up
  ip route replace unreachable "$LAB_SCALE_NET"
}

ensure_proxy() {
  local d="$LAB_DIR/acng" mirror
  if live_pid "$d/pid" >/dev/null; then return 0; fi
  mirror=$("$HERE/mirror.sh")
  mkdir -p "$d/conf" "$d/cache" "$d/log"
  # A minimal config of our own: no Remap backends (Debian's default points at a mirror that may not
  # resolve here); the hosts ask for $mirror through this proxy, bound to the bridge address only.
  cat > "$d/conf/acng.conf" <<EOF
CacheDir: $d/cache
LogDir: $d/log
SocketPath: $d/socket
Port: $ACNG_PORT
BindAddress: $LAB_GW
ForeGround: 1
ExThreshold: 30
EOF
  log "apt proxy on $LAB_GW:$ACNG_PORT for $mirror"
  setsid apt-cacher-ng -c "$d/conf" > "$d/log/stdout.log" 2>&1 < /dev/null &
  record_pid $! "$d/pid"
  local i
  for i in $(seq 50); do
    (exec 3<>"/dev/tcp/$LAB_GW/$ACNG_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "apt proxy did not start, see $d/log"
}

# --- hosts --------------------------------------------------------------------------------------------
veth_of() { echo "sfv${1##*.}"; }            # root-side veth name from the host's IP (last octet)
ns_of() { echo "sf-$1"; }

running_hosts() {
  local h
  for h in "$HOSTS_DIR"/*/; do
    [ -d "$h" ] || continue
    live_pid "$h/pid" >/dev/null && basename "$h"
  done
  return 0
}

close_ssh_masters() {  # end ansible's ssh ControlPersist masters to IP (they hold the namespace open)
  # ansible.cfg names each master's socket HOST-PORT-USER (control_path), so the ones of this IP are known
  # by name; `-O check` alone would answer for any master, whatever its host.
  local ip=$1 sock
  for sock in "$CP_DIR"*/"$ip"-*; do
    [ -S "$sock" ] || continue
    ssh -o ControlPath="$sock" -O exit "$ip" >/dev/null 2>&1 || true
  done
}

host_down() {
  local name=$1 dir="$HOSTS_DIR/$1" ip=""
  [ -f "$dir/ip" ] && ip=$(cat "$dir/ip")
  [ -n "$ip" ] && close_ssh_masters "$ip"
  # unshare --fork ignores SIGTERM: SIGKILL it; --kill-child then ends the host's whole PID namespace.
  end_pid "$dir/pid" KILL
  ip netns del "$(ns_of "$name")" 2>/dev/null || true
  [ -n "$ip" ] && ip link del "$(veth_of "$ip")" 2>/dev/null || true
  rm -rf "$dir"
}

host_up() {
  local name=$1 ip=$2 dir="$HOSTS_DIR/$1" ns veth i
  [[ "$name" =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "bad host name '$name' (lower-case letters, digits, '-')"
  [[ "$ip" == "$LAB_NET".* ]] || die "host $name: $ip is outside the lab subnet $LAB_NET.0/24"
  ns=$(ns_of "$name"); veth=$(veth_of "$ip")
  if live_pid "$dir/pid" >/dev/null && [ "$(cat "$dir/ip")" = "$ip" ]; then
    log "$name ($ip) already up"; return 0
  fi
  # stale pieces of a crashed run: namespace, veth, state dir
  host_down "$name"
  ip link del "$veth" 2>/dev/null || true
  mkdir -p "$dir/upper" "$dir/work" "$dir/root"
  echo "$ip" > "$dir/ip"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$LAB_BRIDGE" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up   # no default route: only the lab subnet and the scale space are reachable
  ip -n "$ns" route add "$LAB_SCALE_NET" dev eth0 scope link
  setsid ip netns exec "$ns" unshare --mount --uts --ipc --pid --fork --kill-child --propagation private \
    "$HERE/host-init.sh" "$BASE" "$dir" "$name" > "$dir/console.log" 2>&1 < /dev/null &
  record_pid $! "$dir/pid"
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/$ip/22") 2>/dev/null && { log "$name up at $ip"; return 0; }
    live_pid "$dir/pid" >/dev/null || break
    sleep 0.1
  done
  cat "$dir/console.log" >&2 || true
  die "host $name did not start (console above)"
}

cmd_up() {
  local specs=("$@") spec
  [ ${#specs[@]} -gt 0 ] || specs=("${DEFAULT_HOSTS[@]}")
  ensure_tools
  mkdir -p "$LAB_DIR" "$HOSTS_DIR" && chmod 700 "$LAB_DIR"
  ensure_key
  ensure_base
  install_key
  ensure_bridge
  ensure_proxy
  for spec in "${specs[@]}"; do
    [[ "$spec" == *=* ]] || die "host spec '$spec' must be NAME=IP"
    host_up "${spec%%=*}" "${spec#*=}"
  done
}

cmd_down() {
  local names=("$@") h
  if [ ${#names[@]} -eq 0 ]; then
    for h in "$HOSTS_DIR"/*/; do [ -d "$h" ] && names+=("$(basename "$h")"); done
    for h in $(ip netns list 2>/dev/null | awk '$1 ~ /^sf-/ {print $1}'); do names+=("${h#sf-}"); done
  fi
  for h in $(printf '%s\n' "${names[@]}" | sort -u); do host_down "$h"; log "$h down"; done
  [ $# -gt 0 ] || lab_infra_down
}

lab_infra_down() {
  end_pid "$LAB_DIR/acng/pid" TERM
  ip link del "$LAB_BRIDGE" 2>/dev/null || true
  ip route del unreachable "$LAB_SCALE_NET" 2>/dev/null || true
  log "bridge and apt proxy down"
}

cmd_gc() {  # end the bridge and the apt proxy when no host runs any more (the apt cache is kept)
  if [ -z "$(running_hosts)" ]; then lab_infra_down; else log "hosts still up: $(running_hosts | tr '\n' ' ')"; fi
}

cmd_status() {
  local h name
  for h in "$HOSTS_DIR"/*/; do
    [ -d "$h" ] || continue
    name=$(basename "$h")
    if live_pid "$h/pid" >/dev/null; then echo "$name $(cat "$h/ip") up"; else echo "$name $(cat "$h/ip" 2>/dev/null) down"; fi
  done
}

cmd_exec() {
  local name=$1 pid child; shift
  pid=$(live_pid "$HOSTS_DIR/$name/pid") || die "host $name is not running"
  child=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null | awk '{print $1}')
  [ -n "$child" ] || die "host $name has no init process"
  nsenter --target "$child" --mount --uts --ipc --net --pid --root --wd=/ "$@"
}

cmd_ssh() {
  local name=$1 ip; shift
  ip=$(cat "$HOSTS_DIR/$name/ip" 2>/dev/null) || die "no such host $name"
  exec ssh -i "$SSH_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    "root@$ip" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  gc) cmd_gc ;;
  exec) shift; cmd_exec "$@" ;;
  ssh) shift; cmd_ssh "$@" ;;
  key) echo "$SSH_KEY" ;;
  *) echo "usage: $0 up [NAME=IP...] | down [NAME...] | gc | status | ssh NAME [CMD] | exec NAME CMD | key" >&2; exit 2 ;;
esac
