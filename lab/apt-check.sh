#!/usr/bin/env bash
# Resolve a list of Debian packages on this host without installing anything: apt-get update, then every name
# looked up in the indexes, then `apt-get install --simulate` of the whole list (its dependencies must resolve).
# Runs on a lab host (its apt goes through the lab's apt proxy, lab/lab.sh) as root; molecule/default's verify
# runs it on each scanner host with the Makefile's list for that host's release (make -s apt-packages
# RELEASE=...), so that `make deps` is known to work on a Debian release without a controller of that release.
#
#   apt-check.sh PACKAGE...     exit 0: all resolve; 1: the missing or unresolvable ones are named; 2: usage
#
# Output (stdout): "release: CODENAME", "proxy: URL" (empty: none configured), then "ok: N packages" or the
# errors, one a line ("missing in CODENAME: NAME").
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
echo "release: $release"
# The proxy apt uses here (the lab's: lab/lab.sh writes it into every base's apt.conf.d).
proxy=$(apt-config dump Acquire::http::Proxy | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p')
echo "proxy: $proxy"

out=$(apt-get update -qq 2>&1) || { echo "apt-get update failed on $release (proxy '$proxy'): $out"; exit 1; }

missing=()
for pkg in "$@"; do
  # A name with no candidate (absent, or only mentioned by other packages) cannot be installed.
  candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  for pkg in "${missing[@]}"; do echo "missing in $release: $pkg"; done
  echo "${#missing[@]} of $# packages cannot be installed on $release: fix the Makefile's APT_PACKAGES_$release"
  exit 1
fi

if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install --simulate --no-install-recommends -qq "$@" 2>&1); then
  echo "apt-get install --simulate of the list failed on $release:"
  echo "$out" | grep -E '^(E:| )' || echo "$out" | tail -n 20
  echo "fix the Makefile's APT_PACKAGES_$release"
  exit 1
fi
echo "ok: $# packages resolve on $release ($(echo "$out" | grep -c '^Inst ' || true) to install)"
