#!/usr/bin/env python3
"""Print a short digest of what failed in the test logs (make test calls it last, when a stage failed).

A CI log is often read from its end only, and a molecule scenario prints hundreds of lines after the task
that failed (cleanup, destroy, the recap). This finds, in every log of LOG_DIR (newest last), the Ansible
tasks that failed (``fatal:``/``failed:``, with the task's name and the first lines of its result: the
assertion and the message) and pytest's failures (``FAILED``/``E`` lines), and prints them, shortened, as the
last lines of the run.

    python tests/failure_digest.py .cache/logs [--max-lines 24]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# molecule's rich output frames each playbook line: "  │ ", "  └─ ", "  ┌─ "
FRAME = re.compile(r"^\s*[│└┌├─]+\s?")
ANSIBLE_FAILURE = re.compile(r"^(fatal|failed): \[")
TASK = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<name>[^\]]*)")
BLOCK_END = re.compile(r"^(TASK |PLAY |RUNNING HANDLER|ok: |changed: |skipping: |included: |fatal: |failed: "
                       r"|\.\.\.ignoring)")
# molecule's last line per scenario: "default : actions=7 successful=7 disabled=0 skipped=0 missing=0 failed=0"
SCENARIO_SUMMARY = re.compile(r"^\S+\s*: actions=\d+\s.*\bfailed=(?P<failed>\d+)")
PYTEST_FAILURE = re.compile(r"^(FAILED|ERROR) \S+|^E\s{2,}\S")
WIDTH = 900  # CI folds longer lines
# fields of a failed result that tell nothing
NOISE = re.compile(r"\b(changed|evaluated_to|unreachable): (true|false)\b|\bansible_loop_var: \S+")


def clean(line: str) -> str:
    return FRAME.sub("", ANSI.sub("", line)).rstrip()


def collapse(lines: list[str]) -> str:
    """A failed task's result on one line: its fields joined, the ones that say nothing dropped, shortened."""
    text = " ".join(" ".join(line.split()) for line in lines if line.strip())
    text = " ".join(NOISE.sub("", text).split())
    return text if len(text) <= WIDTH else text[:WIDTH] + " ..."


def ansible_failures(lines: list[str]) -> list[list[str]]:
    """Each failed task (ignored failures left out): its name with the failure line, then its result (the
    assertion, the message) on one line."""
    found = []
    task = ""
    for i, line in enumerate(lines):
        match = TASK.match(line)
        if match:
            task = match.group("name")
            continue
        if not ANSIBLE_FAILURE.match(line):
            continue
        result: list[str] = []
        ignored = False
        for follow in lines[i + 1:]:
            if BLOCK_END.match(follow):
                ignored = follow.strip().startswith("...ignoring")
                break
            result.append(follow)
        if not ignored:
            found.append([f"TASK [{task}] {line.strip()}", "  " + collapse(result)])
    return found


def scenario_passed(lines: list[str]) -> bool:
    """The log is of a molecule scenario that passed: the failures in it were expected (rescued by the
    scenario's own blocks, e.g. the bad-input checks) and would only push the real ones out of the digest."""
    counts = [int(m.group("failed")) for m in map(SCENARIO_SUMMARY.match, lines) if m]
    return bool(counts) and not any(counts)


def pytest_failures(lines: list[str]) -> list[list[str]]:
    return [[collapse([line])] for line in lines if PYTEST_FAILURE.match(line)]


def digest(log_dir: Path, max_lines: int) -> list[str]:
    """The failures in LOG_DIR's logs (oldest log first), at most MAX_LINES lines, cut at the end: a CI log is
    read from its end, so these must be the last lines printed, and few."""
    out: list[str] = []
    logs = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if log_dir.is_dir() else []
    for log in logs:
        lines = [clean(line) for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
        if scenario_passed(lines):
            continue
        blocks = ansible_failures(lines) + pytest_failures(lines)
        if not blocks:
            continue
        out.append(f"--- {log.name} ---")
        for block in blocks:
            out.extend(block)
    if len(out) > max_lines:
        out = [f"(first {max_lines - 1} of {len(out)} lines)", *out[:max_lines - 1]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--max-lines", type=int, default=24)
    args = parser.parse_args()
    lines = digest(args.log_dir, args.max_lines)
    print(f"==== what failed (full logs in {args.log_dir}) ====")
    print("\n".join(lines) if lines else "no failed task or test found in the logs; read them in full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
