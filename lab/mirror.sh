#!/usr/bin/env bash
# Print the Debian mirror this machine's apt uses (the logic lives in scanfleet.source.apt_mirror).
# SCANFLEET_MIRROR overrides it. Sites use their own mirrors: the lab follows this machine's.
set -euo pipefail
[ -n "${SCANFLEET_MIRROR:-}" ] && { echo "$SCANFLEET_MIRROR"; exit 0; }
top=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$top/.venv/bin/python" ] || { echo "mirror.sh: no virtualenv at $top/.venv; run 'make venv'" >&2; exit 1; }
exec "$top/.venv/bin/python" -m scanfleet source mirror
