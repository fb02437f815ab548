"""scanfleet's command line: one command per noun; a module that cannot be imported is an error."""

import pytest

from scanfleet import cli


def test_one_command_per_noun():
    parser = cli.build_parser()
    nouns = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(nouns) == ["diff", "merge", "pairs", "probes", "recover", "run", "source", "targets"]


def test_a_module_that_cannot_be_imported_fails_loudly(monkeypatch):
    monkeypatch.setitem(cli.NOUNS, "broken", "scanfleet.not_written_yet")
    with pytest.raises(ModuleNotFoundError, match=r"scanfleet\.not_written_yet"):
        cli.build_parser()
