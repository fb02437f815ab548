"""Which rules change between two nmap-service-probes files: what ``ansible-playbook --diff`` shows when the
nmap_probes role would push a new file (and the ``compared`` state of the probes module).

Rules are compared per probe (protocol and name), line by line: the ``Probe`` line, its directives and its
``match``/``softmatch`` lines, plus the ``Exclude`` directive before the first probe. Comments and blank lines
(the merge's marker comments among them) are left out, so a changed comment is no change. A rule that only moved
within its probe is no change either: a line counts as removed or added when the number of its copies changed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from scanfleet.probes.model import ProbesFile

RULE_KINDS = ("exclude", "probe", "directive", "match")
PREAMBLE = "(before the first Probe line)"


@dataclass(frozen=True)
class ProbeChange:
    """The lines of one probe that the new file removes and adds (file order), and whether the probe itself is
    new or gone."""

    probe: str  # "TCP GetRequest", or PREAMBLE
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    status: str = "changed"  # changed, added, removed

    def as_dict(self) -> dict[str, object]:
        return {"probe": self.probe, "status": self.status, "removed": self.removed, "added": self.added}


def _sections(pf: ProbesFile) -> dict[str, list[str]]:
    """Each probe's rule lines (and the preamble's Exclude) by probe label, in file order."""
    out = {PREAMBLE: [ln.content for ln in pf.preamble if ln.kind in RULE_KINDS]}
    for probe in pf.probes:
        out.setdefault(probe.label, []).extend(ln.content for ln in probe.lines() if ln.kind in RULE_KINDS)
    return out


def _only_in(lines: list[str], other: list[str]) -> list[str]:
    """The lines of LINES beyond their count in OTHER, in LINES' order."""
    spare = Counter(lines) - Counter(other)
    out = []
    for line in lines:
        if spare[line] > 0:
            spare[line] -= 1
            out.append(line)
    return out


def rule_changes(before: ProbesFile, after: ProbesFile) -> list[ProbeChange]:
    """The probes whose rules differ between BEFORE and AFTER: AFTER's order first, then probes only BEFORE has."""
    old, new = _sections(before), _sections(after)
    changes = []
    for label in [*new, *(label for label in old if label not in new)]:
        was, now = old.get(label, []), new.get(label, [])
        removed, added = _only_in(was, now), _only_in(now, was)
        if removed or added:
            status = "added" if label not in old else "removed" if label not in new else "changed"
            changes.append(ProbeChange(label, removed, added, status))
    return changes


def summary(changes: list[ProbeChange]) -> str:
    if not changes:
        return "no rule changes"
    removed = sum(len(c.removed) for c in changes)
    added = sum(len(c.added) for c in changes)
    return f"{len(changes)} probe(s) changed: {added} line(s) added, {removed} removed"


def ansible_diff(changes: list[ProbeChange], before_name: str, after_name: str) -> dict[str, str]:
    """Ansible's diff dict (before/after texts) holding only the changed probes: each under a heading of its
    label, with the lines it loses (before) and gains (after), so that the unified diff Ansible prints shows the
    probe as context and the rules as -/+ lines."""
    before, after = [], []
    for change in changes:
        heading = f"# {change.probe} ({change.status})\n"
        before.append(heading + "".join(line + "\n" for line in change.removed))
        after.append(heading + "".join(line + "\n" for line in change.added))
    return {"before_header": before_name, "after_header": after_name, "before": "".join(before),
            "after": "".join(after)}
