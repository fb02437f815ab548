#!/usr/bin/env bash
# molecule/default's prepare (on the controller): a release-like source archive of nmap 7.991 for the role's
# `nmap_build_source: archive`, made from the tree of nmap's git repository at tag v7.991 (the only 7.991 code
# at hand: Debian's 7.991 files answer 404 on the mirror; provenance in tests/conftest.py NMAP_GIT_TREES and in
# the README.md beside the file), with 7.95's nmap-os-db added: the tree lacks that file, which `make install`
# copies and only -O reads, so OS detection of this build uses 7.95's fingerprints.
#
#   release_archive.sh TREE_ARCHIVE TREE_SHA256 DSC_795 OUT
#
# TREE_ARCHIVE must have the pinned sum TREE_SHA256; DSC_795 is the .dsc of Debian's 7.95 source (fetched by
# `python -m scanfleet source fetch-debian trixie DIR`: apt verified it against the signed Sources index), whose
# orig tarball beside it is checked against the .dsc again and gives nmap-os-db. Writes OUT (a .tar.gz with one
# top directory nmap-7.991/, made reproducibly: names sorted, owner root, the mtimes of the two sources kept) and
# OUT.sha256 (its sum, computed now: the scenario pins nmap_build_sha256 to it). Prints that sum.
set -euo pipefail

die() { echo "release_archive.sh: $*" >&2; exit 1; }
[ $# -eq 4 ] || die "usage: $0 TREE_ARCHIVE TREE_SHA256 DSC_795 OUT"
tree_archive=$1 tree_sha256=$2 dsc=$3 out=$4

[ -f "$tree_archive" ] || die "nmap 7.991 source $tree_archive not found: set SCANFLEET_NMAP_SOURCES to the directory \
holding nmap-7.991-src.tar.xz (on the lab machine: /work/shared/sources)"
actual=$(sha256sum "$tree_archive" | cut -d' ' -f1)
[ "$actual" = "$tree_sha256" ] || die "$tree_archive has sha256 $actual, not $tree_sha256 (git archive of nmap's tag \
v7.991, tests/conftest.py): replace it with that file"

[ -f "$dsc" ] || die "Debian's 7.95 .dsc $dsc not found"
orig=$(awk '/^Checksums-Sha256:/ {on = 1; next} on && /^ / {if ($3 ~ /[.]orig[.]tar[.]/) print $3; next} {on = 0}' "$dsc")
[ -n "$orig" ] || die "$dsc lists no orig tarball"
want=$(awk -v f="$orig" '/^Checksums-Sha256:/ {on = 1; next} on && /^ / {if ($3 == f) print $1; next} {on = 0}' "$dsc")
have=$(sha256sum "$(dirname "$dsc")/$orig" | cut -d' ' -f1)
[ "$have" = "$want" ] || die "$(dirname "$dsc")/$orig has sha256 $have, not $want as $dsc says: delete $(dirname "$dsc") \
and run again"

work=$(mktemp -d "${TMPDIR:-/tmp}/scanfleet-release-XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xJf "$tree_archive" -C "$work"
[ -f "$work/nmap-7.991/nmap.h" ] || die "$tree_archive has no nmap-7.991/nmap.h: not the git archive of v7.991"
[ ! -e "$work/nmap-7.991/nmap-os-db" ] || die "$tree_archive has an nmap-os-db already: this script expects the tree without it"
tar -xJf "$(dirname "$dsc")/$orig" -C "$work" --wildcards '*/nmap-os-db'
os_db=$(find "$work" -mindepth 2 -maxdepth 2 -name nmap-os-db ! -path "$work/nmap-7.991/*")
[ -n "$os_db" ] || die "$orig has no nmap-os-db"
mv "$os_db" "$work/nmap-7.991/nmap-os-db"
touch -r "$work/nmap-7.991/nmap.h" "$work/nmap-7.991"  # back to the commit time git archive gave every entry

mkdir -p "$(dirname "$out")"
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
  -cf - nmap-7.991 | gzip -n > "$out.tmp"
mv "$out.tmp" "$out"
sha256sum "$out" | cut -d' ' -f1 > "$out.sha256"
cat "$out.sha256"
