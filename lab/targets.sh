#!/usr/bin/env bash
# scanfleet lab: the TARGET hosts (what the scanners scan).
#
#   lab/targets.sh up       bring the target hosts up (lab/lab.sh up) and install/start their services
#                           (ansible-playbook -i inventory/lab lab/targets.yml); idempotent
#   lab/targets.sh down     end the target hosts (lab/lab.sh down NAME...), and nothing else
#   lab/targets.sh status   each target host's state and, when up, which of its ports accept connections
#
# The hosts, their addresses and ports are read from inventory/lab/targets.yml (docs/targets.md). Only names
# target-* at 10.77.0.101-119 are accepted: other lab addresses belong to other hosts. Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
INVENTORY="$ROOT/inventory/lab/targets.yml"
LAB="$HERE/lab.sh"

die() { echo "targets: error: $*" >&2; exit 1; }
log() { echo "targets: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (lab/lab.sh needs it)"
# The project's virtualenv (make venv) provides ansible; keep its state inside the checkout, as the Makefile does.
if [ -x "$ROOT/.venv/bin/ansible-playbook" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
export HOME="${SCANFLEET_HOME:-$ROOT/.cache/home}" ANSIBLE_LOCAL_TEMP="${ANSIBLE_LOCAL_TEMP:-$ROOT/.cache/ansible/tmp}"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
# ssh ControlPersist masters of this script's runs live in a directory of their own: lab/lab.sh, when it ends
# any lab host, closes every master it finds in the shared directory (ssh -O check/exit ignore the host
# name), which cut our playbook runs short. Ours are closed by 'down' below, before the hosts end.
CP_DIR=/tmp/.scanfleet-cp-targets
export ANSIBLE_SSH_CONTROL_PATH_DIR="$CP_DIR" ANSIBLE_SSH_RETRIES="${ANSIBLE_SSH_RETRIES:-3}"
mkdir -p "$HOME" "$ANSIBLE_LOCAL_TEMP"
command -v ansible-inventory >/dev/null || die "ansible not found (run 'make venv')"

# "NAME IP PORT,PORT,..." per target host, from the inventory (every port it should listen on).
target_table() {
  ansible-inventory -i "$INVENTORY" --list | python3 -c '
import json, sys
inv = json.load(sys.stdin)
hostvars = inv["_meta"]["hostvars"]
for name in sorted(inv.get("targets", {}).get("hosts", [])):
    hv = hostvars[name]
    ports = set(hv["targets_service_ports"]["ssh"])
    for service in hv.get("targets_services", []):
        ports.update(hv["targets_service_ports"][service])
    ports.update(entry["port"] for entry in hv.get("targets_responder", []))
    r = hv.get("targets_scale_addresses")
    scale = int(r["last"]) - int(r["first"]) + 1 if r else 0
    print(name, hv["ansible_host"], ",".join(str(p) for p in sorted(ports)), scale)
'
}

TABLE=$(target_table) || die "cannot read $INVENTORY"
[ -n "$TABLE" ] || die "no hosts in group 'targets' of $INVENTORY"
while read -r name ip _ _; do
  [[ "$name" =~ ^target-[a-z0-9-]+$ ]] || die "target host '$name' must be named target-*"
  [[ "$ip" =~ ^10\.77\.0\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 101 ] && [ "${BASH_REMATCH[1]}" -le 119 ] \
    || die "target host $name: $ip is not in 10.77.0.101-119"
done <<< "$TABLE"
NAMES=$(awk '{print $1}' <<< "$TABLE")

listens() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

cmd_up() {
  local specs
  specs=$(awk '{print $1 "=" $2}' <<< "$TABLE")
  # shellcheck disable=SC2086  # one NAME=IP word per host
  # (once more on failure: lab.sh's bridge check can fail spuriously, "ipv4: Address already assigned")
  "$LAB" up $specs || { log "lab/lab.sh up failed; trying once more"; sleep 1; "$LAB" up $specs; }
  ansible-playbook -i "$ROOT/inventory/lab" "$HERE/targets.yml" --limit targets
}

close_masters() {  # end the ssh masters of our own runs (only target hosts use $CP_DIR)
  local sock
  for sock in "$CP_DIR"/*; do
    [ -S "$sock" ] || continue
    ssh -o ControlPath="$sock" -O exit localhost >/dev/null 2>&1 || true
  done
}

cmd_down() {
  close_masters
  # shellcheck disable=SC2086  # one word per host name; never an empty list (that would end every lab host)
  [ -n "$NAMES" ] && "$LAB" down $NAMES
}

cmd_status() {
  local state name ip ports scale port up down have
  state=$("$LAB" status)
  while read -r name ip ports scale; do
    if grep -q "^$name .* up$" <<< "$state"; then
      up=() down=()
      for port in ${ports//,/ }; do
        if listens "$ip" "$port"; then up+=("$port"); else down+=("$port"); fi
      done
      # its addresses in the scale lab's space (lab/scale.sh), counted in its namespace
      have=$(ip -n "sf-$name" -4 -o addr show dev eth0 2>/dev/null | grep -c ' inet 10\.78\.' || true)
      echo "$name $ip up: ${#up[@]} port(s) listening${down[*]:+, NOT listening: ${down[*]}}$(
        [ "$have" -ge "$scale" ] || echo ", scale addresses NOT all there ($have of $scale)")"
    else
      echo "$name $ip down"
    fi
  done <<< "$TABLE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
