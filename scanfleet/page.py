"""``merged.html``: one self-contained page for people, from a run's merged report (see :mod:`scanfleet.report`).

The page has no external asset: the CSS is inline, the chart is inline SVG, there is no script, no font and no
image, and a Content-Security-Policy meta tag (``default-src 'none'``) tells the browser to fetch nothing even so.
Everything taken from the scan (service names, products, replies: arbitrary bytes) is escaped
(:func:`html.escape`). Sections, one function each:

* ``summary``: run id, targets, coverage (covered/total), hosts up/down, open ports, services named and
  unnamed, lost scanners, merge status and notes: the facts of the run's summary lines;
* ``services``: the open ports by service, then product and version, with their hosts:ports (at most
  :data:`ENDPOINTS_SHOWN` listed per line; merged.csv has them all);
* ``unidentified``: every open port whose service was not identified (at most :data:`UNIDENTIFIED_SHOWN`), with
  the first reply nmap recorded in its fingerprint (decoded: :func:`scanfleet.probes.harvest.excerpt`) and the
  draft rule of its group, as ``scanfleet probes harvest`` drafts it (:class:`scanfleet.probes.harvest.Harvest`);
* ``shards``: coverage and time per shard (one attempt each) as SVG bars: time (relative to the longest) and
  addresses covered out of the shard's;
* ``changes``: the changes since the earlier run (``changes.json`` of :mod:`scanfleet.diff`), or "no earlier run".

The page states its own counts in ``data-rows`` / ``data-bars`` attributes so that a browser test
(``tests/browser/check_html.py``) can check that what rendered is what was written.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scanfleet.probes.harvest import Draft, Harvest, PortService, excerpt

ENDPOINTS_SHOWN = 8  # host:port listed per product/version line
UNIDENTIFIED_SHOWN = 200  # unidentified ports listed
CHANGES_SHOWN = 200  # changes listed
REPLY_SHOWN = 120  # bytes of a reply shown
CSP = "default-src 'none'; style-src 'unsafe-inline'"
STATUS_COLOURS = {"finished": "#3b8a3e", "partial": "#d08a1a", "failed": "#b8322a", "lost": "#b8322a",
                  "assigned": "#8a8a8a", "complete": "#3b8a3e", "truncated": "#d08a1a"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}code,pre{font:12px/1.35 ui-monospace,monospace}
pre{white-space:pre-wrap;word-break:break-all;margin:0}dl{display:grid;grid-template-columns:max-content auto;
gap:.2em 1em}dt{font-weight:600}dd{margin:0}.muted{color:#666}.rule{background:#f7f7f2;padding:.3em}
svg text{font:12px system-ui,sans-serif}
"""


def esc(value: Any) -> str:
    """Text (or anything printed as text) safe in an HTML element or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


@dataclasses.dataclass
class ServiceTable:
    """The open ports by service, product and version; filled one report row at a time (:meth:`add`)."""

    lines: dict[tuple[str, str, str, bool], list[str]] = dataclasses.field(default_factory=dict)
    counts: dict[tuple[str, str, str, bool], int] = dataclasses.field(default_factory=dict)

    def add(self, row: Mapping[str, Any]) -> None:
        """Count an open port (a row of :func:`scanfleet.report.iter_rows`; other rows are ignored)."""
        if row.get("state") != "open":
            return
        key = (row["service"] or "unknown", row["product"] or "", row["version"] or "", bool(row["identified"]))
        where = f"{row['address']}:{row['port']}/{row['protocol']}"
        listed = self.lines.setdefault(key, [])
        if len(listed) < ENDPOINTS_SHOWN:
            listed.append(where + (f" ({row['hostname']})" if row.get("hostname") else ""))
        self.counts[key] = self.counts.get(key, 0) + 1


@dataclasses.dataclass(frozen=True)
class ShardBar:
    """One shard (attempt) in the chart."""

    label: str
    status: str
    elapsed: float | None  # seconds
    size: int | None  # addresses of the shard (None: not known, e.g. a merge of files outside a run)
    covered: int | None  # addresses scanned for good


@dataclasses.dataclass
class Page:
    """What the page shows (built by :func:`scanfleet.report.write_page`)."""

    run_id: str
    summary: Mapping[str, Any]  # summary.json
    facts: list[tuple[str, str]]  # run facts not in summary.json: targets, coverage, lost scanners
    services: ServiceTable
    unidentified: list[Mapping[str, Any]]  # report rows of the open ports not identified (at most SHOWN)
    harvest: Harvest | None
    harvest_note: str  # why there are no drafts, or where harvest.probes is
    shards: list[ShardBar]
    changes: Mapping[str, Any] | None  # changes.json of this merged.xml
    changes_note: str  # what to say when there are none


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of ROWS (cells already escaped HTML)."""
    out = [f'<table id="{table_id}" data-rows="{len(rows)}"><thead><tr>',
           *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    out.append("</tbody></table>")
    return "".join(out)


def summary_section(page: Page) -> str:
    s = page.summary
    hosts = s.get("hosts") or {}
    named, unnamed = s.get("identified") or {}, s.get("unidentified") or {}
    facts = [("Run", page.run_id or "-"), *page.facts[:2],
             ("Hosts", f"{hosts.get('up', 0)} up, {hosts.get('down', 0)} down, {hosts.get('total', 0)} total"),
             ("Open ports", str(s.get("open_ports", 0))),
             ("Services", f"{named.get('count', 0)} named, {unnamed.get('count', 0)} unnamed"),
             *page.facts[2:],
             ("Merge", f"{s.get('exit') or 'unknown'}" + (f" ({s['errormsg']})" if s.get("errormsg") else "")
              + (", validated against nmap.dtd" if s.get("validated") else ", not validated")),
             *(("Note", note) for note in s.get("notes") or [])]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<section id="summary"><h2>Summary</h2><dl data-rows="{len(facts)}">{items}</dl></section>'


def services_section(page: Page) -> str:
    table = page.services
    keys = sorted(table.counts, key=lambda k: (k[0].lower(), k[1].lower(), k[2], not k[3]))
    rows = []
    for key in keys:
        service, product, version, identified = key
        count = table.counts[key]
        more = count - len(table.lines[key])
        where = ", ".join(table.lines[key]) + (f", ... {more} more" if more else "")
        rows.append([esc(service), esc(product or "-"), esc(version or "-"), "yes" if identified else "no",
                     str(count), esc(where)])
    body = (_table("services", ["Service", "Product", "Version", "Identified", "Ports", "Hosts:ports"], rows)
            if rows else '<p id="services" data-rows="0">No open port.</p>')
    return (f'<section id="by-service"><h2>Services</h2>{body}<p class="muted">Identified: named by nmap\'s service '
            "detection (a name from nmap's port table, tcpwrapped or unknown is not).</p></section>")


def _drafts_by_port(h: Harvest | None) -> dict[tuple[str, int, str], list[tuple[int, Draft]]]:
    out: dict[tuple[str, int, str], list[tuple[int, Draft]]] = {}
    for rank, d in enumerate(h.drafts if h else [], 1):
        for m in d.group.members:
            out.setdefault((m.address, m.port, m.protocol), []).append((rank, d))
    return out


def _reply_cell(ps: PortService | None) -> str:
    if ps is None or ps.fingerprint is None or not ps.fingerprint.replies:
        return '<span class="muted">no reply recorded (nmap wrote no fingerprint)</span>'
    first = ps.fingerprint.replies[0]
    tunnel = " through SSL" if ps.fingerprint.ssl else ""
    return (f"to {esc(first.probe)}{tunnel} ({len(first.data)} bytes):"
            f"<pre>{esc(excerpt(first.data, REPLY_SHOWN))}</pre>")


def _draft_block(rank: int, d: Draft) -> str:
    g = d.group
    where = ", ".join(m.where for m in g.members[:ENDPOINTS_SHOWN]) + (", ..." if g.count > ENDPOINTS_SHOWN else "")
    notes = "".join(f"<li>{esc(n)}</li>" for n in [f"service: {d.service} ({d.service_from})", *d.anchors, *d.notes])
    return (f'<li id="rule-{rank}"><b>Rule {rank}</b>: {g.count} port(s) ({esc(where)}), {esc(d.status)}, under '
            f'{esc(g.protocol)} {esc(g.probe)}<pre class="rule">{esc(d.line)}</pre><ul>{notes}</ul></li>')


def unidentified_section(page: Page) -> str:
    s = page.summary.get("unidentified") or {}
    count = int(s.get("count", 0))
    if not count:
        why = "every open port was identified" if page.summary.get("open_ports") else "no open port"
        return f'<section id="unidentified"><h2>Unidentified ports</h2><p data-rows="0">None: {why}.</p></section>'
    by_port = _drafts_by_port(page.harvest)
    services = {(p.address, p.port, p.protocol): p for p in (page.harvest.ports if page.harvest else [])}
    rows = []
    for row in page.unidentified:
        key = (row["address"], row["port"], row["protocol"])
        where = f"{row['address']}:{row['port']}/{row['protocol']}" + (
            f" ({row['hostname']})" if row.get("hostname") else "")
        rules = ", ".join(f'<a href="#rule-{rank}">rule {rank}</a>' + (" (dropped)" if d.status == "dropped" else "")
                          for rank, d in by_port.get(key, [])) or '<span class="muted">none</span>'
        rows.append([esc(where), esc(" ".join(filter(None, (row["service"], row["product"]))) or "-"),
                     _reply_cell(services.get(key)), rules])
    more = count - len(rows)
    out = ['<section id="unidentified"><h2>Unidentified ports</h2>',
           _table("unidentified-ports", ["Port", "Service (nmap's guess)", "First reply", "Draft rule"], rows)]
    if more > 0:
        out.append(f"<p>... {more} more (merged.csv has them all).</p>")
    out.append(f"<p>{esc(page.harvest_note)}</p>")
    if page.harvest and page.harvest.drafts:
        out.append('<ol id="rules">' + "".join(_draft_block(n, d) for n, d in enumerate(page.harvest.drafts, 1))
                   + "</ol>")
    out.append("</section>")
    return "".join(out)


def shard_chart(bars: Sequence[ShardBar]) -> str:
    """Inline SVG: per shard a time bar (longest = full width) and a coverage bar (covered of its addresses)."""
    label_w, bar_w, text_w, row_h = 170, 360, 230, 30
    longest = max((b.elapsed or 0.0 for b in bars), default=0.0) or 1.0
    height = row_h * len(bars) + 24
    out = [f'<svg id="shard-chart" data-bars="{2 * len(bars)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{label_w + bar_w + text_w}" height="{height}" role="img" aria-label="time and coverage per '
           f'shard"><text x="{label_w}" y="14">time (longest {longest:.1f} s) / addresses covered</text>']
    for i, b in enumerate(bars):
        y = 24 + i * row_h
        colour = STATUS_COLOURS.get(b.status, "#8a8a8a")
        time_w = round(bar_w * (b.elapsed or 0.0) / longest, 1)
        share = (b.covered / b.size) if b.size and b.covered is not None else (1.0 if b.status == "complete" else 0.0)
        cover_w = round(bar_w * share, 1)
        took = f"{b.elapsed:.1f} s" if b.elapsed is not None else "no time"
        covered = f"{b.covered}/{b.size} addresses" if b.size is not None and b.covered is not None else b.status
        out += [f'<text x="0" y="{y + 12}">{esc(b.label)}</text>',
                f'<rect class="bar time" x="{label_w}" y="{y}" width="{time_w}" height="12" fill="{colour}">'
                f"<title>{esc(b.label)}: {esc(b.status)}, {esc(took)}</title></rect>",
                f'<rect class="bar coverage" x="{label_w}" y="{y + 14}" width="{cover_w}" height="6" fill="#4a6fa5">'
                f"<title>{esc(b.label)}: {esc(covered)}</title></rect>",
                f'<text x="{label_w + bar_w + 8}" y="{y + 12}">{esc(b.status)}, {esc(took)}, {esc(covered)}</text>']
    out.append("</svg>")
    return "".join(out)


def shards_section(page: Page) -> str:
    if not page.shards:
        return '<section id="shards"><h2>Shards</h2><p>No shard recorded.</p></section>'
    legend = ", ".join(f'<span style="color:{c}">{esc(s)}</span>' for s, c in STATUS_COLOURS.items()
                       if any(b.status == s for b in page.shards))
    return (f'<section id="shards"><h2>Time and coverage per shard</h2>{shard_chart(page.shards)}'
            f"<p>Upper bar: time, coloured by status ({legend}); lower bar: addresses covered.</p></section>")


def _service_text(service: Mapping[str, Any] | None) -> str:
    return " ".join(str(service[k]) for k in ("service", "product", "version") if service and service.get(k)) or "-"


def changes_section(page: Page) -> str:
    data = page.changes
    if not data:
        return f'<section id="changes"><h2>Changes</h2><p data-rows="0">{esc(page.changes_note)}</p></section>'
    changes: Iterable[Mapping[str, Any]] = data.get("changes") or []
    rows = []
    for c in list(changes)[:CHANGES_SHOWN]:
        where = c["address"] + (f":{c['port']}/{c['protocol']}" if c.get("port") is not None else "") + (
            f" ({c['hostname']})" if c.get("hostname") else "")
        service = c.get("old_service") if c["kind"] == "port_closed" else c.get("new_service")
        rows.append([esc(c["kind"]), esc(where), esc(c.get("old")), esc(c.get("new")),
                     esc(_service_text(service) if c.get("port") is not None else "")])
    total = len(data.get("changes") or [])
    more = f"<p>... {total - len(rows)} more (changes.csv has them all).</p>" if total > len(rows) else ""
    table = _table("changes-table", ["Change", "Where", "Was", "Now", "Service"], rows) if rows else ""
    return (f'<section id="changes"><h2>Changes</h2><p>{esc(data.get("summary", ""))}</p>{table}{more}'
            "</section>")


SECTIONS = (summary_section, services_section, unidentified_section, shards_section, changes_section)


def render(page: Page) -> str:
    """The whole page."""
    title = f"scanfleet run {page.run_id}" if page.run_id else "scanfleet merged report"
    body = "\n".join(section(page) for section in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><h1>{esc(title)}</h1>\n{body}\n"
            '<p class="muted">Written by scanfleet from merged.xml; nmap\'s own rendering: '
            '<a href="merged-nmap.html">merged-nmap.html</a>; every port: merged.csv, merged.json.</p>'
            "</body></html>\n")
