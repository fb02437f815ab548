"""The failure digest printed at the end of a failed make test: real ansible-playbook output (YAML results,
colours on), plain and in molecule's frame (fixtures/logs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.failure_digest import digest

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


def one_log(tmp_path: Path, name: str) -> Path:
    shutil.copy(LOGS / name, tmp_path / name)
    return tmp_path


def test_plain_log_names_the_failed_task_and_its_assertion(tmp_path):
    lines = digest(one_log(tmp_path, "ansible-plain.log"), max_lines=60)
    assert "TASK [Assert something that is false]" in lines
    assert "fatal: [localhost]: FAILED! =>" in lines
    text = "\n".join(lines)
    assert "assertion: 1 == 2" in text
    assert "msg: 'run x: hosts [1, 2] expected [1, 2, 3]'" in text
    assert "\x1b" not in text


def test_ignored_failures_are_left_out(tmp_path):
    text = "\n".join(digest(one_log(tmp_path, "ansible-plain.log"), max_lines=60))
    assert "Ignored failure" not in text
    assert "non-zero return code" not in text


def test_molecule_frame_is_removed(tmp_path):
    lines = digest(one_log(tmp_path, "molecule-framed.log"), max_lines=60)
    assert "TASK [Assert something that is false]" in lines
    assert any(line.strip() == "assertion: 1 == 2" for line in lines)
    assert not any("│" in line for line in lines)


def test_pytest_failures_and_order_of_logs(tmp_path):
    (tmp_path / "lab-test.log").write_text("..F.\nFAILED tests/lab/test_rules.py::test_x - assert 1 == 2\n"
                                          "E       assert 1 == 2\n1 failed, 3 passed\n")
    shutil.copy(LOGS / "ansible-plain.log", tmp_path / "molecule-faults.log")
    os.utime(tmp_path / "lab-test.log", (1, 1))
    lines = digest(tmp_path, max_lines=60)
    headers = [line for line in lines if line.startswith("--- ")]
    assert [Path(h.strip("- ")).name for h in headers] == ["lab-test.log", "molecule-faults.log"]
    assert "FAILED tests/lab/test_rules.py::test_x - assert 1 == 2" in lines
    assert "E       assert 1 == 2" in lines


def test_long_digest_is_cut_and_says_so(tmp_path):
    (tmp_path / "x.log").write_text("".join(f"FAILED tests/t.py::test_{i}\n" for i in range(100)))
    lines = digest(tmp_path, max_lines=10)
    assert len(lines) == 10
    assert lines[0] == "(first 9 of 101 lines)"


def test_clean_logs_give_nothing(tmp_path):
    (tmp_path / "ok.log").write_text("TASK [x]\nok: [localhost]\n5 passed\n")
    assert digest(tmp_path, max_lines=60) == []
    assert digest(tmp_path / "missing", max_lines=60) == []
