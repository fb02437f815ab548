"""Every role documents each default (a comment) and declares it, with the same default, in argument_specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())
TYPES = {bool: "bool", int: "int", str: "str", list: "list", dict: "dict", float: "float"}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_are_commented_and_declared(role):
    text = (role / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(text) or {}
    lines = text.splitlines()
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for name, value in defaults.items():
        assert name.startswith(role.name + "_"), f"{role.name}: {name} lacks the role prefix"
        index = next(i for i, line in enumerate(lines) if re.match(rf"^{name}:", line))
        assert index > 0 and lines[index - 1].startswith("#"), f"{role.name}: {name} has no comment above it"
        assert name in specs, f"{role.name}: {name} is not in meta/argument_specs.yml"
        assert specs[name].get("default") == value, f"{role.name}: {name} default differs from argument_specs"
        assert specs[name].get("description"), f"{role.name}: {name} has no description in argument_specs"
        if value is not None:
            assert specs[name]["type"] == TYPES[type(value)], f"{role.name}: {name} type differs"
    assert set(specs) <= set(defaults) | {k for k, v in specs.items() if v.get("required")}, (
        f"{role.name}: argument_specs declares options without a default: {set(specs) - set(defaults)}")
