"""Reports from a merged nmap XML document (see :mod:`scanfleet.nmapxml`), streaming.

* ``merged.json`` / ``merged.csv``: one row per port of every host that is up, with the columns
  :data:`COLUMNS`. ``hostname`` is the host's first hostname (nmap lists user-given names before PTR
  names); ``service`` is the service name, prefixed ``ssl/`` when nmap tunnelled through SSL, as nmap
  prints it. A host that is up but has no ``<port>`` element (all its ports in "Not shown" groups)
  gets one row with empty port fields, so every up host is in the table. Down hosts have no row;
  ``<extraports>`` groups are not expanded. In CSV, ``identified`` is ``true``/``false`` and empty
  fields are empty strings; in JSON, ``port`` is a number (or null) and ``identified`` a boolean.
* ``merged.html``: ``xsltproc nmap.xsl merged.xml``.
* ``summary.json`` and its text form: hosts up/down/total, open ports, identified and unidentified
  services (of open ports) with their lists, and per shard its status and time (runstats elapsed).

Identified rule (:func:`is_identified`): a port's service counts as identified when nmap's service
detection matched it, that is ``<service method="probed">`` with a real name: not empty, not
``unknown``, not ``tcpwrapped`` (nmap only saw the connection closed), and not a ``?`` guess. In nmap
XML a guess is ``method="table"`` (the name comes from nmap-services, shown as ``name?`` by nmap
when -sV could not confirm it), so a ``method="table"`` service is never identified; a name ending
in ``?`` is refused as well in case a tool wrote nmap's console spelling. Soft matches (``probed``,
a service name without product/version) count as identified.
"""

from __future__ import annotations

import collections
import csv
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError
from scanfleet.files import atomic_path, atomic_write

COLUMNS = ("address", "hostname", "port", "protocol", "state", "service", "product", "version",
           "extrainfo", "identified")
NOT_IDENTIFIED_NAMES = frozenset({"", "unknown", "tcpwrapped"})
SUMMARY_FILE = "summary.json"


def is_identified(service: Mapping[str, str] | None) -> bool:
    """True when nmap's service detection matched the service (rule in the module docstring)."""
    if not service:
        return False
    name = (service.get("name") or "").strip()
    return (service.get("method") == "probed" and name.lower() not in NOT_IDENTIFIED_NAMES
            and not name.endswith("?"))


def _events(merged_xml: Path) -> Iterator[ET.Element]:
    """Every complete child of <nmaprun> (host, runstats, ...), dropped once the consumer moves on."""
    try:
        f = open(merged_xml, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ScanfleetError(f"{merged_xml}: cannot read it ({exc.strerror}); run scanfleet merge first"
                             ) from None
    with f:
        root = None
        depth = 0
        try:
            for event, elem in ET.iterparse(f, events=("start", "end")):
                if event == "start":
                    depth += 1
                    if depth == 1:
                        if elem.tag != "nmaprun":
                            raise ScanfleetError(f"{merged_xml}: not nmap XML (root <{elem.tag}>)")
                        root = elem
                    continue
                depth -= 1
                if depth == 1:
                    yield elem
                    assert root is not None
                    root.clear()
        except ET.ParseError as exc:
            raise ScanfleetError(f"{merged_xml}: not well-formed XML ({exc}); run scanfleet merge again"
                                 ) from None


def _host_address(host: ET.Element) -> str:
    addresses = host.findall("address")
    for address in addresses:
        if address.get("addrtype", "ipv4") in ("ipv4", "ipv6"):
            return address.get("addr", "")
    return addresses[0].get("addr", "") if addresses else ""


def host_rows(host: ET.Element) -> list[dict[str, Any]]:
    """The report rows of one ``<host>`` element (none when it is not up)."""
    status = host.find("status")
    if status is None or status.get("state") != "up":
        return []
    address = _host_address(host)
    names = [h.get("name", "") for h in host.iterfind("hostnames/hostname") if h.get("name")]
    hostname = names[0] if names else ""
    rows = []
    for port in host.iterfind("ports/port"):
        state = port.find("state")
        service = port.find("service")
        attrib: Mapping[str, str] = service.attrib if service is not None else {}
        name = attrib.get("name", "")
        if name and attrib.get("tunnel") == "ssl":
            name = f"ssl/{name}"
        portid = port.get("portid", "")
        rows.append({
            "address": address,
            "hostname": hostname,
            "port": int(portid) if portid.isdigit() else portid,
            "protocol": port.get("protocol", ""),
            "state": state.get("state", "") if state is not None else "",
            "service": name,
            "product": attrib.get("product", ""),
            "version": attrib.get("version", ""),
            "extrainfo": attrib.get("extrainfo", ""),
            "identified": is_identified(attrib),
        })
    if not rows:
        rows.append({**dict.fromkeys(COLUMNS, ""), "address": address, "hostname": hostname,
                     "port": None, "identified": False})
    return rows


def iter_rows(merged_xml: Path, on_element: Callable[[ET.Element], None] | None = None
              ) -> Iterator[dict[str, Any]]:
    """Stream the report rows of a merged (or any) nmap XML file. ``on_element`` sees every child of
    ``nmaprun`` (hosts, runstats, ...) before it is dropped."""
    for elem in _events(Path(merged_xml)):
        if on_element is not None:
            on_element(elem)
        if elem.tag == "host":
            yield from host_rows(elem)


def csv_value(value: Any) -> str:
    """How a row value is written in merged.csv."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# The summary lists at most this many services of each kind (all of them are in merged.json/.csv); it
# counts every one, by service and product. A summary holding every port would grow with the scan.
SUMMARY_LIST_LIMIT = 200


def _service_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("address", "hostname", "port", "protocol", "service", "product",
                                "version", "extrainfo")}


def write_reports(merged_xml: Path, out_dir: Path, merge_info: Mapping[str, Any] | None = None, *,
                  xsl: Path | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``merged.json``, ``merged.csv``, ``merged.html`` (when ``xsl`` and xsltproc exist) and
    ``summary.json`` into ``out_dir`` from ``merged_xml``, in one streaming pass; return the summary.

    ``merge_info`` is :meth:`scanfleet.nmapxml.MergeResult.to_dict` (shards, times, exit status).
    """
    merged_xml, out_dir = Path(merged_xml), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(notes)
    hosts = {"up": 0, "down": 0, "total": 0}
    runstats: dict[str, str] = {}
    identified: list[dict[str, Any]] = []
    unidentified: list[dict[str, Any]] = []
    counts: dict[bool, collections.Counter[str]] = {True: collections.Counter(), False: collections.Counter()}
    open_ports = 0
    rows_written = 0

    def on_element(elem: ET.Element) -> None:
        if elem.tag == "runstats":
            finished = elem.find("finished")
            if finished is not None:
                runstats.update(finished.attrib)
            counts = elem.find("hosts")
            if counts is not None:
                for key in hosts:
                    hosts[key] = int(counts.get(key, "0"))

    with atomic_write(out_dir / "merged.json") as fj, atomic_write(out_dir / "merged.csv", newline="") as fc:
        writer = csv.writer(fc, lineterminator="\n")
        writer.writerow(COLUMNS)
        fj.write("[")
        for row in iter_rows(merged_xml, on_element):
            fj.write(("\n" if rows_written == 0 else ",\n") + json.dumps(row, ensure_ascii=False))
            writer.writerow([csv_value(row[c]) for c in COLUMNS])
            rows_written += 1
            if row["state"] == "open":
                open_ports += 1
                kind = bool(row["identified"])
                counts[kind][" ".join(filter(None, (row["service"] or "unknown", row["product"])))] += 1
                listed = identified if kind else unidentified
                if len(listed) < SUMMARY_LIST_LIMIT:
                    listed.append(_service_entry(row))
        fj.write("\n]\n")

    html: str | None = None
    (out_dir / "merged.html").unlink(missing_ok=True)  # never leave a previous run's page
    if xsl is None:
        notes.append("merged.html not written: nmap.xsl not found (give --xsl)")
    elif shutil.which("xsltproc") is None:
        notes.append("merged.html not written: xsltproc not found (apt-get install xsltproc)")
    else:
        write_html(merged_xml, out_dir / "merged.html", Path(xsl))
        html = "merged.html"

    info = dict(merge_info or {})
    summary: dict[str, Any] = {
        "merged_xml": merged_xml.name,
        "files": {"json": "merged.json", "csv": "merged.csv", "html": html, "summary": SUMMARY_FILE},
        "rows": rows_written,
        "exit": runstats.get("exit", info.get("exit")),
        "errormsg": runstats.get("errormsg"),
        "start": info.get("start"),
        "end": int(runstats["time"]) if runstats.get("time", "").isdigit() else info.get("end"),
        "elapsed": float(runstats["elapsed"]) if "elapsed" in runstats else info.get("elapsed"),
        "validated": info.get("validated"),
        "hosts": hosts,
        "open_ports": open_ports,
        "identified": {"count": sum(counts[True].values()), "by_service": dict(counts[True].most_common()),
                       "services": identified},
        "unidentified": {"count": sum(counts[False].values()), "by_service": dict(counts[False].most_common()),
                         "services": unidentified},
        "shards": list(info.get("shards", [])),
        "notes": notes,
    }
    with atomic_write(out_dir / SUMMARY_FILE) as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return summary


def write_html(merged_xml: Path, out_html: Path, xsl: Path) -> None:
    """``xsltproc xsl merged_xml`` into ``out_html`` (atomically)."""
    xsltproc = shutil.which("xsltproc")
    if xsltproc is None:
        raise ScanfleetError("xsltproc not found: install xsltproc to get merged.html")
    if not Path(xsl).is_file():
        raise ScanfleetError(f"{xsl}: no such stylesheet; give the path of nmap.xsl")
    with atomic_path(out_html) as name:
        proc = subprocess.run([xsltproc, "--nonet", "-o", str(name), str(xsl), str(merged_xml)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ScanfleetError(f"{merged_xml}: xsltproc {xsl} failed: "
                                 f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")


def load_summary(out_dir: Path) -> dict[str, Any]:
    """The summary.json written by :func:`write_reports` in ``out_dir``."""
    path = Path(out_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScanfleetError(f"{path}: not found; run scanfleet merge --out {out_dir} first") from None
    except (OSError, ValueError) as exc:
        raise ScanfleetError(f"{path}: unreadable ({exc}); run scanfleet merge again") from None
    if not isinstance(data, dict) or "hosts" not in data or "shards" not in data:
        raise ScanfleetError(f"{path}: not a scanfleet summary; run scanfleet merge again")
    return data


def _service_line(entry: Mapping[str, Any]) -> str:
    where = f"{entry['address']}:{entry['port']}/{entry['protocol']}"
    if entry.get("hostname"):
        where += f" ({entry['hostname']})"
    what = " ".join(str(entry[k]) for k in ("service", "product", "version") if entry.get(k))
    if entry.get("extrainfo"):
        what += f" ({entry['extrainfo']})"
    return f"  {where}  {what or '-'}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as text for people."""
    hosts = summary["hosts"]
    lines = [f"merge: {summary.get('exit') or 'unknown'}"
             + (f" ({summary['errormsg']})" if summary.get("errormsg") else ""),
             f"hosts: {hosts['up']} up, {hosts['down']} down, {hosts['total']} total",
             f"open ports: {summary['open_ports']}"]
    for key in ("identified", "unidentified"):
        block = summary[key]
        lines.append(f"{key} services: {block['count']}")
        lines.extend(_service_line(entry) for entry in block["services"])
        if block["count"] > len(block["services"]):
            lines.append(f"  ... {block['count'] - len(block['services'])} more (merged.csv has them all); by service:")
            lines.extend(f"  {count:8d}  {name}" for name, count in block.get("by_service", {}).items())
    lines.append("time per shard:")
    width = max((len(s["label"]) for s in summary["shards"]), default=0)
    for shard in summary["shards"]:
        elapsed = f"{shard['elapsed']:.2f} s" if shard.get("elapsed") is not None else "-"
        text = (f"  {shard['label']:<{width}}  {shard['status']:<9}  {elapsed:>10}  "
                f"hosts kept: {shard['hosts_kept']}")
        if not shard["complete"]:
            text += f"; {shard['problem']}"
            if shard.get("partial_host"):
                text += f"; partial host {shard['partial_host']} dropped"
            kept = shard.get("addresses") or []
            text += f"; fully reported: {', '.join(kept) if kept else 'none'}"
        lines.append(text)
    if summary.get("elapsed") is not None:
        lines.append(f"total elapsed (first start to last end): {summary['elapsed']:.2f} s")
    lines.extend(f"note: {note}" for note in summary.get("notes", []))
    return "\n".join(lines)
