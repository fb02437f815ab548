r"""Parse, merge and validate nmap ``nmap-service-probes`` files.

The stock file
==============

``parse(text, path)`` turns an ``nmap-service-probes`` file into a :class:`ProbesFile`: the lines
before the first ``Probe`` line (comments and the ``Exclude`` directive) and the probes in file order.
Each :class:`Probe` keeps its ``Probe`` line and every line of its section (directives, ``match`` and
``softmatch`` rules, comments, blank lines) as :class:`Line` objects holding the raw text and the
line's :class:`Origin` (path, line number).  ``serialize(parse(text)) == text`` byte for byte.

The grammar accepted is what both nmap 7.93 (PCRE) and 7.95+ (PCRE2) accept; where the two differ
(nmap 7.95 wants a space after a field's flags and at most three flag letters) the stricter rule is
used, so that a file accepted here loads in every supported nmap.  One exception: ``cpe:`` with
another delimiter than ``/``, which 7.93's own file has once, is parsed and reported by the
pre-check (7.95 rejects it).  Like nmap, a line is a comment only if ``#`` is its first character,
and a blank line must be really empty.  There are no trailing comments.

Custom rule files (``files/probes/*.probes``)
=============================================

Rule files add ``match``/``softmatch`` lines (and whole new probes) to the stock file.  They are
merged in sorted file-name order.  Example::

    # Comments (first character '#') and blank lines may go anywhere; they are not copied.
    # Rules before any Probe line are rules of the NULL probe (banners sent on connect):
    match myservice m|^MYSERVICE ([\d.]+)\r\n| p/My service/ v/$1/

    # A Probe line without a probe string: the rules that follow go to that existing probe.
    Probe TCP GetRequest
    match http m|^HTTP/1\.[01] \d\d\d .*\r\nServer: MyHTTPd/([\d.]+)\r\n|s p/MyHTTPd/ v/$1/

    # A Probe line with a probe string defines a new probe, with its own directives
    # (ports, sslports, rarity, totalwaitms, tcpwrappedms, fallback) and rules.
    Probe TCP MyHello q|HELLO\r\n|
    rarity 8
    ports 7777
    match myhello m|^HELLO-BACK| p/My hello server/

* ``match``/``softmatch`` lines use exactly nmap's syntax (``m<d>regex<d>[is]``, then any of
  ``p v i h o d`` with any delimiter and ``cpe:/.../[a]``).
* ``Probe PROTO NAME`` without a probe string must name a probe of the stock file (or one defined
  by an earlier rule file); otherwise it is an error that lists similar names.
* A full ``Probe`` line whose protocol and name already exist is only a reference if its probe
  string is the same (compared after unescaping); a different string is an error.  Directives are
  only allowed after a ``Probe`` line that defines a new probe: stock probes keep their directives.
* ``Exclude`` is not allowed in rule files (see the ``drop_exclude`` option).
* A trailing ``\r`` (file edited on Windows) is dropped; lines that hold only whitespace count as
  blank.

Merging
=======

``merge(stock, rules, drop_exclude=, totalwaitms=, tcpwrappedms=)`` puts each rule file's rules for
a probe in a block framed by marker comments (``# scanfleet: begin rules from seed.probes`` ...
``# scanfleet: end``), right after the ``Probe`` line and its directives, i.e. AHEAD of that probe's
stock rules: nmap tries a probe's rules in file order and the first hit wins, so custom rules take
precedence.  Several files' blocks for one probe follow each other in file-name order.  New probes
are appended after the last stock probe (see the comment in ``merge`` for why).

Options: ``drop_exclude`` removes the ``Exclude`` directive; ``totalwaitms=N`` gives every probe
(stock and new) that value, rewriting the directive or adding it where missing (nmap's default is
5000); ``tcpwrappedms=N`` rewrites that directive wherever it is and adds it to the NULL probe if
missing (nmap uses it for the NULL probe only).  A changed stock line becomes a marker block that
records it (``# scanfleet: was totalwaitms 6000``).  Without options only rules are added: every
other byte of the stock file stays as it was.

Merging first removes the blocks of an earlier merge (restoring the recorded lines), so merging an
already-merged file is idempotent (``merge(merge(s)) == merge(s)``) and ``unmerge(merge(s)) == s``.
Hand edits inside marker blocks are lost on the next merge.

Checking and validating
=======================

``precheck_file`` / ``precheck_rules`` find obvious problems in Python (directive values, regex
syntax as far as Python's ``re`` agrees with PCRE, a pattern that can match the empty string (fatal
from nmap 7.991 on), ``$N`` beyond the regex's groups, unknown fallbacks, lines too long for nmap's
line buffer).  ``validate_with_nmap`` is the authoritative check: a real nmap loads the file (in a
fresh network namespace holding only loopback, scanning a closed port there, so nothing leaves the
host) and its complaint, which names a line of the merged file, is mapped back to the rule file's
``path:line``.

API for the Ansible plugins: ``merge_files(stock_path, rule_paths, **options) -> MergeResult``
(``.text``, ``.origins``, ``.stats``, ``.problems``), ``write_merged(result, out, nmap_binary)``
(atomic, validates first), ``validate_with_nmap(path, nmap_binary, origins)`` and
``rule_changes(before, after)`` (which probes' rules a new file changes; ``ansible_diff`` renders them for
``--diff``).

Command line::

    scanfleet probes merge --stock FILE --rules DIR_OR_FILE... [--drop-exclude]
                           [--totalwaitms MS] [--tcpwrappedms MS] -o OUT [--nmap BIN]
    scanfleet probes check [--stock FILE] FILE...       (FILE *.probes: rule file, else full file)
    scanfleet probes validate --nmap BIN FILE
    scanfleet probes harvest RUN_DIR_OR_MERGED_XML [--out FILE] [--json]   (see scanfleet.probes.harvest)
    scanfleet probes null-only FILE -o OUT [--nmap BIN]  (pass 2 of a scan: :mod:`scanfleet.probes.null_only`)
"""

from __future__ import annotations

from scanfleet.probes.check import Problem, check_line, compile_regex, precheck_file, precheck_rules, raise_on_errors
from scanfleet.probes.diff import ProbeChange, ansible_diff, rule_changes
from scanfleet.probes.diff import summary as diff_summary
from scanfleet.probes.merging import MergeResult, MergeStats, merge, merge_files, unmerge, write_merged
from scanfleet.probes.model import (
    DEFAULT_TOTALWAITMS,
    GENERATED,
    PROBE_DIRECTIVES,
    Line,
    Match,
    Origin,
    Probe,
    ProbesFile,
    RuleFile,
    encode,
    serialize,
)
from scanfleet.probes.null_only import null_only, write_null_only
from scanfleet.probes.parsing import collect_rule_files, parse, parse_file, parse_rules, parse_rules_file, read_text
from scanfleet.probes.validate import explain_rejection, nmap_check_command, validate_with_nmap

__all__ = [
    "DEFAULT_TOTALWAITMS", "GENERATED", "PROBE_DIRECTIVES", "Line", "Match", "MergeResult", "MergeStats", "Origin",
    "Probe", "ProbeChange", "ProbesFile", "Problem", "RuleFile", "ansible_diff", "check_line", "collect_rule_files",
    "compile_regex", "diff_summary", "encode", "explain_rejection", "merge", "merge_files", "nmap_check_command",
    "null_only",
    "parse", "parse_file", "parse_rules", "parse_rules_file", "precheck_file", "precheck_rules", "raise_on_errors",
    "read_text", "rule_changes", "serialize", "unmerge", "validate_with_nmap", "write_merged",
    "write_null_only",
]
