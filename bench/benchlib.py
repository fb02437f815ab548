"""What every benchmark's JSON result starts with (date, machine, exact command), and how it is written."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path


def header(name: str, started: float) -> dict:
    """The common head of a result: benchmark name, start date (UTC), machine, the command as run."""
    return {
        "benchmark": name,
        "date": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join([sys.argv[0], *sys.argv[1:]]),
    }


def emit(doc: dict, out: str | None, *, show: dict | None = None) -> None:
    """Print DOC (or SHOW, a shorter view of it) and write DOC as JSON to OUT when given."""
    print(json.dumps(doc if show is None else show, indent=2))
    if out:
        Path(out).write_text(json.dumps(doc, indent=2) + "\n")
