#!/usr/bin/env python3
"""Check in a real browser that a scanfleet ``merged.html`` renders: its summary, the table by service, the
unidentified ports, the chart of the shards (its SVG bars) and the changes, and that it loads nothing from outside.

usage: python3 tests/browser/check_html.py PATH [--chromium BIN] [--timeout SECONDS]

Loads PATH in Debian's Chromium, headless (``chromium --headless --dump-dom file://PATH``, with a private profile
directory under a temporary directory, removed afterwards), and reads the DOM the browser built: what a person
sees, after the browser's own HTML parser (an unescaped reply would have broken the tables there). The page
states its counts in ``data-rows`` / ``data-bars`` attributes (scanfleet/page.py); the DOM must hold as many rows
and bars. Standard library only, so that it runs on any controller (molecule verify calls it on a lab run's page).

Exit status: 0 the page rendered as written; 1 it did not (each problem on its own line); 2 it could not be
checked (no such file, no chromium: ``apt-get install chromium``, chromium failed or did not finish in time: it is
then ended by its process group, which it leads).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

TIMEOUT = 60.0  # seconds for chromium to load and dump the page
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
EXTERNAL = ("script", "link", "img", "iframe", "object", "embed", "video", "audio", "source", "base")
SUMMARY_TERMS = ("Run", "Hosts", "Open ports", "Services", "Merge")


class CheckError(Exception):
    """The page could not be checked (exit 2)."""


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.items: list[Node | str] = []  # child elements and text, in document order

    @property
    def children(self) -> list[Node]:
        return [item for item in self.items if isinstance(item, Node)]

    def iter(self, tag: str | None = None) -> Iterator[Node]:
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def find_id(self, element_id: str) -> Node | None:
        return next((n for n in self.iter() if n.attrs.get("id") == element_id), None)

    def all_text(self) -> str:
        return "".join(item if isinstance(item, str) else item.all_text() for item in self.items)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Tree(HTMLParser):
    """The DOM as Chromium serialised it (well formed: every element closed, except void ones)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.items.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.items.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.items.append(data)


def dump_dom(path: Path, chromium: str, timeout: float = TIMEOUT) -> str:
    """The DOM of PATH after Chromium loaded it (``--dump-dom``)."""
    with tempfile.TemporaryDirectory(prefix="scanfleet-chromium-") as scratch:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                   "--disable-background-networking", "--disable-component-update", "--mute-audio",
                   f"--user-data-dir={scratch}/profile", "--dump-dom", path.resolve().as_uri()]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, "HOME": scratch})
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = "", f"did not finish in {timeout:g} s (ended)"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # chromium and any helper process it left, by its group
            proc.wait()
        if proc.returncode != 0 or not out.strip():
            last = [line for line in err.splitlines() if "ERROR:dbus" not in line][-3:]
            raise CheckError(f"{' '.join(command[:1])} --dump-dom {path}: "
                             f"{'exit ' + str(proc.returncode) if proc.returncode else 'no DOM'}; "
                             f"{' | '.join(last) or 'no message'}")
        return out


def _rows(table: Node) -> list[Node]:
    body = next(table.iter("tbody"), None)
    return list(body.iter("tr")) if body is not None else []


def _counted(root: Node, element_id: str, cells: int, problems: list[str]) -> int:
    """Check a table (or its 'none' paragraph) of the page: as many rows as data-rows, CELLS cells each."""
    node = root.find_id(element_id)
    if node is None:
        problems.append(f"#{element_id}: not in the DOM")
        return 0
    declared = node.attrs.get("data-rows", "")
    if not declared.isdigit():
        problems.append(f"#{element_id}: no data-rows attribute (not a page written by scanfleet?)")
        return 0
    if node.tag != "table":
        if declared != "0":
            problems.append(f"#{element_id}: a <{node.tag}> where a table of {declared} rows was written")
        return 0
    rows = _rows(node)
    if len(rows) != int(declared):
        problems.append(f"#{element_id}: {len(rows)} rows in the DOM, {declared} written (broken markup?)")
    bad = [i for i, r in enumerate(rows, 1) if len(list(r.iter("td"))) < cells]
    if bad:
        problems.append(f"#{element_id}: rows {bad[:5]} have fewer than {cells} cells")
    return len(rows)


def check_dom(dom: str) -> tuple[list[str], list[str]]:
    """(problems, what was found) of a page's DOM."""
    tree = Tree()
    tree.feed(dom)
    tree.close()
    root = tree.root
    problems: list[str] = []
    found: list[str] = []
    title = next(root.iter("title"), None)
    if title is None or not title.all_text().startswith("scanfleet"):
        problems.append("the page's <title> is not scanfleet's: not a merged.html written by scanfleet")
    summary = root.find_id("summary")
    if summary is None:
        problems.append("#summary: not in the DOM")
    else:
        terms = [dt.all_text().strip() for dt in summary.iter("dt")]
        missing = [t for t in SUMMARY_TERMS if t not in terms]
        if missing:
            problems.append(f"#summary: no {', '.join(missing)} (found: {', '.join(terms) or 'nothing'})")
        found.append(f"summary: {len(terms)} facts")
    services = _counted(root, "services", 5, problems)
    found.append(f"services: {services} rows")
    if root.find_id("unidentified") is None:
        problems.append("#unidentified: the section is not in the DOM")
    else:
        table = root.find_id("unidentified-ports")
        count = _counted(root, "unidentified-ports", 4, problems) if table is not None else 0
        found.append(f"unidentified: {count} rows" if table is not None else "unidentified: none")
    svg = root.find_id("shard-chart")
    if svg is None or svg.tag != "svg":
        problems.append("#shard-chart: no SVG chart in the DOM" if root.find_id("shards") else
                        "#shards: the section is not in the DOM")
    else:
        bars = [r for r in svg.iter("rect") if "bar" in r.classes()]
        declared = svg.attrs.get("data-bars", "")
        if not declared.isdigit() or len(bars) != int(declared) or not bars:
            problems.append(f"#shard-chart: {len(bars)} bars in the DOM, {declared or 'no count'} written")
        widths = []
        for bar in bars:
            try:
                widths.append(float(bar.attrs.get("width", "")))
            except ValueError:
                problems.append(f"#shard-chart: a bar without a numeric width: {bar.attrs}")
        if widths and not any(w > 0 for w in widths):
            problems.append("#shard-chart: every bar has width 0")
        found.append(f"chart: {len(bars)} bars")
    if root.find_id("changes") is None:
        problems.append("#changes: the section is not in the DOM")
    elif root.find_id("changes-table") is not None:
        found.append(f"changes: {_counted(root, 'changes-table', 5, problems)} rows")
    for node in root.iter():
        if node.tag in EXTERNAL and not (node.tag == "link" and not node.attrs.get("href")):
            problems.append(f"<{node.tag}> in the page: it must hold no script and load nothing")
        for name in ("src", "srcset", "data", "action", "poster"):
            if node.attrs.get(name):
                problems.append(f"<{node.tag} {name}={node.attrs[name]!r}>: the page must load nothing")
        href = node.attrs.get("href", "")
        if ":" in href.split("#")[0] or href.startswith("//"):
            problems.append(f"<{node.tag} href={href!r}>: a link out of the run's directory")
        style = (node.attrs.get("style", "") + (node.all_text() if node.tag == "style" else "")).lower()
        if "url(" in style or "@import" in style:
            problems.append(f"<{node.tag}>: a style that loads something (url( or @import)")
    return problems, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, metavar="PATH", help="a merged.html written by scanfleet")
    parser.add_argument("--chromium", default="", help="the browser (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds (default {TIMEOUT:g})")
    args = parser.parse_args(argv)
    try:
        if not args.path.is_file():
            raise CheckError(f"{args.path}: no such file; give the path of a run's merged.html")
        chromium = args.chromium or shutil.which("chromium") or ""
        if not chromium:
            raise CheckError("chromium not found: install the Debian package chromium (make deps installs it)")
        problems, found = check_dom(dump_dom(args.path, chromium, args.timeout))
    except CheckError as exc:
        print(f"check_html: cannot check: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"check_html: {args.path} did not render as written:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"check_html: {args.path} rendered in chromium: {'; '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
