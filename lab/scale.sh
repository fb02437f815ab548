#!/usr/bin/env bash
# scanfleet lab: the SCALE lab (docs/lab.md "Scale lab"): 1,024 target addresses in 10.78.0.0/22, inside the
# /16 sweep space 10.78.0.0/16, on the lab bridge.
#
#   lab/scale.sh up       the lab's target hosts (lab/targets.sh up: their services also answer on their scale
#                         addresses) and the hosts of group scale_targets (lab/lab.sh up, then lab/targets.yml
#                         --limit scale_targets); every running lab host gets the on-link route of the space
#   lab/scale.sh down     end the scale_targets hosts and the target hosts, and nothing else
#   lab/scale.sh status   each host: up or down, and how many of its scale addresses it has
#
# What lives where is read from inventory/lab/targets.yml (targets_scale_addresses). The space is reachable only
# from the lab's namespaces: no lab host has a default route, and this machine has an unreachable route for it
# while the lab bridge is up (lab/lab.sh). Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
INVENTORY="$ROOT/inventory/lab/targets.yml"
LAB="$HERE/lab.sh"
SPACE=${SCANFLEET_LAB_SCALE_NET:-10.78.0.0/16}

die() { echo "scale: error: $*" >&2; exit 1; }
log() { echo "scale: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (lab/lab.sh needs it)"
if [ -x "$ROOT/.venv/bin/ansible-playbook" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
export HOME="${SCANFLEET_HOME:-$ROOT/.cache/home}" ANSIBLE_LOCAL_TEMP="${ANSIBLE_LOCAL_TEMP:-$ROOT/.cache/ansible/tmp}"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
# Our playbook runs keep their ssh masters apart from lab/lab.sh's shared directory (see lab/targets.sh).
CP_DIR=/tmp/.scanfleet-cp-scale
export ANSIBLE_SSH_CONTROL_PATH_DIR="$CP_DIR" ANSIBLE_SSH_RETRIES="${ANSIBLE_SSH_RETRIES:-3}"
mkdir -p "$HOME" "$ANSIBLE_LOCAL_TEMP"
command -v ansible-inventory >/dev/null || die "ansible not found (run 'make venv')"

# "GROUP NAME IP COUNT" per host of group lab_targets with scale addresses (COUNT of them; 0: none).
scale_table() {
  ansible-inventory -i "$INVENTORY" --list | python3 -c '
import json, sys
inv = json.load(sys.stdin)
hostvars = inv["_meta"]["hostvars"]
for group in ("targets", "scale_targets"):
    for name in sorted(inv.get(group, {}).get("hosts", [])):
        hv = hostvars[name]
        r = hv.get("targets_scale_addresses")
        count = int(r["last"]) - int(r["first"]) + 1 if r else 0
        print(group, name, hv["ansible_host"], count)
'
}

TABLE=$(scale_table) || die "cannot read $INVENTORY"
grep -q '^scale_targets ' <<< "$TABLE" || die "no hosts in group 'scale_targets' of $INVENTORY"
while read -r _ name ip _; do
  [[ "$name" =~ ^target-[a-z0-9-]+$ ]] || die "target host '$name' must be named target-*"
  [[ "$ip" =~ ^10\.77\.0\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 101 ] && [ "${BASH_REMATCH[1]}" -le 119 ] \
    || die "target host $name: $ip is not in 10.77.0.101-119"
done <<< "$TABLE"
SCALE_NAMES=$(awk '$1 == "scale_targets" {print $2}' <<< "$TABLE")

# Every running lab host (scanners brought up before the space existed too) gets the space's on-link route.
route_all() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^sf-/ {print $1}'); do
    ip -n "$ns" route replace "$SPACE" dev eth0 scope link
  done
}

cmd_up() {
  "$HERE/targets.sh" up
  local specs
  specs=$(awk '$1 == "scale_targets" {print $2 "=" $3}' <<< "$TABLE")
  # shellcheck disable=SC2086  # one NAME=IP word per host
  "$LAB" up $specs || { log "lab/lab.sh up failed; trying once more"; sleep 1; "$LAB" up $specs; }
  ansible-playbook -i "$ROOT/inventory/lab" "$HERE/targets.yml" --limit scale_targets
  route_all
  cmd_status
  if cmd_status | grep -q 'NOT'; then die "the scale lab is not complete (status above)"; fi
}

close_masters() {
  local sock
  for sock in "$CP_DIR"/*; do
    [ -S "$sock" ] || continue
    ssh -o ControlPath="$sock" -O exit localhost >/dev/null 2>&1 || true
  done
}

cmd_down() {
  close_masters
  # shellcheck disable=SC2086  # one word per host name; never an empty list (that would end every lab host)
  [ -n "$SCALE_NAMES" ] && "$LAB" down $SCALE_NAMES
  "$HERE/targets.sh" down
}

cmd_status() {
  local group name ip count have
  while read -r group name ip count; do
    if [[ " $(ip netns list 2>/dev/null | awk '{print $1}' | tr '\n' ' ') " == *" sf-$name "* ]]; then
      have=$(ip -n "sf-$name" -4 -o addr show dev eth0 | grep -c ' inet 10\.78\.' || true)
      if [ "$have" -ge "$count" ]; then
        echo "$name $ip up ($group): $have scale address(es)"
      else
        echo "$name $ip up ($group): scale addresses NOT all there ($have of $count)"
      fi
    else
      echo "$name $ip down ($group)"
    fi
  done <<< "$TABLE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
