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


FAILED_TASK = "TASK [Assert something that is false] fatal: [localhost]: FAILED! =>"
FAILED_RESULT = "  assertion: 1 == 2 msg: 'run x: hosts [1, 2] expected [1, 2, 3]'"


def test_plain_log_gives_the_failed_task_and_its_result_on_two_lines(tmp_path):
    assert digest(one_log(tmp_path, "ansible-plain.log"), max_lines=24) == [
        "--- ansible-plain.log ---", FAILED_TASK, FAILED_RESULT]


def test_molecule_frame_and_colours_are_removed(tmp_path):
    assert digest(one_log(tmp_path, "molecule-framed.log"), max_lines=24) == [
        "--- molecule-framed.log ---", FAILED_TASK, FAILED_RESULT]


def test_ignored_failures_are_left_out(tmp_path):
    text = "\n".join(digest(one_log(tmp_path, "ansible-plain.log"), max_lines=24))
    assert "Ignored failure" not in text
    assert "non-zero return code" not in text


def test_a_long_result_is_one_shortened_line(tmp_path):
    log = (LOGS / "ansible-plain.log").read_text().replace("run x: hosts [1, 2]", "run x: " + "h" * 3000)
    (tmp_path / "long.log").write_text(log)
    lines = digest(tmp_path, max_lines=24)
    assert lines[1] == FAILED_TASK
    assert len(lines) == 3 and lines[2].startswith("  assertion: 1 == 2 msg: 'run x: hhh")
    assert lines[2].endswith(" ...") and len(lines[2]) == 2 + 900 + 4


def test_pytest_failures_and_order_of_logs(tmp_path):
    (tmp_path / "lab-test.log").write_text("..F.\nFAILED tests/lab/test_rules.py::test_x - assert 1 == 2\n"
                                          "E       assert 1 == 2\n1 failed, 3 passed\n")
    shutil.copy(LOGS / "ansible-plain.log", tmp_path / "molecule-faults.log")
    os.utime(tmp_path / "lab-test.log", (1, 1))
    assert digest(tmp_path, max_lines=24) == [
        "--- lab-test.log ---", "FAILED tests/lab/test_rules.py::test_x - assert 1 == 2", "E assert 1 == 2",
        "--- molecule-faults.log ---", FAILED_TASK, FAILED_RESULT]


def test_long_digest_is_cut_and_says_so(tmp_path):
    (tmp_path / "x.log").write_text("".join(f"FAILED tests/t.py::test_{i}\n" for i in range(100)))
    lines = digest(tmp_path, max_lines=10)
    assert len(lines) == 10
    assert lines[0] == "(first 9 of 101 lines)"
    assert lines[1] == "--- x.log ---"


def test_clean_logs_give_nothing(tmp_path):
    (tmp_path / "ok.log").write_text("TASK [x]\nok: [localhost]\n5 passed\n")
    assert digest(tmp_path, max_lines=24) == []
    assert digest(tmp_path / "missing", max_lines=24) == []


PASSED = ("\x1b[32mdefault  \x1b[0m: \x1b[33mactions=7\x1b[0m  successful=7  disabled=0  skipped=0  missing=0  "
          "failed=0\n")
FAILED = "scan : actions=10  successful=9  disabled=0  skipped=0  missing=0  failed=1\n"


def test_a_scenario_that_passed_gives_nothing_a_failed_one_its_tasks(tmp_path):
    """A passed scenario's failed tasks were rescued on purpose (bad-input checks): left out, so that they cannot
    push the real failure out of the digest; a failed scenario's are kept."""
    framed = (LOGS / "molecule-framed.log").read_text()
    (tmp_path / "molecule-default.log").write_text(framed + PASSED)
    assert digest(tmp_path, max_lines=24) == []
    (tmp_path / "molecule-scan.log").write_text(framed + FAILED)
    assert digest(tmp_path, max_lines=24) == ["--- molecule-scan.log ---", FAILED_TASK, FAILED_RESULT]
