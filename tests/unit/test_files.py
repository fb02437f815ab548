"""scanfleet.files: the sha256 of a file and atomic writes."""

import hashlib
import stat

import pytest

from scanfleet.files import atomic_path, atomic_write, sha256_file


def test_sha256_file_reads_in_chunks(tmp_path):
    data = bytes(range(256)) * 9000  # more than one chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("binary", "mode", "durable"), [(False, 0o644, False), (True, 0o600, True)])
def test_atomic_write_publishes_whole_file_with_mode(tmp_path, binary, mode, durable):
    path = tmp_path / "out"
    path.write_text("old\n")
    with atomic_write(path, binary=binary, mode=mode, durable=durable) as handle:
        handle.write(b"new\n" if binary else "new\n")
        assert path.read_text() == "old\n"  # not published before the block ends
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_path_failure_leaves_target_and_no_temporary(tmp_path):
    path = tmp_path / "out"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("check failed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
