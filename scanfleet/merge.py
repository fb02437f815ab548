"""Merge the nmap XML outputs of scanfleet shards into one nmap XML document, streaming.

Each scanner host runs ``nmap -oA`` on its shard of the targets; the controller fetches every shard's
XML and calls :func:`merge`. The result is a normal nmap XML document (valid against nmap.dtd) that
nmap.xsl, ndiff and other nmap tools read; :mod:`scanfleet.report` turns it into JSON, CSV, HTML and
a summary.

Streaming, two passes over the inputs (``xml.etree.ElementTree.iterparse``, every element dropped as
soon as it is handled):

* pass 1 (:func:`inspect_input`) reads each input's header (``nmaprun``, ``scaninfo``), its
  ``runstats`` and the address of every host, and notes the addresses seen more than once;
* pass 2 streams every host whose address is unique straight to the output, and buffers only the
  duplicated ones: a duplicated host is folded into one element as its occurrences arrive and written
  at its last occurrence. Memory is bounded by the duplicated hosts still waiting for an occurrence,
  plus one set entry per address (needed to find the duplicates).

Merge rules
-----------
* Hosts are identified by their first IP address (``addrtype`` ipv4/ipv6, normalised with
  :mod:`ipaddress`). Each address appears in the output exactly once.
* Host state of a merged host: ``up`` if any occurrence is up (else down > unknown > skipped); the
  best occurrence gives the host's single-valued children (status, os, uptime, times, ...; from the
  next occurrence when it lacks one). Addresses (e.g. a MAC seen by one scanner), hostnames and
  host scripts are united. ``starttime`` is the earliest, ``endtime`` the latest, ``timedout`` is
  true if any occurrence timed out, and ``comment`` names the shards the host was merged from.
* Ports are united by (protocol, portid). On conflict one whole ``<port>`` element wins, by in order:
  port state (``open`` > ``closed`` > ``unfiltered`` > ``open|filtered`` > ``closed|filtered`` >
  ``filtered`` > anything else: a real answer beats silence), then service identification (a probed
  identification, see :func:`is_identified`, > another probed result such as
  tcpwrapped > a table guess > no service), then ``conf``, then how many of product, version and
  extrainfo are known, then the number of scripts; on a full tie the earlier input wins.
* ``<extraports>`` (the "Not shown: N closed ports" groups) are merged exactly from their
  ``extrareasons ports=`` lists, with the same state order: per port the best state wins, whether
  the port was listed or in a group (a port closed in one shard's group beats the same port listed
  as filtered by another shard); on equal states a listed port wins (it carries details) and leaves
  the groups. If a group carries no port lists (nmap older than 7.90), the groups of the earliest
  occurrence that has some are kept as they are and listed ports are merged as above.
* ``scaninfo``: one per (type, protocol), services united. ``verbose``/``debugging``: the highest.
  ``target``, ``prescript``, ``postscript`` and ``output`` elements of every input are kept;
  ``taskbegin``/``taskprogress``/``taskend``/``hosthint`` (progress chatter) are dropped.
* Each input's command line is kept in one ``<output type="interactive">`` element per input (with
  its label, file, completeness, times and exit status); the root ``args`` is
  ``scanfleet merge FILE...``.
* ``runstats``: ``start`` is the earliest input start; ``finished time`` is the latest input end (its
  runstats time, or for a truncated input the latest time recorded in it); ``elapsed`` = end - start;
  ``exit`` is ``success`` only if every input is complete and finished with ``success``, otherwise
  ``error`` with an ``errormsg`` naming the inputs. Hosts: ``up``/``down`` count the merged hosts, plus
  the hosts an input counted but did not list (nmap lists down hosts only with ``-v``, and with
  ``--open`` omits up hosts without open ports), which cannot be de-duplicated; ``total`` likewise.

Truncated and bad inputs
------------------------
An input that ends before ``</nmaprun>`` (nmap killed mid-scan, copy interrupted) is salvaged: every
complete ``<host>`` element is kept, the partial one is dropped, and its :class:`ShardReport` says
``complete=False``, how many hosts were kept, their addresses (so the caller can rescan the others)
and the address of the dropped partial host when it was readable. A 0-byte file is treated the same
way, as a run killed before it wrote anything (no hosts), and so is a file cut before the end of its
``<nmaprun>`` start tag. A file that is not XML (text, whitespace only), is XML but not an nmap run,
is corrupted in the middle, or holds two runs (``--append-output``) raises
:class:`scanfleet.ScanfleetError` naming the file, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from scanfleet import ScanfleetError
from scanfleet.files import atomic_path

ROOT = Path(__file__).resolve().parent.parent

# Where nmap.dtd / nmap.xsl are looked for when no path is given.
NMAP_DATA_DIRS = (
    Path("/usr/share/nmap"),
    Path("/usr/local/share/nmap"),
    ROOT / ".cache" / "src" / "bookworm" / "tree" / "docs",
)

# expat errors that only happen when the input ends too early: the file is truncated.
_PREMATURE_END = frozenset(
    expat.errors.codes[message]
    for message in (
        expat.errors.XML_ERROR_NO_ELEMENTS,
        expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR,
        expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)

# Port states, best first (see the module docstring).
_PORT_STATE_ORDER = ("open", "closed", "unfiltered", "open|filtered", "closed|filtered", "filtered")
_HOST_STATE_RANK = {"up": 3, "down": 2, "unknown": 1, "skipped": 0}

# Order of a merged host's children (nmap's own order; the DTD needs status, address first, times last).
_HOST_CHILD_ORDER = ("status", "address", "hostnames", "smurf", "ports", "os", "distance", "uptime",
                     "tcpsequence", "ipidsequence", "tcptssequence", "hostscript", "trace")
# Children of <nmaprun> copied from every input to the output, in place.
_PASS_THROUGH = frozenset({"target", "prescript", "postscript", "output"})


NOT_IDENTIFIED_NAMES = frozenset({"", "unknown", "tcpwrapped"})
SUMMARY_FILE = "summary.json"


def is_identified(service: Mapping[str, str] | None) -> bool:
    """True when nmap's service detection matched the service (rule in the module docstring)."""
    if not service:
        return False
    name = (service.get("name") or "").strip()
    return (service.get("method") == "probed" and name.lower() not in NOT_IDENTIFIED_NAMES
            and not name.endswith("?"))


# --------------------------------------------------------------------------------------------------
# Per-input report (pass 1)


@dataclasses.dataclass
class ShardReport:
    """What one input holds; filled by :func:`inspect_input` (pass 1 of the merge)."""

    path: Path
    label: str
    complete: bool = True  # False: the file ends before </nmaprun> (hosts salvaged)
    problem: str | None = None  # why it is not complete, for people
    args: str | None = None
    version: str | None = None
    xmloutputversion: str | None = None
    start: int | None = None
    end: int | None = None  # runstats finished time
    elapsed: float | None = None  # runstats elapsed, seconds
    last_seen: int | None = None  # latest time recorded in the file (= end when complete)
    exit: str | None = None  # runstats exit: success / error
    errormsg: str | None = None
    runstats_hosts: dict[str, int] | None = None  # runstats up/down/total
    hosts_kept: int = 0  # complete <host> elements
    addresses: list[str] = dataclasses.field(default_factory=list)  # their addresses, in file order
    listed_states: dict[str, int] = dataclasses.field(default_factory=dict)  # host state -> count
    partial_host: str | None = None  # address of the dropped partial host, when readable
    scaninfo: list[dict[str, str]] = dataclasses.field(default_factory=list)
    verbose: int = 0
    debugging: int = 0

    @property
    def status(self) -> str:
        return "complete" if self.complete else "truncated"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (used in summary.json)."""
        return {
            "label": self.label,
            "path": str(self.path),
            "status": self.status,
            "complete": self.complete,
            "problem": self.problem,
            "args": self.args,
            "version": self.version,
            "start": self.start,
            "end": self.end,
            "elapsed": self.elapsed,
            "last_seen": self.last_seen,
            "exit": self.exit,
            "errormsg": self.errormsg,
            "runstats_hosts": self.runstats_hosts,
            "hosts_kept": self.hosts_kept,
            "addresses": list(self.addresses),
            "partial_host": self.partial_host,
        }


@dataclasses.dataclass
class MergeResult:
    """What :func:`merge` wrote."""

    out: Path
    shards: list[ShardReport]
    hosts_up: int
    hosts_down: int
    hosts_total: int
    start: int | None
    end: int
    elapsed: float
    exit: str  # success / error
    errormsg: str | None
    validated: bool  # checked with xmllint against nmap.dtd

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "hosts": {"up": self.hosts_up, "down": self.hosts_down, "total": self.hosts_total},
            "start": self.start,
            "end": self.end,
            "elapsed": self.elapsed,
            "exit": self.exit,
            "errormsg": self.errormsg,
            "validated": self.validated,
            "shards": [shard.to_dict() for shard in self.shards],
        }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def host_key(host: ET.Element) -> str | None:
    """The de-duplication key of a ``<host>``: its first IPv4/IPv6 address, normalised."""
    for address in host.iter("address"):
        if address.get("addrtype", "ipv4") in ("ipv4", "ipv6"):
            addr = address.get("addr", "")
            try:
                return str(ipaddress.ip_address(addr))
            except ValueError:
                return addr or None
    return None


def _host_state(host: ET.Element) -> str:
    status = host.find("status")
    return status.get("state", "unknown") if status is not None else "unknown"


def _plausible_nmap_prefix(path: Path) -> bool:
    """True when a file that ended before its root element could be the start of nmap XML."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head == b"" or (head.lstrip().startswith(b"<?xml") and b"nmaprun" in head) or (
        head.lstrip().startswith(b"<nmaprun"))


def _children(path: Path, shard: ShardReport) -> Iterator[tuple[str, ET.Element]]:
    """Stream one nmap XML file: ("root", nmaprun) first, then ("child", element) for every complete
    child of ``nmaprun``; each child is dropped from the tree once the consumer moves on.

    Sets ``shard.complete``/``shard.problem``/``shard.partial_host`` when the file is truncated;
    raises ScanfleetError when it is not nmap XML.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, the generator may be abandoned
    except OSError as exc:
        raise ScanfleetError(f"{path}: cannot read it ({exc.strerror}); check the path and permissions"
                             ) from None
    with f:
        root: ET.Element | None = None
        depth = 0
        in_host_address: str | None = None  # first IP address of the <host> being read
        top = ""  # tag of the child of <nmaprun> being read
        try:
            for event, elem in ET.iterparse(f, events=("start", "end")):
                if event == "start":
                    depth += 1
                    if depth == 1:
                        if elem.tag != "nmaprun":
                            raise ScanfleetError(
                                f"{path}: root element is <{elem.tag}>, not <nmaprun>: this is not nmap "
                                "XML output; give the .xml file written by nmap -oX/-oA")
                        root = elem
                        yield "root", elem
                    elif depth == 2:
                        top = elem.tag
                        in_host_address = None
                    continue
                depth -= 1
                if depth == 2 and top == "host" and elem.tag == "address" and in_host_address is None:
                    if elem.get("addrtype", "ipv4") in ("ipv4", "ipv6"):
                        in_host_address = elem.get("addr")
                elif depth == 1:
                    yield "child", elem
                    assert root is not None
                    root.clear()
        except ET.ParseError as exc:
            line, column = exc.position
            if exc.code in _PREMATURE_END and (root is not None or _plausible_nmap_prefix(path)):
                shard.complete = False
                if root is None:
                    shard.problem = ("empty file: nmap was killed before writing anything"
                                     if path.stat().st_size == 0 else
                                     "truncated before the <nmaprun> element")
                else:
                    shard.problem = f"truncated at line {line}, column {column} (no </nmaprun>)"
                    if depth >= 2 and top == "host" and in_host_address:
                        shard.partial_host = in_host_address
                return
            raise ScanfleetError(
                f"{path}: not well-formed XML at line {line}, column {column} "
                f"({expat.errors.messages.get(exc.code, exc)}): "
                "not nmap -oX/-oA output, or corrupted; fetch it again from the scanner or rescan "
                "that shard") from None


def _fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def inspect_input(path: Path, label: str | None = None, *, _seen: set[str] | None = None,
                  _dups: dict[str, int] | None = None) -> ShardReport:
    """Read one nmap XML output (streaming) and report what it holds: complete or truncated, its
    command line and times, and the hosts it fully reports (see the module docstring).

    The private arguments let :func:`merge` count duplicated addresses across inputs in the same pass.
    """
    path = Path(path)
    shard = ShardReport(path=path, label=label or default_label(path))
    seen = _seen if _seen is not None else set()
    dups = _dups if _dups is not None else {}
    latest: int | None = None  # latest time recorded in the file

    def saw(value: int | None) -> None:
        nonlocal latest
        if value is not None and (latest is None or value > latest):
            latest = value

    for kind, elem in _children(path, shard):
        if kind == "root":
            shard.args = elem.get("args")
            shard.version = elem.get("version")
            shard.xmloutputversion = elem.get("xmloutputversion")
            shard.start = _int(elem.get("start"))
            continue
        tag = elem.tag
        if tag == "host":
            key = host_key(elem)
            if key is None:
                raise ScanfleetError(
                    f"{path}: <host> number {shard.hosts_kept + 1} has no IP address: not nmap output "
                    "as scanfleet expects it; rescan that shard")
            shard.hosts_kept += 1
            shard.addresses.append(key)
            state = _host_state(elem)
            shard.listed_states[state] = shard.listed_states.get(state, 0) + 1
            saw(_int(elem.get("endtime")))
            if key in seen:
                dups[key] = dups.get(key, 1) + 1
            else:
                seen.add(key)
        elif tag == "scaninfo":
            shard.scaninfo.append(dict(elem.attrib))
        elif tag in ("verbose", "debugging"):
            setattr(shard, tag, _int(elem.get("level")) or 0)
        elif tag in ("taskbegin", "taskend", "taskprogress"):
            saw(_int(elem.get("time")))
        elif tag == "runstats":
            finished = elem.find("finished")
            if finished is not None:
                shard.end = _int(finished.get("time"))
                shard.elapsed = _float(finished.get("elapsed"))
                shard.exit = finished.get("exit")
                shard.errormsg = finished.get("errormsg")
                saw(shard.end)
            hosts = elem.find("hosts")
            if hosts is not None:
                shard.runstats_hosts = {k: _int(hosts.get(k, "0")) or 0 for k in ("up", "down", "total")}
    shard.last_seen = latest if latest is not None else shard.start
    if shard.complete and shard.start is None and shard.args is None:
        raise ScanfleetError(f"{path}: <nmaprun> without start or args: not nmap output")
    return shard


def default_label(path: Path) -> str:
    """The shard name of an input: its parent directory's name (scanner hosts' files are fetched into
    one directory per host), or the file name when it has no parent directory."""
    parent = Path(path).parent.name
    return parent or Path(path).name


# --------------------------------------------------------------------------------------------------
# Combining duplicated hosts


def _port_state_rank(state: str | None) -> int:
    try:
        return len(_PORT_STATE_ORDER) - _PORT_STATE_ORDER.index(state or "")
    except ValueError:
        return 0


def _port_rank(port: ET.Element) -> tuple[int, int, int, int, int]:
    state = port.find("state")
    service = port.find("service")
    if service is None:
        service_rank, conf, detail = 0, 0, 0
    else:
        if is_identified(service.attrib):
            service_rank = 3
        elif service.get("method") == "probed":
            service_rank = 2
        else:
            service_rank = 1
        conf = _int(service.get("conf")) or 0
        detail = sum(1 for key in ("product", "version", "extrainfo") if service.get(key))
    return (_port_state_rank(state.get("state") if state is not None else None), service_rank, conf,
            detail, len(port.findall("script")))


def parse_ranges(text: str) -> Iterator[int]:
    """Ports of an nmap range list such as ``1-60,2222,3306``."""
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        yield from range(int(low), int(high or low) + 1)


def format_ranges(ports: Sequence[int] | set[int]) -> str:
    """The nmap range list of a set of ports: ``{1, 2, 3, 7}`` -> ``1-3,7``."""
    out: list[str] = []
    run: list[int] = []
    for port in sorted(ports):
        if run and port == run[-1] + 1:
            run[-1] = port
            continue
        if run:
            out.append(str(run[0]) if run[0] == run[-1] else f"{run[0]}-{run[-1]}")
        run = [port, port]
    if run:
        out.append(str(run[0]) if run[0] == run[-1] else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _port_key(port: ET.Element) -> tuple[str, int]:
    return port.get("protocol", "tcp"), _int(port.get("portid")) or 0


def _extraports_states(groups: Sequence[ET.Element]) -> dict[tuple[str, int], tuple[str, str]] | None:
    """(proto, port) -> (state, reason) of the best state among ``groups`` (<extraports>), or None when
    a group has no port lists (nmap older than 7.90)."""
    best: dict[tuple[str, int], tuple[str, str]] = {}
    for group in groups:
        reasons = group.findall("extrareasons")
        if not reasons or any(r.get("ports") is None or r.get("proto") is None for r in reasons):
            return None
        state = group.get("state", "")
        for reason in reasons:
            proto = reason.get("proto", "tcp")
            try:
                ports = list(parse_ranges(reason.get("ports", "")))
            except ValueError:
                return None
            for port in ports:
                key = (proto, port)
                if key not in best or _port_state_rank(state) > _port_state_rank(best[key][0]):
                    best[key] = (state, reason.get("reason", ""))
    return best


def _extraports_groups(states: dict[tuple[str, int], tuple[str, str]]) -> list[ET.Element]:
    by_state: dict[str, dict[tuple[str, str], list[int]]] = {}
    for (proto, port), (state, reason) in states.items():
        by_state.setdefault(state, {}).setdefault((reason, proto), []).append(port)
    groups: list[ET.Element] = []
    for state in sorted(by_state, key=lambda s: -sum(len(p) for p in by_state[s].values())):
        reasons = by_state[state]
        group = ET.Element("extraports", {"state": state,
                                          "count": str(sum(len(p) for p in reasons.values()))})
        group.text = "\n"
        for (reason, proto), ports in sorted(reasons.items(), key=lambda item: -len(item[1])):
            child = ET.SubElement(group, "extrareasons", {"reason": reason, "count": str(len(ports)),
                                                         "proto": proto, "ports": format_ranges(ports)})
            child.tail = "\n"
        group.tail = "\n"
        groups.append(group)
    return groups


def _merge_ports(a: ET.Element | None, b: ET.Element | None) -> ET.Element | None:
    """Merge two <ports> (``a`` from the earlier input); the rules are in the module docstring."""
    if a is None or b is None:
        return a if b is None else b
    ports: dict[tuple[str, int], ET.Element] = {}
    for port in (*a.findall("port"), *b.findall("port")):
        key = _port_key(port)
        if key not in ports or _port_rank(port) > _port_rank(ports[key]):
            ports[key] = port
    groups_a, groups_b = a.findall("extraports"), b.findall("extraports")
    hidden = _extraports_states([*groups_a, *groups_b])
    if hidden is None:  # no port lists: keep the earlier occurrence's groups as they are
        groups = groups_a or groups_b
    else:
        for key, (state, _) in hidden.items():
            # a better state in a "Not shown" group beats a listed port (closed beats filtered)
            port = ports.get(key)
            if port is not None:
                listed = port.find("state")
                if _port_state_rank(state) > _port_state_rank(
                        listed.get("state") if listed is not None else None):
                    del ports[key]
        groups = _extraports_groups({k: v for k, v in hidden.items() if k not in ports})
    merged = ET.Element("ports", dict(a.attrib))
    merged.extend(groups)
    for key in sorted(ports):
        port = ports[key]
        port.tail = "\n"
        merged.append(port)
    merged.tail = "\n"
    return merged


def _union_children(a: ET.Element | None, b: ET.Element | None, child: str,
                    key: Any) -> ET.Element | None:
    if a is None or b is None:
        return a if b is None else b
    merged = ET.Element(a.tag, dict(a.attrib))
    merged.text, merged.tail = a.text, a.tail
    known = set()
    for elem in (*a.findall(child), *b.findall(child)):
        k = key(elem)
        if k not in known:
            known.add(k)
            merged.append(elem)
    return merged


def combine_hosts(a: ET.Element, b: ET.Element) -> ET.Element:
    """One ``<host>`` from two occurrences of the same host (``a`` from the earlier input); the rules
    are in the module docstring."""
    if _HOST_STATE_RANK.get(_host_state(b), 0) > _HOST_STATE_RANK.get(_host_state(a), 0):
        best, other = b, a
    else:
        best, other = a, b
    host = ET.Element("host")
    starts = [v for v in (_int(a.get("starttime")), _int(b.get("starttime"))) if v is not None]
    ends = [v for v in (_int(a.get("endtime")), _int(b.get("endtime"))) if v is not None]
    if starts:
        host.set("starttime", str(min(starts)))
    if ends:
        host.set("endtime", str(max(ends)))
    if "true" in (a.get("timedout"), b.get("timedout")):
        host.set("timedout", "true")
    host.text = best.text
    host.tail = "\n"

    def first(tag: str) -> ET.Element | None:
        elem = best.find(tag)
        return elem if elem is not None else other.find(tag)

    children: list[ET.Element] = []
    status = first("status")
    if status is not None:
        children.append(status)
    addresses: dict[tuple[str | None, str | None], ET.Element] = {}
    for address in (*best.findall("address"), *other.findall("address")):
        addresses.setdefault((address.get("addr"), address.get("addrtype", "ipv4")), address)
    children.extend(addresses.values())
    for tag in _HOST_CHILD_ORDER[2:]:
        if tag == "hostnames":
            elem = _union_children(best.find(tag), other.find(tag), "hostname",
                                   lambda e: (e.get("name"), e.get("type")))
        elif tag == "hostscript":
            elem = _union_children(best.find(tag), other.find(tag), "script", lambda e: e.get("id"))
        elif tag == "ports":  # in input order: on a full tie the earlier input wins
            elem = _merge_ports(a.find(tag), b.find(tag))
        else:
            elem = first(tag)
        if elem is not None:
            children.append(elem)
    known = {*_HOST_CHILD_ORDER, "times"}
    extra: dict[str, ET.Element] = {}
    for elem in (*best, *other):  # children this module does not know (newer or patched nmap)
        if elem.tag not in known:
            extra.setdefault(elem.tag, elem)
    children.extend(extra.values())
    times = first("times")
    if times is not None:
        children.append(times)
    for elem in children:
        if not (elem.tail or "").strip():
            elem.tail = "\n"
    host.extend(children)
    return host


# --------------------------------------------------------------------------------------------------
# Writing


def _timestr(t: int) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t))


def _attrs(attrib: dict[str, str]) -> str:
    return "".join(f" {name}={quoteattr(str(value))}" for name, value in attrib.items())


def _write(out: TextIO, elem: ET.Element) -> None:
    if not (elem.tail or "").strip():
        elem.tail = "\n"
    out.write(ET.tostring(elem, encoding="unicode"))


def _merged_scaninfo(shards: Sequence[ShardReport]) -> list[dict[str, str]]:
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for shard in shards:
        for info in shard.scaninfo:
            key = (info.get("type", ""), info.get("protocol", ""))
            entry = merged.setdefault(key, {"attrib": dict(info), "ports": set(), "flags": set()})
            try:
                entry["ports"].update(parse_ranges(info.get("services", "")))
            except ValueError:
                entry["raw"] = True
            entry["flags"].add(info.get("scanflags"))
    result = []
    for entry in merged.values():
        attrib = entry["attrib"]
        if not entry.get("raw"):
            attrib["services"] = format_ranges(entry["ports"])
            attrib["numservices"] = str(len(entry["ports"]))
        if len(entry["flags"]) > 1:
            attrib.pop("scanflags", None)
        result.append(attrib)
    return result


def _shard_note(shard: ShardReport) -> str:
    lines = [f"[{shard.label}] args: {shard.args or '(unknown: nothing was written)'}"]
    when = []
    if shard.start is not None:
        when.append(f"start {shard.start} ({_timestr(shard.start)})")
    if shard.end is not None:
        when.append(f"end {shard.end}")
    if shard.elapsed is not None:
        when.append(f"elapsed {shard.elapsed:.2f} s")
    if shard.exit:
        when.append(f"exit {shard.exit}")
    state = "complete" if shard.complete else f"TRUNCATED: {shard.problem}"
    if shard.partial_host:
        state += f"; partial host {shard.partial_host} dropped"
    lines.append(f"[{shard.label}] file {shard.path}: {state}; hosts kept: {shard.hosts_kept}"
                 + (f"; {', '.join(when)}" if when else ""))
    return "\n".join(lines)


def _version_of(values: Sequence[str | None], default: str) -> str:
    distinct = list(dict.fromkeys(v for v in values if v))
    return ", ".join(distinct) if distinct else default


def merge(inputs: Sequence[Path], out: Path, *, labels: Sequence[str] | None = None,
          dtd: Path | None = None, stylesheet: str | None = None) -> MergeResult:
    """Merge the nmap XML outputs ``inputs`` (one per shard) into the nmap XML file ``out``.

    ``labels`` names the shards (default: each input's parent directory name, see
    :func:`default_label`). With ``dtd``, the result is checked with ``xmllint --dtdvalid`` before it
    replaces ``out``. ``stylesheet`` (an href, e.g. ``file:///usr/share/nmap/nmap.xsl``) is written as
    the document's xml-stylesheet, as nmap does. ``out`` is written to a temporary file in the same
    directory and renamed: it is never left half-written. Rules: see the module docstring.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if not inputs:
        raise ScanfleetError("merge: no input files given; pass the shards' nmap .xml files")
    if labels is None:
        labels = [default_label(p) for p in inputs]
        if len(set(labels)) != len(labels):  # e.g. several files in one directory
            labels = [str(p) for p in inputs]
    if len(labels) != len(inputs):
        raise ScanfleetError("merge: give one label per input file")
    resolved: dict[Path, Path] = {}
    for path in inputs:
        real = path.resolve()
        if real in resolved:
            raise ScanfleetError(f"{path}: given twice (also as {resolved[real]}); give each shard once")
        resolved[real] = path
        if not path.is_file():
            raise ScanfleetError(f"{path}: no such file; check the path of the shard's nmap .xml")
    if out.resolve() in resolved:
        raise ScanfleetError(f"{out}: is also an input; write the merge elsewhere")
    if len(set(labels)) != len(labels):
        raise ScanfleetError(f"merge: shard labels are not unique: {', '.join(labels)}; use --label")
    if dtd is not None and not Path(dtd).is_file():
        raise ScanfleetError(f"{dtd}: nmap.dtd not found; give the right path or none")

    # Pass 1: headers, runstats and the addresses that occur more than once.
    seen: set[str] = set()
    dups: dict[str, int] = {}
    shards = []
    fingerprints = []
    for path, label in zip(inputs, labels, strict=True):
        fingerprints.append(_fingerprint(path))
        shards.append(inspect_input(path, label, _seen=seen, _dups=dups))
    del seen

    starts = [s.start for s in shards if s.start is not None]
    ends = [s.end if s.end is not None else s.last_seen for s in shards]
    start = min(starts) if starts else None
    end = max((e for e in ends if e is not None), default=None)
    if end is None:
        end = start if start is not None else int(time.time())
    elapsed = max(0.0, float(end - start)) if start is not None else 0.0
    problems = []
    for shard in shards:
        if not shard.complete:
            problems.append(f"{shard.label}: {shard.problem}")
        elif shard.exit != "success":
            problems.append(f"{shard.label}: nmap exit {shard.exit or 'unknown'}"
                            + (f" ({shard.errormsg})" if shard.errormsg else ""))
    exit_status = "error" if problems else "success"

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            counts = _write_document(f, inputs, shards, fingerprints, dups, start=start, end=end,
                                     elapsed=elapsed, exit_status=exit_status, problems=problems,
                                     stylesheet=stylesheet)
        validated = False
        if dtd is not None:
            validate(tmp, Path(dtd), shown_as=out)
            validated = True
    return MergeResult(out=out, shards=shards, hosts_up=counts["up"], hosts_down=counts["down"],
                       hosts_total=counts["total"], start=start, end=end, elapsed=elapsed,
                       exit=exit_status, errormsg="; ".join(problems) or None, validated=validated)


def _write_document(f: TextIO, inputs: Sequence[Path], shards: Sequence[ShardReport],
                    fingerprints: Sequence[tuple[int, int]], dups: dict[str, int], *, start: int | None,
                    end: int, elapsed: float, exit_status: str, problems: Sequence[str],
                    stylesheet: str | None) -> dict[str, int]:
    f.write('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
    if stylesheet:
        f.write(f'<?xml-stylesheet href={quoteattr(stylesheet)} type="text/xsl"?>\n')
    args = "scanfleet merge " + " ".join(str(p) for p in inputs)
    f.write(f"<!-- scanfleet merge of {len(shards)} nmap runs -->\n")
    root = {"scanner": "nmap", "args": args}
    if start is not None:
        root["start"] = str(start)
        root["startstr"] = _timestr(start)
    root["version"] = _version_of([s.version for s in shards], "unknown")
    root["xmloutputversion"] = max((s.xmloutputversion for s in shards if s.xmloutputversion),
                                   key=lambda v: tuple(_int(p) or 0 for p in v.split(".")),
                                   default="1.05")
    f.write(f"<nmaprun{_attrs(root)}>\n")
    for info in _merged_scaninfo(shards):
        f.write(f"<scaninfo{_attrs(info)}/>\n")
    f.write(f'<verbose level="{max((s.verbose for s in shards), default=0)}"/>\n')
    f.write(f'<debugging level="{max((s.debugging for s in shards), default=0)}"/>\n')
    for shard in shards:
        note = ET.Element("output", {"type": "interactive"})
        note.text = _shard_note(shard)
        _write(f, note)

    counts = {"up": 0, "down": 0, "total": 0}

    def emit(host: ET.Element) -> None:
        state = _host_state(host)
        counts["total"] += 1
        if state in ("up", "down"):
            counts[state] += 1
        _write(f, host)

    pending: dict[str, tuple[ET.Element, list[str]]] = {}
    for path, shard, fingerprint in zip(inputs, shards, fingerprints, strict=True):
        if _fingerprint(path) != fingerprint:
            raise ScanfleetError(f"{path}: changed while it was being merged; merge again once the "
                                 "file is complete")
        check = ShardReport(path=path, label=shard.label)
        for kind, elem in _children(path, check):
            if kind == "root":
                continue
            if elem.tag == "host":
                key = host_key(elem)
                assert key is not None  # checked in pass 1
                if key not in dups:
                    emit(elem)
                    continue
                if key in pending:
                    merged, labels = pending[key]
                    pending[key] = (combine_hosts(merged, elem), [*labels, shard.label])
                else:
                    pending[key] = (elem, [shard.label])
                dups[key] -= 1
                if dups[key] == 0:
                    merged, labels = pending.pop(key)
                    merged.set("comment", "scanfleet: merged from " + ", ".join(dict.fromkeys(labels)))
                    emit(merged)
            elif elem.tag in _PASS_THROUGH:
                _write(f, elem)
    if pending:  # cannot happen unless an input changed between the passes
        raise ScanfleetError(f"{', '.join(str(p) for p in inputs)}: hosts {', '.join(pending)} vanished "
                             "between the two passes; merge again once the files are complete")

    # Hosts an input counted but did not list (down without -v, or up without open ports with --open).
    for shard in shards:
        if shard.runstats_hosts is None:
            continue
        listed_up = shard.listed_states.get("up", 0)
        listed_down = shard.listed_states.get("down", 0)
        counts["up"] += max(0, shard.runstats_hosts["up"] - listed_up)
        counts["down"] += max(0, shard.runstats_hosts["down"] - listed_down)
        counts["total"] += max(0, shard.runstats_hosts["total"] - shard.hosts_kept)

    total, up = counts["total"], counts["up"]
    summary = (f"scanfleet merge of {len(shards)} nmap runs done at {_timestr(end)}; "
               f"{total} IP address{'' if total == 1 else 'es'} ({up} host{'' if up == 1 else 's'} up) "
               f"scanned in {elapsed:.2f} seconds")
    finished = {"time": str(end), "timestr": _timestr(end), "summary": summary,
                "elapsed": f"{elapsed:.2f}", "exit": exit_status}
    if problems:
        finished["errormsg"] = "; ".join(problems)
    hosts = {k: str(counts[k]) for k in ("up", "down", "total")}
    f.write(f"<runstats><finished{_attrs(finished)}/><hosts{_attrs(hosts)}/>\n</runstats>\n</nmaprun>\n")
    return counts


# --------------------------------------------------------------------------------------------------
# External tools


def find_nmap_file(name: str) -> Path | None:
    """``nmap.dtd`` / ``nmap.xsl`` from the nmap package, else from the cached nmap source tree."""
    for directory in NMAP_DATA_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def validate(xml: Path, dtd: Path, *, shown_as: Path | None = None) -> None:
    """Check ``xml`` against nmap.dtd with ``xmllint --dtdvalid``; raise ScanfleetError if invalid."""
    xmllint = shutil.which("xmllint")
    if xmllint is None:
        raise ScanfleetError("xmllint not found: install libxml2-utils, or do not ask for validation")
    proc = subprocess.run([xmllint, "--noout", "--nonet", "--dtdvalid", str(dtd), str(xml)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = "\n".join(proc.stderr.strip().splitlines()[:10])
        raise ScanfleetError(f"{shown_as or xml}: the merged XML does not validate against {dtd}; the "
                             f"inputs hold something nmap.dtd does not allow:\n{detail}")
