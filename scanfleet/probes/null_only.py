"""The probes file of a scan's second pass: the NULL probe alone (``scanfleet probes null-only``).

The second pass of a scan (issue 12, :mod:`scanfleet.recover`) scans again only the open ports the fast pass left
unidentified, with a banner wait long enough for greeting pauses (``SCANFLEET_SERVICE_WAIT_MS``, the build's
patch 60-runtime-waits). What a greeting pause hides is the banner a service sends on connect, which only the NULL
probe (``Probe TCP NULL q||``) waits for: every other probe sends a request first. A file holding only that probe,
with all its ``match`` and ``softmatch`` lines (nmap's and those our rule files merged ahead of them), costs one
wait per port instead of one per probe.

The file is cut from a merged probes file (:func:`scanfleet.probes.merge_files`): its preamble (comments and the
``Exclude`` directive, so pass 2 skips the ports pass 1 skipped) and its NULL probe section, every line as it was
and with its origin, so that a complaint of nmap about a line names the rule file it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.probes.merging import MergeResult, MergeStats, write_merged
from scanfleet.probes.model import ProbesFile
from scanfleet.probes.parsing import parse_file


def null_only(pf: ProbesFile) -> ProbesFile:
    """PF with its NULL probe as the only probe (preamble kept); an error when PF has no NULL probe."""
    null = pf.null_probe
    if null is None or null.protocol != "TCP":
        raise ScanfleetError(f"{pf.path}: no 'Probe TCP NULL q||' section; give a full nmap-service-probes file "
                             "(the build's own, or one merged by scanfleet probes merge)")
    return ProbesFile(path=pf.path, preamble=list(pf.preamble), probes=[null])


def write_null_only(source: str | os.PathLike[str], out: str | os.PathLike[str],
                    nmap_binary: str | None = None) -> str:
    """Write the NULL-only file of the probes file SOURCE to OUT (atomically; with NMAP_BINARY, only if that nmap
    loads it). Returns a one-line summary."""
    pf = null_only(parse_file(source))
    lines = pf.lines()
    result = MergeResult(text="".join(line.text for line in lines), origins=[line.origin for line in lines],
                         stats=MergeStats(), parsed=pf)
    write_merged(result, Path(out), nmap_binary)
    rules = pf.probes[0].matches
    soft = sum(m.soft for m in rules)
    return f"{out}: the NULL probe of {source} alone, {len(rules) - soft} match and {soft} softmatch lines"
