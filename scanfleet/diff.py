"""What changed between two scans: ``scanfleet diff OLD NEW``, and the "changes since RUN" of a run.

OLD and NEW are each a run directory (``RESULTS/RUN_ID``, holding the ``merged.xml`` written by the playbook's
report step or by ``scanfleet merge shards --out DIR``) or an nmap XML file (merged or not). Hosts are matched by
their first IP address (:func:`scanfleet.merge.host_key`), ports by (protocol, port); the rows are those of
:func:`scanfleet.report.iter_rows` (the service name prefixed ``ssl/`` as there), and "identified" is
:func:`scanfleet.merge.is_identified`.

Kinds of change (listed by address in numeric order: a host's own change first, then its ports by protocol and
port):

* ``host_up``: the host is up in NEW and was not (``old``: ``down``, or ``absent`` when OLD does not list it);
* ``host_down``: the host was up and is not (``new``: ``down``, or ``absent``);
* ``port_opened``: the port is open in NEW (state ``open``) and was not; ``old`` is its state in OLD: a listed
  state (``closed``, ``filtered``, ...), the state of the ``<extraports>`` group that holds it, ``not listed``
  (in neither: not scanned, or an nmap older than 7.90 without port lists), ``host down``/``host ...`` (the host
  was not up) or ``absent`` (OLD does not list the host); ``new`` is ``open``. A host that came up reports its
  open ports here too;
* ``port_closed``: the port was open and is not; ``new`` is its state in NEW, named as above;
* ``identified`` / ``unidentified``: open in both, and identified in NEW but not in OLD (or the reverse);
  ``old`` and ``new`` describe the service (``service product version``);
* ``service_changed``: open in both, identified alike, and the service name, product or version differs
  (``fields`` lists which); ``old``/``new`` describe the service.

Each port gives at most one change: opened/closed first, then identified/unidentified, then service_changed.

Outputs (:func:`write_changes`; ``scanfleet diff --format``):

* text: the summary line first (``changes since OLD_RUN: 1 host up, 1 down, 2 ports opened, 2 closed,
  2 services changed, 1 identified, 1 unidentified``), then one line per change;
* CSV: a header, then one row per change with the columns :data:`CSV_COLUMNS`: ``old_run``, ``new_run``,
  ``kind``, ``address``, ``hostname``, ``protocol``, ``port``, ``old``, ``new``, ``service`` (the port's service
  in NEW, or in OLD when it is no longer open there; empty for host changes);
* JSON, stable (keys never removed; new keys may be added)::

    {"format": "scanfleet-diff", "version": 1,
     "old": {"run": "RUN_ID or the file's path", "path": "…/merged.xml", "sha256": "…", "finished": 1796186529,
             "hosts_up": 2},
     "new": {… the same for NEW},
     "summary": "changes since RUN_ID: …",
     "counts": {"host_up": 1, "host_down": 1, "port_opened": 2, "port_closed": 2, "identified": 1,
                "unidentified": 1, "service_changed": 2},
     "changes": [{"kind": "port_opened", "address": "127.0.0.2", "hostname": "web.diff.test",
                  "protocol": "tcp", "port": 2121, "old": "closed", "new": "open", "fields": [],
                  "old_service": null,
                  "new_service": {"service": "ftp", "product": "vsftpd", "version": "3.0.3",
                                  "extrainfo": "", "identified": true}}, …]}

  ``run`` is the run id (from ``state.json``, else the directory's name) or, for an XML file outside a run
  directory, the path as given; ``finished`` is the runstats time (null when the file has none). For host
  changes ``protocol`` is ``""``, ``port`` null and both services null; a service is null where the port is
  not listed.

The run's changes (:func:`run_changes`, the ``compare_to`` option of the ``scan_report`` module): NEW is the
run's ``merged.xml``, OLD is a named earlier run (a run id under RESULTS, or a path) or, by default, the latest
earlier run with the same targets: a run directory under RESULTS with a ``merged.xml`` and a ``state.json`` of the
same targets fingerprint (:func:`scanfleet.state.run_fingerprints`, the options may differ), created before this
run, the one updated last (when its merged.xml cannot be read, the lines say so instead of failing the run's
report; a run named by the user fails with the error). The changes are written to ``RUN_DIR/changes.json``,
``.csv`` and ``.txt`` (mode 0600) only when they are not there yet for these two files (``changes.json`` records
both files' sha256): a second run of a finished run writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import ipaddress
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError
from scanfleet.files import atomic_write, sha256_file
from scanfleet.merge import host_key
from scanfleet.report import MERGED, csv_value, iter_rows
from scanfleet.state import RUN_ID, RunState, counted, load_state

FORMAT = "scanfleet-diff"
VERSION = 1
KINDS = ("host_up", "host_down", "port_opened", "port_closed", "identified", "unidentified", "service_changed")
CSV_COLUMNS = ("old_run", "new_run", "kind", "address", "hostname", "protocol", "port", "old", "new", "service")
SERVICE_FIELDS = ("service", "product", "version")
CHANGES = {"json": "changes.json", "csv": "changes.csv", "txt": "changes.txt"}
NO_EARLIER = "no earlier run with the same targets to compare to"
OFF = frozenset({"false", "none"})
SHOWN = 20  # change lines the play shows; changes.txt has them all
INPUT_FIX = "give a run directory (RESULTS/RUN_ID holding merged.xml) or an nmap XML file"


# --------------------------------------------------------------------------------------------------
# Reading a scan


@dataclasses.dataclass
class Host:
    state: str
    hostname: str = ""
    ports: dict[tuple[str, int | str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    extraports: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (state, proto, ports)


@dataclasses.dataclass
class Scan:
    """One side of a diff: where it came from and its hosts by address."""

    run: str
    path: Path
    hosts: dict[str, Host]
    finished: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"run": self.run, "path": str(self.path), "sha256": sha256_file(self.path),
                "finished": self.finished, "hosts_up": sum(1 for h in self.hosts.values() if h.state == "up")}


def _check_nmap_xml(path: Path, side: str) -> None:
    """Refuse a file that is not XML or whose root is not <nmaprun>, naming it and the fix."""
    try:
        with open(path, "rb") as f:
            for _, elem in ET.iterparse(f, events=("start",)):
                if elem.tag != "nmaprun":
                    raise ScanfleetError(f"{side} {path}: not nmap XML (root element <{elem.tag}>); {INPUT_FIX}")
                return
    except ET.ParseError as exc:
        raise ScanfleetError(f"{side} {path}: not nmap XML ({exc}); {INPUT_FIX}") from None
    except OSError as exc:
        raise ScanfleetError(f"{side} {path}: cannot read it ({exc.strerror}); {INPUT_FIX}") from None


def resolve_input(path: str | Path, side: str = "input") -> tuple[str, Path]:
    """(run label, nmap XML file) of a run directory or an XML file; SIDE (OLD, NEW) names it in errors."""
    given = Path(path)
    if not given.exists():
        raise ScanfleetError(f"{side} {given}: no such file or directory; {INPUT_FIX}")
    if given.is_dir():
        xml = given / MERGED
        if not xml.is_file():
            raise ScanfleetError(
                f"{side} {given}: a directory without {MERGED}; give a run directory whose results were merged "
                f"(the scan playbook's report step, or scanfleet merge shards --out {given}), or an nmap XML file")
        run_dir = given
    else:
        xml, run_dir = given, (given.parent if given.name == MERGED else None)
    state = None
    if run_dir is not None:
        with contextlib.suppress(ScanfleetError):
            state = load_state(run_dir)
    label = state.run_id if state is not None else (given.resolve().name if given.is_dir() else str(given))
    _check_nmap_xml(xml, side)
    return label, xml


def read_scan(label: str, xml: Path) -> Scan:
    """Read the nmap XML file XML (of run LABEL, see :func:`resolve_input`) into a :class:`Scan`, streaming."""
    hosts: dict[str, Host] = {}
    finished: list[int] = []
    current: list[Host] = []

    def on_element(elem: ET.Element) -> None:
        if elem.tag == "runstats":
            end = elem.find("finished")
            if end is not None and end.get("time", "").isdigit():
                finished.append(int(end.get("time", "")))
        if elem.tag != "host":
            return
        key = host_key(elem)
        status = elem.find("status")
        host = Host(state=status.get("state", "unknown") if status is not None else "unknown")
        host.extraports = [(group.get("state", ""), reason.get("proto", ""), reason.get("ports") or "")
                           for group in elem.iterfind("ports/extraports") for reason in group.iter("extrareasons")]
        current[:] = [host]
        if key is not None:
            hosts[key] = host

    for row in iter_rows(xml, on_element):
        host = current[0]
        host.hostname = row["hostname"]
        if row["port"] is not None:
            host.ports[(row["protocol"], row["port"])] = row
    return Scan(run=label, path=xml, hosts=hosts, finished=finished[-1] if finished else None)


def _in_ranges(port: int, ranges: str) -> bool:
    for part in ranges.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= port <= int(high if high.isdigit() else low):
            return True
    return False


def port_state(host: Host | None, key: tuple[str, int | str]) -> str:
    """How a port stands in one scan, in words (see the module docstring)."""
    if host is None:
        return "absent"
    if host.state != "up":
        return f"host {host.state}"
    row = host.ports.get(key)
    if row is not None:
        return row["state"] or "unknown"
    protocol, port = key
    for state, proto, ranges in host.extraports:
        if proto == protocol and isinstance(port, int) and _in_ranges(port, ranges):
            return state
    return "not listed"


# --------------------------------------------------------------------------------------------------
# Comparing


@dataclasses.dataclass
class Change:
    kind: str
    address: str
    hostname: str = ""
    protocol: str = ""
    port: int | str | None = None
    old: str = ""
    new: str = ""
    fields: list[str] = dataclasses.field(default_factory=list)
    old_service: dict[str, Any] | None = None
    new_service: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _service(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: row[k] for k in ("service", "product", "version", "extrainfo", "identified")}


def describe_service(service: Mapping[str, Any] | None) -> str:
    """``ssh OpenSSH 9.2p1``: service name, product and version; ``-`` when none is known."""
    if not service:
        return "-"
    return " ".join(str(service[k]) for k in SERVICE_FIELDS if service.get(k)) or "-"


def _address_order(address: str) -> tuple[int, Any, str]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (2, 0, address)
    return (ip.version, int(ip), address)


def _port_order(key: tuple[str, int | str]) -> tuple[str, int, str]:
    protocol, port = key
    return (protocol, port if isinstance(port, int) else -1, str(port))


def compare(old: Scan, new: Scan) -> list[Change]:
    """Every change from OLD to NEW (kinds and order: the module docstring)."""
    changes: list[Change] = []
    for address in sorted(old.hosts.keys() | new.hosts.keys(), key=_address_order):
        before, after = old.hosts.get(address), new.hosts.get(address)
        was_up = before is not None and before.state == "up"
        is_up = after is not None and after.state == "up"
        hostname = (after.hostname if after is not None and after.hostname else
                    before.hostname if before is not None else "")
        if is_up and not was_up:
            changes.append(Change("host_up", address, hostname, old=before.state if before else "absent", new="up"))
        elif was_up and not is_up:
            changes.append(Change("host_down", address, hostname, old="up", new=after.state if after else "absent"))
        old_ports = before.ports if was_up and before is not None else {}
        new_ports = after.ports if is_up and after is not None else {}
        for key in sorted(old_ports.keys() | new_ports.keys(), key=_port_order):
            o, n = old_ports.get(key), new_ports.get(key)
            o_open, n_open = bool(o and o["state"] == "open"), bool(n and n["state"] == "open")
            change = Change("", address, hostname, key[0], key[1], old_service=_service(o), new_service=_service(n))
            if n_open and not o_open:
                change.kind, change.old, change.new = "port_opened", port_state(before, key), "open"
            elif o_open and not n_open:
                change.kind, change.old, change.new = "port_closed", "open", port_state(after, key)
            elif o_open and n_open:
                assert o is not None and n is not None
                change.old, change.new = describe_service(change.old_service), describe_service(change.new_service)
                if bool(o["identified"]) != bool(n["identified"]):
                    change.kind = "identified" if n["identified"] else "unidentified"
                else:
                    change.fields = [k for k in SERVICE_FIELDS if o[k] != n[k]]
                    change.kind = "service_changed" if change.fields else ""
            if change.kind:
                changes.append(change)
    return changes


def counts(changes: Sequence[Change]) -> dict[str, int]:
    result = dict.fromkeys(KINDS, 0)
    for change in changes:
        result[change.kind] += 1
    return result


def summary_line(old_run: str, changes: Sequence[Change]) -> str:
    """``changes since RUN: 1 host up, 1 down, 2 ports opened, 2 closed, 2 services changed, 1 identified, 1
    unidentified``."""
    c = counts(changes)
    return (f"changes since {old_run}: {counted(c['host_up'], 'host')} up, {c['host_down']} down, "
            f"{counted(c['port_opened'], 'port')} opened, {c['port_closed']} closed, "
            f"{counted(c['service_changed'], 'service')} changed, {c['identified']} identified, "
            f"{c['unidentified']} unidentified")


# How each kind of change reads (change_line).
LINES = {
    "host_up": "{where}: host up (was {old})",
    "host_down": "{where}: host {new} (was up)",
    "port_opened": "{where}: opened (was {old}): {new_service}",
    "port_closed": "{where}: no longer open (now {new}): was {old_service}",
    "identified": "{where}: identified: {old} -> {new}",
    "unidentified": "{where}: no longer identified: {old} -> {new}",
    "service_changed": "{where}: {fields} changed: {old} -> {new}",
}


def change_line(change: Change) -> str:
    """One change for people."""
    where = change.address
    if change.port is not None:
        where += f":{change.port}/{change.protocol}"
    if change.hostname:
        where += f" ({change.hostname})"
    words = {"old": change.old, "new": change.new}
    words = {k: "not in the scan" if v == "absent" else v for k, v in words.items()}
    return LINES[change.kind].format(where=where, fields=", ".join(change.fields), **words,
                                     old_service=describe_service(change.old_service),
                                     new_service=describe_service(change.new_service))


# --------------------------------------------------------------------------------------------------
# Outputs


@dataclasses.dataclass
class Diff:
    old: Scan
    new: Scan
    changes: list[Change]

    @property
    def summary(self) -> str:
        return summary_line(self.old.run, self.changes)

    def text_lines(self, limit: int | None = None) -> list[str]:
        shown = self.changes if limit is None else self.changes[:limit]
        lines = [self.summary, *(f"  {change_line(c)}" for c in shown)]
        if len(shown) < len(self.changes):
            lines.append(f"  ... {len(self.changes) - len(shown)} more (changes.txt has them all)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "old": self.old.describe(), "new": self.new.describe(),
                "summary": self.summary, "counts": counts(self.changes),
                "changes": [c.to_dict() for c in self.changes]}

    def csv_rows(self) -> Iterator[list[str]]:
        yield list(CSV_COLUMNS)
        for c in self.changes:
            service = c.new_service if c.kind != "port_closed" else c.old_service
            values = {"old_run": self.old.run, "new_run": self.new.run, "kind": c.kind, "address": c.address,
                      "hostname": c.hostname, "protocol": c.protocol, "port": c.port, "old": c.old, "new": c.new,
                      "service": describe_service(service) if c.port is not None and service else ""}
            yield [csv_value(values[k]) for k in CSV_COLUMNS]

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if fmt == "csv":
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(self.csv_rows())
            return out.getvalue()
        return "\n".join(self.text_lines()) + "\n"


def _read(side: str, label: str, xml: Path) -> Scan:
    try:
        return read_scan(label, xml)
    except ScanfleetError as exc:  # damaged after its start tag: the message names the file and the fix
        raise ScanfleetError(f"{side} {exc}") from None


def diff(old: str | Path, new: str | Path) -> Diff:
    """Compare two scans (run directories or nmap XML files)."""
    old_label, old_xml = resolve_input(old, "OLD")
    new_label, new_xml = resolve_input(new, "NEW")
    if old_xml.resolve() == new_xml.resolve():
        raise ScanfleetError(f"OLD {old} and NEW {new} are the same scan ({old_xml}); give an earlier run as OLD "
                             "and a later one as NEW")
    before, after = _read("OLD", old_label, old_xml), _read("NEW", new_label, new_xml)
    return Diff(before, after, compare(before, after))


def write_changes(result: Diff, directory: Path) -> dict[str, str]:
    """Write changes.json, changes.csv and changes.txt into DIRECTORY (atomically, mode 0600)."""
    for fmt, name in CHANGES.items():
        with atomic_write(Path(directory) / name, mode=0o600, newline="") as f:
            f.write(result.render("text" if fmt == "txt" else fmt))
    return {fmt: str(Path(directory) / name) for fmt, name in CHANGES.items()}


# --------------------------------------------------------------------------------------------------
# A run's changes since an earlier run


def compare_choice(value: Any) -> str | None:
    """None: do not compare (``false``, ``none``, null); ``""``: the latest earlier run with the same targets;
    else a run id or a path."""
    if value is None or value is False:
        return None
    text = str(value).strip()
    return None if text.lower() in OFF else text


def earlier_run(results: Path, state: RunState) -> Path | None:
    """The latest run under RESULTS with the same targets as STATE, created before it, with a merged.xml."""
    best: tuple[float, str, Path] | None = None
    with contextlib.suppress(OSError):
        for directory in Path(results).iterdir():
            if directory.name == state.run_id or not (directory / MERGED).is_file():
                continue
            try:
                other = load_state(directory)
            except ScanfleetError:  # another run's unreadable state: not a candidate, not this run's failure
                continue
            if (other is None or other.targets_fingerprint != state.targets_fingerprint
                    or other.created >= state.created):
                continue
            if best is None or (other.updated, other.run_id) > best[:2]:
                best = (other.updated, other.run_id, directory)
    return best[2] if best else None


def baseline(results: Path, state: RunState, choice: str) -> Path | None:
    """The run directory or file to compare STATE's run with (None: no earlier run with the same targets)."""
    if choice == "":
        return earlier_run(results, state)
    if choice == state.run_id:
        raise ScanfleetError(f"compare to {choice!r} (nmap_scan_compare_to) names this run itself; name an earlier "
                             "run, or leave it empty for the latest earlier run with the same targets")
    named = Path(results) / choice
    if RUN_ID.fullmatch(choice) and named.is_dir():
        return named
    if "/" in choice or Path(choice).exists():
        return Path(choice)
    raise ScanfleetError(f"compare to {choice!r} (nmap_scan_compare_to): no run {choice} in {results} and no such "
                         "path; give an earlier run id, the path of a run directory or nmap XML file, an empty "
                         "string for the latest earlier run with the same targets, or none")


def run_changes(*, results: str | Path, run_id: str, compare_to: Any = "", write: bool = True) -> dict[str, Any]:
    """The changes of run RUN_ID since an earlier run (see the module docstring); written unless WRITE is false
    or they are already there for the same two files. Returns what the play shows (``lines``: the summary line,
    at most :data:`SHOWN` changes), ``changed`` (files written, or to be written in check mode) and where."""
    results = Path(results)
    choice = compare_choice(compare_to)
    result: dict[str, Any] = {"changed": False, "compared_to": None, "old": None, "lines": [], "counts": None,
                              "files": None}
    directory = results / run_id
    state = load_state(directory)
    if choice is None or state is None or not (directory / MERGED).is_file():
        return result
    old = baseline(results, state, choice)
    if old is None:
        result["lines"] = [NO_EARLIER]
        return result
    try:
        found = diff(old, directory)
    except ScanfleetError as exc:
        if choice:  # a run the user named: their input is wrong
            raise
        # the run picked by default: an unreadable earlier report must not fail this run's report
        result["lines"] = [f"changes since {old.name} not computed: {exc}"]
        return result
    data = found.to_dict()
    recorded: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads((directory / CHANGES["json"]).read_text(encoding="utf-8"))
    current = (isinstance(recorded, dict) and recorded.get("old") == data["old"] and recorded.get("new") == data["new"]
               and all((directory / name).is_file() for name in CHANGES.values()))
    result.update(compared_to=found.old.run, old=str(found.old.path), lines=found.text_lines(SHOWN),
                  counts=data["counts"], changed=not current,
                  files={fmt: str(directory / name) for fmt, name in CHANGES.items()})
    if write and not current:
        write_changes(found, directory)
    return result


# --------------------------------------------------------------------------------------------------
# Command line


def _cmd_diff(args: argparse.Namespace) -> int:
    result = diff(args.old, args.new)
    text = result.render(args.format)
    if args.out:
        with atomic_write(Path(args.out), newline="") as f:
            f.write(text)
        print(result.summary, file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if result.changes else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``scanfleet diff OLD NEW`` (called by scanfleet.cli)."""
    p = sub.add_parser(
        "diff", help="what changed between two scans (hosts, ports, services)",
        description="Compare two scans: OLD and NEW are each a run directory (RESULTS/RUN_ID with merged.xml) or "
                    "an nmap XML file. Reports hosts up or down that were not, ports opened and closed, service, "
                    "product or version changes, and ports that became identified or unidentified. Exit status: 0 "
                    "no change, 1 changes, 2 bad input (as diff and ndiff).")
    p.add_argument("old", metavar="OLD", help="the earlier scan: a run directory or an nmap XML file")
    p.add_argument("new", metavar="NEW", help="the later scan: a run directory or an nmap XML file")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text", help="output format (default text)")
    p.add_argument("--out", metavar="FILE", help="write the output to FILE (the summary line goes to stderr)")
    p.set_defaults(func=_cmd_diff)

