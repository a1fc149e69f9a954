import contextlib
import errno
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from talkface.errors import DatasetError, OutputError, TemplateError
from talkface.io.fileio import (
    atomic_folder,
    atomic_path,
    check_output_path,
    check_paths,
    output_mode,
    read_json_object,
    read_npy,
    read_npz,
    reading,
    write_text_atomic,
)


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


@pytest.mark.skipif(sys.platform != "linux", reason="reads the fsynced file's name from /proc/self/fd")
def test_fsync_happens_before_the_rename(tmp_path, monkeypatch):
    """The data is on disk under its temporary name before the rename makes it the destination, and the
    folder (which holds the renamed entry) is fsynced after it."""
    calls: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        calls.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = write_text_atomic(tmp_path / "x.txt", "data")
    renames = [c for c in calls if c[0] == "replace"]
    assert len(renames) == 1 and renames[0][2] == os.path.realpath(target)
    at = calls.index(renames[0])
    assert ("fsync", renames[0][1]) in calls[:at], f"no fsync of the temporary file before the rename: {calls}"
    assert ("fsync", os.path.realpath(tmp_path)) in calls[at + 1:], f"no fsync of the folder after it: {calls}"
    assert target.read_text() == "data"


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody may write into: mode 0o500 for a normal user; for root (who ignores modes) a
    read-only tmpfs mounted on it, or a skip where mounting is not allowed (no CAP_SYS_ADMIN)."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
        return
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("running as root, which writes into any folder whatever its mode, and no `mount` command "
                    "to make a read-only tmpfs")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("running as root, which writes into any folder whatever its mode, and this machine does not "
                    f"allow mounting a read-only tmpfs ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_folder(tmp_path):
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.raises(OutputError, match=f"{ro / 'a.npz'}: folder {ro} is not writable"):
            check_output_path(ro / "a.npz")
        with pytest.raises(OutputError, match="cannot write"):
            write_text_atomic(ro / "a.txt", "x")
        assert list(ro.iterdir()) == []
    assert not os.path.ismount(ro)


# --------------------------------------------------------------------------------------------- issue 15


def test_check_paths_refuses_every_kind_of_overlap(tmp_path):
    (tmp_path / "in.npz").write_bytes(b"x")
    (tmp_path / "link.npz").symlink_to(tmp_path / "in.npz")
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    cases = [
        ({"--template": tmp_path / "in.npz"}, {"--out": tmp_path / "in.npz"}, ()),  # the same file
        ({"--template": tmp_path / "in.npz"}, {"--out": tmp_path / "link.npz"}, ()),  # through a symlink
        ({"--template": tmp_path / "sub" / ".." / "in.npz"}, {"--out": tmp_path / "in.npz"}, ()),  # '..'
        ({"--template": tmp_path / "in.npz"}, {"--out": tmp_path}, ("--out",)),  # an output folder holds it
        ({"--data": data}, {"--report": data / "dataset.json"}, ()),  # replaces a file of an input folder
        ({"--data": data}, {"--out": data}, ("--out",)),  # the input folder itself
        ({}, {"--report": tmp_path / "r.csv", "--csv": tmp_path / "r.csv"}, ()),  # two outputs, one file
        ({}, {"--out": tmp_path / "o", "--plot": tmp_path / "o" / "p.png"}, ("--out",)),  # a file in an output folder
    ]
    for inputs, outputs, folders in cases:
        with pytest.raises(OutputError) as info:
            check_paths(inputs, outputs, output_folders=folders)
        message = str(info.value)
        assert all(label in message for label in [*inputs, *outputs][:2]), message


def test_check_paths_lets_unrelated_and_new_paths_through(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    check_paths({"--data": data, "--template": None}, {"--report": data / "report.json"})  # new file in a folder
    check_paths({"AUDIO": [tmp_path / "a.wav", tmp_path / "b.wav"]}, {"--out": [tmp_path / "a.npz"]})
    check_paths({"RAW_DIR": tmp_path / "raw"}, {"OUT_DIR": tmp_path / "raw-prepared"}, output_folders=("OUT_DIR",))


def test_atomic_folder_is_all_or_nothing(tmp_path):
    dest = tmp_path / "frames"
    with pytest.raises(OSError):
        with atomic_folder(dest) as tmp:
            (tmp / "frame_0.obj").write_text("v 0 0 0\n")
            raise OSError(errno.EIO, "disk died")  # a writer failing after some files
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(dest) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OutputError, match="not empty"):
        with atomic_folder(dest):
            pass
    with atomic_folder(dest, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]  # replaced as a whole, no stale frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_outputs_follow_the_umask(tmp_path, mask):
    previous = os.umask(mask)
    try:
        assert output_mode() == 0o666 & ~mask
        with atomic_path(tmp_path / "x.bin") as tmp:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)  # a writer that makes private files (mkstemp)
            os.close(fd)
        with atomic_folder(tmp_path / "frames") as tmp:
            (tmp / "f.obj").write_text("v 0 0 0\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.parametrize("failure", [EOFError("no data left"), zipfile.BadZipFile("bad"), ValueError("odd"),
                                     KeyError("layer.0"), pickle.UnpicklingError("op"),
                                     OSError(errno.ELOOP, "Too many levels of symbolic links"),
                                     UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), IndexError("x")])
def test_reading_maps_every_reader_failure_to_a_typed_error_naming_the_file(tmp_path, failure):
    with pytest.raises(DatasetError) as info:
        with reading(tmp_path / "clip.npz", "a prepared clip", DatasetError, "prepare again"):
            raise failure
    assert str(info.value).startswith(f"{tmp_path / 'clip.npz'}: cannot read a prepared clip")
    assert info.value.__cause__ is failure


def test_readers_on_damaged_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "full.npz", a=np.arange(1000))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:200])
    (tmp_path / "loop.npz").symlink_to(tmp_path / "loop.npz")
    np.save(tmp_path / "objects.npy", np.array([None]), allow_pickle=True)
    for name, reader in [("empty.npy", read_npy), ("cut.npz", read_npz), ("loop.npz", read_npz),
                         ("objects.npy", read_npy), ("missing.npz", read_npz)]:
        with pytest.raises(TemplateError, match=name):
            reader(tmp_path / name, "mesh", TemplateError, "write it again")
    assert read_npz(tmp_path / "full.npz", "x", TemplateError, "")["a"].shape == (1000,)
    for text in ("[1, 2]", "3", '"s"', "{bad"):
        with pytest.raises(TemplateError, match="meta"):
            read_json_object(text, "anim.npz (meta)", TemplateError, "write it again")
    assert read_json_object('{"a": 1}', "x", TemplateError, "") == {"a": 1}
