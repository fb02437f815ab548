"""Every conditional in the project's playbooks, roles and molecule scenarios is a string (or a boolean).

A plain YAML scalar holding ': ' becomes a mapping: ``- x is search('a: b')`` under ``that:`` is the mapping
{"x is search('a": "b')"}, which ansible-core 2.19 rejects only when the task runs ("Conditional expressions
must be strings"). Seen in molecule/faults/verify.yml, after a 40-minute CI run; yamllint does not see it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("that", "when", "failed_when", "changed_when", "until")
FILES = sorted(p for d in ("playbooks", "roles", "molecule") for p in (ROOT / d).rglob("*.yml"))


def broken(node, path: str = "") -> list[str]:
    """Each conditional under ``node`` that is neither a string nor a boolean, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in KEYS:
                for item in value if isinstance(value, list) else [value]:
                    if not isinstance(item, (str, bool)):
                        found.append(f"{path}/{key}: {item!r}")
            found += broken(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += broken(item, f"{path}[{i}]")
    return found


def test_the_check_finds_a_conditional_that_yaml_made_a_mapping():
    doc = yaml.safe_load("- assert:\n    that:\n      - x is search('a: b')\n      - \"x is search('a: b')\"\n")
    assert broken(doc) == ["[0]/assert/that: {\"x is search('a\": \"b')\"}"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_conditional_is_a_string(path):
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert not broken(docs), f"{path.relative_to(ROOT)}: quote these conditionals whole: {broken(docs)}"
