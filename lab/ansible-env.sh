# shellcheck shell=bash
# Set-up shared by the lab scripts that run Ansible against lab hosts (lab/targets.sh, lab/scale.sh). Sourced
# after setting ROOT (the checkout), LAB_SCRIPT (their name in messages) and LAB_CP_DIR (their ssh masters).
die() { echo "$LAB_SCRIPT: error: $*" >&2; exit 1; }
log() { echo "$LAB_SCRIPT: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (lab/lab.sh needs it)"
# The project's virtualenv (make venv) provides ansible; keep its state inside the checkout, as the Makefile does.
if [ -x "$ROOT/.venv/bin/ansible-playbook" ]; then PATH="$ROOT/.venv/bin:$PATH"; fi
export HOME="${SCANFLEET_HOME:-$ROOT/.cache/home}" ANSIBLE_LOCAL_TEMP="${ANSIBLE_LOCAL_TEMP:-$ROOT/.cache/ansible/tmp}"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
# ssh ControlPersist masters of the script's runs live in a directory of their own: lab/lab.sh, when it ends
# any lab host, closes every master it finds in the shared directory (ssh -O check/exit ignore the host
# name), which cut our playbook runs short. Ours are closed by close_masters, before the hosts end.
export ANSIBLE_SSH_CONTROL_PATH_DIR="$LAB_CP_DIR" ANSIBLE_SSH_RETRIES="${ANSIBLE_SSH_RETRIES:-3}"
mkdir -p "$HOME" "$ANSIBLE_LOCAL_TEMP"
command -v ansible-inventory >/dev/null || die "ansible not found (run 'make venv')"

close_masters() {  # end the ssh masters of the script's own runs (only its hosts use $LAB_CP_DIR)
  local sock
  for sock in "$LAB_CP_DIR"/*; do
    [ -S "$sock" ] || continue
    ssh -o ControlPath="$sock" -O exit localhost >/dev/null 2>&1 || true
  done
}
