import os

import pytest

from talkface.errors import OutputError
from talkface.io.fileio import atomic_path, check_output_path, write_text_atomic


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces(tmp_path):
    target = write_text_atomic(tmp_path / "x.txt", "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and len(list(tmp_path.iterdir())) == 1


def test_check_output_path(tmp_path):
    (tmp_path / "exists.npz").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        check_output_path(tmp_path / "exists.npz")
    check_output_path(tmp_path / "exists.npz", overwrite=True)
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputError, match="not writable"):
        check_output_path(ro / "a.npz")
