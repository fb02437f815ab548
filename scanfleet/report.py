"""Reports from a merged nmap XML document (see :mod:`scanfleet.merge`), streaming.

* ``merged.json`` / ``merged.csv``: one row per port of every host that is up, with the columns
  :data:`COLUMNS`. ``hostname`` is the host's first hostname (nmap lists user-given names before PTR
  names); ``service`` is the service name, prefixed ``ssl/`` when nmap tunnelled through SSL, as nmap
  prints it. A host that is up but has no ``<port>`` element (all its ports in "Not shown" groups)
  gets one row with empty port fields, so every up host is in the table. Down hosts have no row;
  ``<extraports>`` groups are not expanded. In CSV, ``identified`` is ``true``/``false`` and empty
  fields are empty strings; in JSON, ``port`` is a number (or null) and ``identified`` a boolean.
  ``run_id``: the run's id (``scanfleet merge shards``: ``--run-id``, else the run id of ``DIR/state.json``,
  else the name of the output directory). ``scan_start`` / ``scan_end``: when nmap began and ended that host
  (its ``<host starttime endtime>``; a host found in two inputs has the earliest start and the latest end), in
  ISO 8601 UTC (``2026-11-21T10:09:33Z``); a host without them gets the merged run's start (``<nmaprun start>``)
  and no end (empty in CSV, null in JSON). ``cpe``: the CPE names nmap gave the service (its ``<cpe>``
  elements), a list in JSON, separated by spaces in CSV (a CPE name holds no space).
* ``merged.html``: one self-contained page for people (:mod:`scanfleet.page`, :func:`write_page`): summary,
  services, unidentified ports with their replies and draft rules, time and coverage per shard, changes.
* ``merged-nmap.html``: nmap's own rendering, ``xsltproc nmap.xsl merged.xml``.
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

import argparse
import collections
import contextlib
import csv
import hashlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError, page, pairs, recover, twophase
from scanfleet.collect import XML, coverage, merge_inputs
from scanfleet.files import atomic_path, atomic_write, sha256_file
from scanfleet.job_model import STATUSES
from scanfleet.merge import default_label, find_nmap_file, is_identified, merge
from scanfleet.probes import harvest as harvesting
from scanfleet.state import RunState, counted, load_planned, load_state, save_state

SUMMARY_FILE = "summary.json"
COLUMNS = ("address", "hostname", "port", "protocol", "state", "service", "product", "version",
           "extrainfo", "identified", "run_id", "scan_start", "scan_end", "cpe")
PAGE = "merged.html"
NMAP_PAGE = "merged-nmap.html"


def _events(merged_xml: Path, root_attrib: dict[str, str] | None = None) -> Iterator[ET.Element]:
    """Every complete child of <nmaprun> (host, runstats, ...), dropped once the consumer moves on;
    ``root_attrib`` gets the attributes of <nmaprun>."""
    try:
        f = open(merged_xml, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ScanfleetError(f"{merged_xml}: cannot read it ({exc.strerror}); run scanfleet merge shards first"
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
                        if root_attrib is not None:
                            root_attrib.update(elem.attrib)
                    continue
                depth -= 1
                if depth == 1:
                    yield elem
                    assert root is not None
                    root.clear()
        except ET.ParseError as exc:
            raise ScanfleetError(f"{merged_xml}: not well-formed XML ({exc}); run scanfleet merge shards again"
                                 ) from None


def _host_address(host: ET.Element) -> str:
    addresses = host.findall("address")
    for address in addresses:
        if address.get("addrtype", "ipv4") in ("ipv4", "ipv6"):
            return address.get("addr", "")
    return addresses[0].get("addr", "") if addresses else ""


def iso_time(value: str | int | None) -> str | None:
    """nmap's Unix time (``starttime="1795255773"``) as ISO 8601 UTC, ``2026-11-21T10:09:33Z``; None if not one."""
    text = str(value or "")
    if not text.isdigit():
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(text)))


def host_rows(host: ET.Element, *, run_id: str = "", run_start: str | None = None) -> list[dict[str, Any]]:
    """The report rows of one ``<host>`` element (none when it is not up); ``run_start``: the ``<nmaprun
    start>`` of the file, the scan time of a host without its own (module docstring)."""
    status = host.find("status")
    if status is None or status.get("state") != "up":
        return []
    address = _host_address(host)
    names = [h.get("name", "") for h in host.iterfind("hostnames/hostname") if h.get("name")]
    hostname = names[0] if names else ""
    start = iso_time(host.get("starttime"))
    end = iso_time(host.get("endtime")) if start else None
    times = {"run_id": run_id, "scan_start": start or iso_time(run_start), "scan_end": end}
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
            **times,
            "cpe": [c.text.strip() for c in service.iterfind("cpe") if c.text and c.text.strip()]
            if service is not None else [],
        })
    if not rows:
        rows.append({**dict.fromkeys(COLUMNS, ""), "address": address, "hostname": hostname,
                     "port": None, "identified": False, **times, "cpe": []})
    return rows


def iter_rows(merged_xml: Path, on_element: Callable[[ET.Element], None] | None = None, *, run_id: str = ""
              ) -> Iterator[dict[str, Any]]:
    """Stream the report rows of a merged (or any) nmap XML file. ``on_element`` sees every child of
    ``nmaprun`` (hosts, runstats, ...) before it is dropped; ``run_id`` fills the column of that name."""
    root: dict[str, str] = {}
    for elem in _events(Path(merged_xml), root):
        if on_element is not None:
            on_element(elem)
        if elem.tag == "host":
            yield from host_rows(elem, run_id=run_id, run_start=root.get("start"))


def csv_value(value: Any) -> str:
    """How a row value is written in merged.csv (a list, the CPE names: separated by spaces)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return "" if value is None else str(value)


# The summary lists at most this many services of each kind (all of them are in merged.json/.csv); it
# counts every one, by service and product. A summary holding every port would grow with the scan.
SUMMARY_LIST_LIMIT = 200


def _service_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("address", "hostname", "port", "protocol", "service", "product",
                                "version", "extrainfo")}


def write_reports(merged_xml: Path, out_dir: Path, merge_info: Mapping[str, Any] | None = None, *,
                  xsl: Path | None = None, notes: Sequence[str] = (), run_id: str = "",
                  state: RunState | None = None) -> dict[str, Any]:
    """Write ``merged.json``, ``merged.csv`` (one streaming pass), ``merged-nmap.html`` (when ``xsl`` and
    xsltproc exist), ``summary.json`` and ``merged.html`` (:func:`write_page`) into ``out_dir`` from
    ``merged_xml``; return the summary.

    ``merge_info`` is :meth:`scanfleet.merge.MergeResult.to_dict` (shards, times, exit status); ``run_id`` fills
    the column of that name; ``state``: the run's state, for the page (coverage, time per shard, lost scanners).
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
        for row in iter_rows(merged_xml, on_element, run_id=run_id):
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

    nmap_html: str | None = None
    for name in (PAGE, NMAP_PAGE):
        (out_dir / name).unlink(missing_ok=True)  # never leave a previous run's page
    if xsl is None:
        notes.append(f"{NMAP_PAGE} not written: nmap.xsl not found (give --xsl)")
    elif shutil.which("xsltproc") is None:
        notes.append(f"{NMAP_PAGE} not written: xsltproc not found (apt-get install xsltproc)")
    else:
        write_html(merged_xml, out_dir / NMAP_PAGE, Path(xsl))
        nmap_html = NMAP_PAGE

    info = dict(merge_info or {})
    summary: dict[str, Any] = {
        "merged_xml": merged_xml.name,
        "files": {"json": "merged.json", "csv": "merged.csv", "html": PAGE, "nmap_html": nmap_html,
                  "summary": SUMMARY_FILE},
        "run_id": run_id,
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
    if info.get("recover"):  # a run with a pass 2 (scanfleet.recover): what it named, the ports before and after
        summary["recover"] = info["recover"]
    with atomic_write(out_dir / SUMMARY_FILE) as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")
    write_page(merged_xml, out_dir, summary, state=state)
    return summary


def write_html(merged_xml: Path, out_html: Path, xsl: Path) -> None:
    """``xsltproc xsl merged_xml`` into ``out_html`` (atomically)."""
    xsltproc = shutil.which("xsltproc")
    if xsltproc is None:
        raise ScanfleetError(f"xsltproc not found: install xsltproc to get {NMAP_PAGE}")
    if not Path(xsl).is_file():
        raise ScanfleetError(f"{xsl}: no such stylesheet; give the path of nmap.xsl")
    with atomic_path(out_html) as name:
        proc = subprocess.run([xsltproc, "--nonet", "-o", str(name), str(xsl), str(merged_xml)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ScanfleetError(f"{merged_xml}: xsltproc {xsl} failed: "
                                 f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")


# --------------------------------------------------------------------------------------------------
# merged.html (scanfleet.page renders it; the data comes from here)

CHANGES_FILE = "changes.json"  # written by scanfleet.diff (run_changes), which calls write_run_page after it
NO_CHANGES = ("No earlier run to compare to: changes since an earlier run are shown when the run is compared "
              "with one (nmap_scan_compare_to; by default the latest earlier run with the same targets).")


def _run_facts(state: RunState | None) -> list[tuple[str, str]]:
    """Targets and coverage (first), then lost scanners: the run's facts that summary.json does not hold."""
    if state is None:
        return []
    cov = coverage(state)
    lost = lost_scanner_lines(state)
    return [("Targets", f"{counted(state.total, 'address')}: {state.targets().describe()}"),
            ("Coverage", cov.text().removeprefix("coverage: ")),
            ("Lost scanners", "; ".join(lost) if lost else "none")]


def _shard_bars(summary: Mapping[str, Any], state: RunState | None) -> list[page.ShardBar]:
    """One bar per attempt of the run (its addresses and those covered), then one per other merged file (the
    phase-2 jobs of a two-phase run, labelled phase2/JOB; every file of a merge outside a run)."""
    bars = [page.ShardBar(a.id, a.status, a.elapsed, a.size, a.covered().size) for a in (state.attempts if state
                                                                                          else [])]
    known = {bar.label for bar in bars}
    return bars + [page.ShardBar(str(s.get("label")), str(s.get("status")), s.get("elapsed"), None, None)
                   for s in summary.get("shards") or []
                   if str(s.get("label")).removeprefix("phase1/") not in known]


def _changes(out_dir: Path, merged_xml: Path) -> tuple[dict[str, Any] | None, str]:
    """changes.json when it was computed for this merged.xml (its sha256), else None and what to say."""
    path = out_dir / CHANGES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, NO_CHANGES
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc}); scanfleet diff OLD {out_dir} computes the changes again"
    if not isinstance(data, dict) or (data.get("new") or {}).get("sha256") != sha256_file(merged_xml):
        return None, NO_CHANGES
    return data, ""


def _harvest(merged_xml: Path, out_dir: Path, summary: Mapping[str, Any]) -> tuple[harvesting.Harvest | None, str]:
    """The draft rules of the unidentified ports (scanfleet probes harvest), and where the reviewed file is."""
    if not (summary.get("unidentified") or {}).get("count"):
        return None, ""
    try:
        found = harvesting.harvest(merged_xml)
    except ScanfleetError as exc:
        return None, f"No draft rules: {exc}"
    where = (f"they are in {harvesting.HARVEST_FILE} beside this page" if (out_dir / harvesting.HARVEST_FILE).is_file()
             else f"scanfleet probes harvest {out_dir} writes them to {harvesting.HARVEST_FILE} for review")
    return found, (f"Draft rules for the unidentified ports with a reply, as scanfleet probes harvest drafts them ("
                   f"{where}; review, copy into files/probes/, provision, scan again).")


def write_page(merged_xml: Path, out_dir: Path, summary: Mapping[str, Any], *, state: RunState | None = None
               ) -> bool:
    """Write ``merged.html`` (:mod:`scanfleet.page`) from ``merged_xml``, its ``summary`` (summary.json), the
    run's ``state`` (None: a merge outside a run), ``changes.json`` when it is this merge's, and the draft rules
    of its unidentified ports. Written only when its text changed; returns whether it was."""
    merged_xml, out_dir = Path(merged_xml), Path(out_dir)
    table = page.ServiceTable()
    unidentified = []
    for row in iter_rows(merged_xml):
        table.add(row)
        if row["state"] == "open" and not row["identified"] and len(unidentified) < page.UNIDENTIFIED_SHOWN:
            unidentified.append(row)
    found, harvest_note = _harvest(merged_xml, out_dir, summary)
    changes, changes_note = _changes(out_dir, merged_xml)
    text = page.render(page.Page(
        run_id=str(summary.get("run_id") or (state.run_id if state else "")), summary=summary,
        facts=_run_facts(state), services=table, unidentified=unidentified, harvest=found,
        harvest_note=harvest_note, shards=_shard_bars(summary, state), changes=changes, changes_note=changes_note))
    path = out_dir / PAGE
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    with atomic_write(path) as f:
        f.write(text)
    return True


def write_run_page(results: str | Path, run_id: str) -> bool:
    """Write the run's ``merged.html`` again (mode 0600) from its files, e.g. once its changes.json is there."""
    directory, state = load_planned(Path(results), run_id)
    written = write_page(directory / MERGED, directory, load_summary(directory), state=state)
    os.chmod(directory / PAGE, 0o600)
    return written


def load_summary(out_dir: Path) -> dict[str, Any]:
    """The summary.json written by :func:`write_reports` in ``out_dir``."""
    path = Path(out_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScanfleetError(f"{path}: not found; run scanfleet merge shards --out {out_dir} first") from None
    except (OSError, ValueError) as exc:
        raise ScanfleetError(f"{path}: unreadable ({exc}); run scanfleet merge shards again") from None
    if not isinstance(data, dict) or "hosts" not in data or "shards" not in data:
        raise ScanfleetError(f"{path}: not a scanfleet summary; run scanfleet merge shards again")
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
    if summary.get("recover"):
        lines.append(summary["recover"]["line"])
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


MERGED = "merged.xml"
MERGED_FAST = "merged-fast.xml"  # the fast pass alone, when the run has a pass 2 (scanfleet.recover)


# --------------------------------------------------------------------------------------------------
# A run's report


def report_digest(inputs: Sequence[tuple[str, Path]], state: RunState, extra: Sequence[str] = ()) -> str:
    """Identifies a merge: its inputs (labels and sha256) and the validation/stylesheet files."""
    files = {a.id: a.files.get(XML) for a in state.attempts}
    payload = json.dumps({"inputs": [[label, files.get(label)] for label, _ in inputs], "extra": list(extra)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def lost_scanner_lines(state: RunState) -> list[str]:
    """Each scanner lost in the run and why, one line per attempt it lost, e.g.
    ``scanner2: no answer for 91 s (unreachable) in attempt 002-scanner2``."""
    lines = []
    for attempt in state.attempts:
        fetch_failed = attempt.status == "failed" and (attempt.detail or "").startswith("fetch failed")
        disk_full = attempt.status in ("failed", "partial") and "disk full on " in (attempt.detail or "")
        if attempt.status != "lost" and not fetch_failed and not disk_full:
            continue
        why = attempt.detail or "lost"
        if attempt.outcome and f"({attempt.outcome})" not in why:
            why += f" ({attempt.outcome})"
        lines.append(f"{attempt.host}: {why} in attempt {attempt.id}")
    return lines


def run_summary_lines(state: RunState, summary: Mapping[str, Any] | None) -> list[str]:
    """The end-of-play summary: the merged report's figures, coverage and what happened in the run."""
    lines = [f"run {state.run_id} (fingerprint {state.fingerprint[:12]}): {counted(state.total, 'target address')}"]
    if summary is not None:
        lines.extend(format_summary(summary).splitlines())
    cov = coverage(state)
    lines.append(cov.text())
    counts: dict[str, int] = {}
    for attempt in state.attempts:
        counts[attempt.status] = counts.get(attempt.status, 0) + 1
    lines.append("attempts: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)))
    for attempt in state.attempts:
        took = f"{attempt.elapsed:.1f} s" if attempt.elapsed is not None else "-"
        lines.append(f"  {attempt.id}: {attempt.status}, {counted(attempt.size, 'address')}, {took}"
                     + (f", {attempt.outcome}" if attempt.outcome and attempt.outcome != "finished" else "")
                     + (f" ({attempt.detail})" if attempt.detail else ""))
    lost = lost_scanner_lines(state)
    if lost:
        lines.append("lost scanners (their late output is ignored; their jobs are ended at the next contact):")
        lines.extend(f"  {line}" for line in lost)
    fallback = sorted({a.host for a in state.attempts if a.versiondb == ""})
    if fallback:
        lines.append(f"custom probes file missing on {', '.join(fallback)}: nmap's own nmap-service-probes "
                     "was used there")
    if state.events:
        lines.append("events:")
        lines.extend(f"  {e['text']}" for e in state.events)
    return lines


def report_run(*, results: str | Path, run_id: str, dtd: str | None = None, xsl: str | None = None,
               two_phase: bool = False, write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Merge every usable attempt into ``merged.xml`` (validated with ``dtd``) and write the reports
    (:func:`scanfleet.report.write_reports`); skipped when the inputs did not change since the last merge.
    TWO_PHASE: the run's phase-1 attempts and its recorded phase-2 jobs go through the two-phase merge
    (:func:`scanfleet.pairs.merge_two_phase`), and the lines add the accounting of every target address.
    Returns the summary, its text lines and the coverage."""
    now = time.time() if now is None else now
    results = Path(results)
    directory, state = load_planned(results, run_id)
    inputs = merge_inputs(state, results)
    phase2: list[tuple[str, Path]] = []
    accounting: dict[str, Any] = {}
    if two_phase:
        phase2_state = pairs.load_phase2(twophase.phase2_dir(results, run_id))
        phase2 = pairs.phase2_inputs(phase2_state) if phase2_state else []
        with contextlib.suppress(OSError, ValueError):
            accounting = json.loads(twophase.pairs_path(results, run_id).read_text(encoding="utf-8"))["accounting"]
    notes: list[str] = []
    dtd_path = Path(dtd) if dtd else None
    xsl_path = Path(xsl) if xsl else None
    # the build's own files (fetched from a scanner) first, else the controller's nmap package
    if dtd_path is None or not dtd_path.is_file():
        dtd_path = find_nmap_file("nmap.dtd")
        if dtd_path is not None:
            notes.append(f"merged.xml validated against {dtd_path} (the build's nmap.dtd was not fetched)")
    if xsl_path is None or not xsl_path.is_file():
        xsl_path = find_nmap_file("nmap.xsl")
    extra = [f"dtd={sha256_file(dtd_path) if dtd_path and dtd_path.is_file() else ''}",
             f"xsl={'yes' if xsl_path and xsl_path.is_file() else 'no'}"]
    # the run's pass 2 (scanfleet.recover): its recorded jobs' XML replace the fast pass's entries of the ports
    # they named; the fast pass alone is merged into merged-fast.xml first
    pass2 = recover.run_pass2(results, run_id)
    if pass2 is not None:
        extra += [f"pass2={label}:{sha256_file(path) if Path(path).is_file() else ''}" for label, path in pass2[1]]
        extra.append(f"pass2-ports={len(pass2[0].candidates)}")
    digest = report_digest([*inputs, *phase2], state, extra)
    merged = directory / MERGED
    summary = None
    changed = False
    if dtd_path is None:
        notes.append("merged.xml not validated: no nmap.dtd found (apt-get install nmap, or fetch the build's)")
    current = (state.report or {}).get("digest") == digest and merged.is_file()
    if current:
        with contextlib.suppress(ScanfleetError):
            summary = load_summary(directory)
    if summary is None and inputs:
        if not write:
            notes.append("check mode: merged report not written")
        else:
            (directory / SUMMARY_FILE).unlink(missing_ok=True)
            stylesheet = xsl_path.resolve().as_uri() if xsl_path else None
            fast = directory / MERGED_FAST if pass2 is not None else merged
            if two_phase:
                info = pairs.merge_two_phase(inputs, phase2, fast, dtd=dtd_path, stylesheet=stylesheet)
            else:
                info = merge([p for _, p in inputs], fast, labels=[label for label, _ in inputs],
                             dtd=dtd_path, stylesheet=stylesheet).to_dict()
            if pass2 is not None:  # the shards of both passes, each run once (not the fast pass's merged file)
                second = recover.merge_fast(fast, pass2[0], pass2[1], merged, dtd=dtd_path, stylesheet=stylesheet)
                info = {**second, "shards": [*info.get("shards", []), *(
                    s for s in second.get("shards", []) if str(s.get("label", "")).startswith("pass2/"))]}
            summary = write_reports(merged, directory, info, xsl=xsl_path, notes=notes, run_id=run_id, state=state)
            for name in (MERGED, MERGED_FAST, "merged.json", "merged.csv", PAGE, NMAP_PAGE, SUMMARY_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(directory / name, 0o600)
            state.report = {"digest": digest, "time": now,
                            "inputs": [label for label, _ in inputs] + [f"phase2/{label}" for label, _ in phase2]
                            + [f"pass2/{label}" for label, _ in (pass2[1] if pass2 else [])],
                            "validated": bool(info.get("validated")),
                            "recover": {k: v for k, v in info.get("recover", {}).items() if k != "named_ports"}}
            state.updated = now
            save_state(directory, state)
            changed = True
    cov = coverage(state)
    lines = run_summary_lines(state, summary)
    if accounting:
        lines.append(twophase.accounting_line(accounting))
    if write and changed:
        (directory / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(directory / "summary.txt", 0o600)
    return {"changed": changed, "run_id": run_id, "dir": str(directory), "merged": str(merged),
            "summary": summary, "lines": lines, "complete": cov.complete, "covered": cov.covered.size,
            "total": cov.total, "missing": cov.missing.describe() if cov.missing else "",
            "duplicates": cov.duplicates.describe() if cov.duplicates else "",
            "validated": bool(summary and summary.get("validated")), "inputs": [label for label, _ in inputs],
            "phase2_inputs": [label for label, _ in phase2], "accounting": accounting,
            "recover": (state.report or {}).get("recover") or None}


# --------------------------------------------------------------------------------------------------
# Command line


def _parse_label(text: str) -> tuple[str, Path]:
    name, sep, file = text.partition("=")
    if not sep or not name or not file:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FILE")
    return name, Path(file)


def _cmd_merge(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    files: list[Path] = list(args.files)
    labels: list[str | None] = [None] * len(files)
    by_real = {p.resolve(): i for i, p in enumerate(files)}
    for name, file in args.label:
        index = by_real.get(file.resolve())
        if index is None:
            files.append(file)
            labels.append(name)
            by_real[file.resolve()] = len(files) - 1
        else:
            labels[index] = name
    if not files:
        raise ScanfleetError("merge: no input files; give the shards' nmap .xml files")
    defaults = [default_label(p) for p in files]
    if len(set(defaults)) != len(defaults):
        defaults = [str(p) for p in files]
    final_labels = [label or default for label, default in zip(labels, defaults, strict=True)]

    dtd = Path(args.dtd) if args.dtd else find_nmap_file("nmap.dtd")
    if args.dtd and not dtd.is_file():
        raise ScanfleetError(f"{dtd}: no such DTD; give the path of nmap.dtd (--dtd)")
    notes = []
    if dtd is not None and shutil.which("xmllint") is None:
        notes.append("merged.xml not validated: xmllint not found (apt-get install libxml2-utils)")
        dtd = None
    elif dtd is None:
        notes.append("merged.xml not validated: nmap.dtd not found (give --dtd)")
    xsl = Path(args.xsl) if args.xsl else find_nmap_file("nmap.xsl")
    if args.xsl and not xsl.is_file():
        raise ScanfleetError(f"{xsl}: no such stylesheet; give the path of nmap.xsl (--xsl)")

    out_dir.mkdir(parents=True, exist_ok=True)
    # A failed run must not leave the previous run's summary looking current.
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    result = merge(files, out_dir / "merged.xml", labels=final_labels, dtd=dtd,
                   stylesheet=xsl.resolve().as_uri() if xsl else None)
    state = None
    with contextlib.suppress(ScanfleetError):
        state = load_state(out_dir)
    run_id = args.run_id or (state.run_id if state else out_dir.resolve().name)
    summary = write_reports(out_dir / "merged.xml", out_dir, result.to_dict(), xsl=xsl, notes=notes,
                            run_id=run_id, state=state if state and state.run_id == run_id else None)
    print(format_summary(summary))
    return 0 if result.exit == "success" else 1


def _cmd_summary(args: argparse.Namespace) -> int:
    summary = load_summary(Path(args.dir))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0 if summary.get("exit") == "success" else 1


def status_lines(status: Mapping[str, Any]) -> list[str]:
    """``scanfleet run status`` as text, from :func:`scanfleet.collect.run_status`."""
    lines = [f"run {status['run_id']} (fingerprint {status['fingerprint'][:12]}): "
             f"{counted(status['total'], 'target address')}, {counted(status['rounds'], 'round')} in "
             f"{counted(status['sessions'], 'session')}; options: {' '.join(status['options']) or 'none'}",
             status["coverage"],
             f"covered {status['covered']}, missing {status['missing']}, total {status['total']}, "
             f"duplicates {status['duplicates']}: {'complete' if status['complete'] else 'not complete'}"]
    counts: dict[str, int] = {}
    for attempt in status["attempts"]:
        counts[attempt["status"]] = counts.get(attempt["status"], 0) + 1
    lines.append("attempts: " + (", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)) or "none"))
    for a in status["attempts"]:
        took = f"{a['elapsed']:.1f} s" if a["elapsed"] is not None else "-"
        lines.append(f"  {a['id']}: {a['status']} on {a['host']}, round {a['round']}, IPv{a['family']}, "
                     f"{counted(a['size'], 'address')}, {took}"
                     + (f", {a['outcome']}" if a["outcome"] and a["outcome"] != "finished" else "")
                     + (f" ({a['detail']})" if a["detail"] else ""))
    report = status.get("report")
    lines.append(f"report: {MERGED} of {', '.join(report['inputs'])}" if report else "report: none yet")
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``scanfleet merge shards|summary`` (called by scanfleet.cli)."""
    parser = sub.add_parser("merge", help="merge the shards' nmap XML into one report; print its summary",
                            description="Merge the shards' nmap XML into one report; print its summary.")
    actions = parser.add_subparsers(dest="merge_command", required=True)
    p = actions.add_parser(
        "shards", help="merge the shards' nmap XML into one report",
        description="Merge the nmap XML outputs of the shards (one FILE per shard; the shard name is "
                    "the file's parent directory unless --label NAME=FILE) into DIR/merged.xml, and "
                    "write merged.json, merged.csv, merged.html (a page for people), merged-nmap.html (nmap's "
                    "rendering, when xsltproc and nmap.xsl exist) and summary.json. Truncated inputs are salvaged. "
                    "Exit status: 0 all shards complete, 1 merged but some shard truncated or failed, 2 bad input.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--run-id", default="", metavar="ID", help="the run id column of merged.csv/.json and the "
                   "page's title (default: the run id of DIR/state.json, else DIR's name)")
    p.add_argument("--dtd", metavar="PATH", help="nmap.dtd to validate merged.xml with "
                   "(default: the nmap package's, if found)")
    p.add_argument("--xsl", metavar="PATH", help="nmap.xsl for merged-nmap.html (default: the nmap package's)")
    p.add_argument("--label", action="append", default=[], type=_parse_label, metavar="NAME=FILE",
                   help="name the shard of FILE (FILE is added to the inputs if not listed)")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="nmap XML output of one shard")
    p.set_defaults(func=_cmd_merge)

    p = actions.add_parser("summary", help="print the summary of a merge again",
                           description="Print the summary of the merge written in DIR by scanfleet merge shards.")
    p.add_argument("dir", metavar="DIR", help="the --out directory of scanfleet merge shards")
    p.add_argument("--json", action="store_true", help="print summary.json instead of text")
    p.set_defaults(func=_cmd_summary)
