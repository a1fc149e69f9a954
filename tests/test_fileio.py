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
    special_file_kind,
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


def test_devices_and_pipes_are_never_replaced_by_a_renamed_file(tmp_path):
    """An output renamed into place over /dev/null or a named pipe would replace it by a regular file (as root,
    /dev/null itself): refused, whatever --overwrite says. Streamed outputs write into them as they are."""
    fifo = tmp_path / "frames.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), (Path(os.devnull), "character device")):
        assert special_file_kind(path) == kind
        for overwrite in (False, True):
            with pytest.raises(OutputError, match=f"is a {kind}, not a file"):
                check_output_path(path, overwrite=overwrite)
        assert check_output_path(path, stream=True) == path  # no --overwrite needed: nothing is replaced
        with pytest.raises(OutputError, match=f"is a {kind}, not a file"), atomic_path(path) as tmp:
            tmp.write_bytes(b"x")
    assert fifo.exists() and special_file_kind(fifo) == "named pipe"  # still the pipe
    assert special_file_kind(Path(os.devnull)) == "character device"
    assert special_file_kind(tmp_path) is None and special_file_kind(tmp_path / "none") is None
    (tmp_path / "f").write_text("x")
    assert special_file_kind(tmp_path / "f") is None


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


# --------------------------------------------------------------------------------------------- issue 29, class 1


@contextlib.contextmanager
def small_filesystem(path: Path, old_name: str, *, kib: int = 64, read_only_after: bool = False) -> Iterator[Path]:
    """A real ``kib``-KiB tmpfs on ``path`` holding ``old_name`` (optionally remounted read-only), or a skip.

    Only root may mount; the monkeypatched rows of tests/test_bad_inputs.py cover the same writers everywhere.
    """
    path.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("a real full or read-only file system needs root and `mount` (the /dev/full rows in "
                    "test_bad_inputs.py run everywhere)")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({done.stderr.strip() or done.returncode})")
    try:
        (path / old_name).write_bytes(b"old output")
        if read_only_after:
            subprocess.run([mount, "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _writers(tiny_encoder_config: dict) -> dict:
    """Every kind of writer talkface has, each writing far more than 64 KiB to ``dest``."""
    import torch

    from talkface.config import ModelConfig
    from talkface.io.animation import Animation, save_animation
    from talkface.io.fileio import write_with
    from talkface.io.gltf import write_gltf
    from talkface.model import TalkFaceModel
    from talkface.model.checkpoint import save_checkpoint
    from talkface.render.video import write_mp4

    rng = np.random.default_rng(0)
    anim = Animation(rng.normal(size=(60, 400, 3)).astype(np.float32), 30.0, np.array([[0, 1, 2]], np.int32))
    frames = rng.integers(0, 255, (30, 128, 128, 3), dtype=np.uint8)

    def checkpoint(dest: Path) -> None:
        torch.manual_seed(0)
        config = ModelConfig(num_vertices=400, speakers=("a", "b"), feature_dim=64)
        save_checkpoint(dest, TalkFaceModel(config, tiny_encoder_config))

    def state(dest: Path) -> None:
        with atomic_path(dest) as tmp:
            write_with(tmp, lambda f: torch.save({"w": torch.zeros(100_000)}, f))

    return {
        "npz": lambda dest: save_animation(dest, anim),
        "glb": lambda dest: write_gltf(dest, anim),
        "gltf": lambda dest: write_gltf(dest, anim),
        "safetensors": checkpoint,
        "pt": state,
        "mp4": lambda dest: write_mp4(iter(frames), 30.0, dest, num_frames=len(frames), crf=0),
        "json": lambda dest: write_text_atomic(dest, '{"x": "' + "y" * 200_000 + '"}'),
        "obj": lambda dest: _obj_folder(dest, anim),
    }


def _obj_folder(dest: Path, anim) -> None:
    from talkface.io.mesh import save_obj_sequence

    with atomic_folder(dest, overwrite=True) as tmp:
        save_obj_sequence(tmp, anim.vertices, anim.faces)


@pytest.mark.parametrize("kind", ["npz", "glb", "gltf", "safetensors", "pt", "mp4", "json", "obj"])
def test_every_writer_on_a_real_full_disk(tmp_path, tiny_encoder_config, kind):
    """A 64 KiB tmpfs: each writer ends in the same OutputError; the old file is intact, no temp is left."""
    write = _writers(tiny_encoder_config)[kind]
    with small_filesystem(tmp_path / "fs", f"out.{kind}") as fs:
        dest = fs / (f"out.{kind}" if kind != "obj" else "frames")
        with pytest.raises(OutputError, match="disk is full") as info:
            write(dest)
        assert str(dest) in str(info.value) and "free some space" in str(info.value)
        assert (fs / f"out.{kind}").read_bytes() == b"old output"
        assert sorted(p.name for p in fs.iterdir()) == [f"out.{kind}"]


@pytest.mark.parametrize("kind", ["npz", "safetensors", "pt", "mp4"])
def test_every_writer_on_a_real_read_only_file_system(tmp_path, tiny_encoder_config, kind):
    write = _writers(tiny_encoder_config)[kind]
    with small_filesystem(tmp_path / "fs", f"out.{kind}", read_only_after=True) as fs:
        with pytest.raises(OutputError, match="read-only") as info:
            write(fs / f"out.{kind}")
        assert "another output path" in str(info.value) and (fs / f"out.{kind}").read_bytes() == b"old output"


def test_writers_in_a_real_read_only_folder(tmp_path, tiny_encoder_config):
    """chmod 0o500 for a normal user; root ignores modes, so /sys (which refuses new files) stands in."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        for kind in ("npz", "safetensors", "pt", "json"):
            (folder / f"out.{kind}").write_bytes(b"old output")
        folder.chmod(0o500)
    elif os.path.isdir("/sys") and not os.access("/sys", os.W_OK) or _refuses_files("/sys"):
        folder = Path("/sys")
    else:
        pytest.skip("running as root with no folder that refuses new files")
    try:
        for kind in ("npz", "safetensors", "pt", "json"):
            with pytest.raises(OutputError, match="permission denied|read-only") as info:
                _writers(tiny_encoder_config)[kind](folder / f"out.{kind}")
            assert "choose" in str(info.value), info.value
        if folder != Path("/sys"):
            assert all(p.read_bytes() == b"old output" for p in folder.iterdir()) and len(list(folder.iterdir())) == 4
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o700)


def _refuses_files(folder: str) -> bool:
    try:
        with open(os.path.join(folder, ".talkface-probe"), "xb"):
            pass
    except OSError:
        return True
    os.unlink(os.path.join(folder, ".talkface-probe"))
    return False


def test_writing_maps_what_each_writer_raises(tmp_path):
    from safetensors import SafetensorError

    from talkface.io.fileio import output_errno, tool_output_errno, writing

    dest = tmp_path / "x.bin"
    for number, words in ((errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota"), (errno.EROFS, "read-only"),
                          (errno.EACCES, "permission denied"), (errno.EPERM, "not permitted")):
        rust = f"Error while serializing: I/O error: {os.strerror(number)} (os error {number})"
        for raised in (OSError(number, os.strerror(number)), SafetensorError(rust)):
            with pytest.raises(OutputError, match=words) as info, writing(dest):
                raise raised
            assert str(info.value).startswith(f"{dest}: cannot write it") and info.value.__cause__ is raised
    for other in (OSError(errno.EIO, "I/O error"), RuntimeError("unexpected pos 704 vs 598"),
                  SafetensorError("Error while serializing: I/O error: Broken pipe (os error 32)")):
        with pytest.raises(type(other)), writing(dest):
            raise other
    assert output_errno(ValueError("x")) is None
    # ffmpeg's own words (seen on a full tmpfs, a read-only tmpfs, and an unreadable input)
    assert tool_output_errno("[vf#0:0 @ 0x55] Task finished with error code: -28 (No space left on device)") == 28
    assert tool_output_errno("[out#0/mp4 @ 0x56] Error opening output /ro/a.mp4: Read-only file system") == 30
    assert tool_output_errno("[out#0/mp4 @ 0x56] Error opening output /x/a.mp4: Permission denied") == errno.EACCES
    assert tool_output_errno("[in#1 @ 0x1] Error opening input: Permission denied\nError opening input file a.wav.") \
        is None


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_write_with_finds_the_oserror_torch_save_hides(tmp_path):
    import torch

    from talkface.io.fileio import write_with

    with pytest.raises(OSError) as info:
        write_with("/dev/full", lambda f: torch.save({"w": torch.zeros(100_000)}, f))
    assert info.value.errno == errno.ENOSPC
    write_with(tmp_path / "ok.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(tmp_path / "ok.pt", weights_only=True)["w"], torch.arange(3))


def test_a_full_disk_turns_the_feature_cache_off_with_one_warning(tmp_path, monkeypatch):
    """The cache only saves time: training must not stop for it (issue 29), nor retry every clip."""
    import torch
    from safetensors import SafetensorError

    import talkface.model.feature_cache as feature_cache

    calls = []

    def full(*args, **kwargs):
        calls.append(args)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(feature_cache, "save_file", full)
    cache = feature_cache.FeatureCache(2**20, tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="disk is full.*stops writing"):
        cache.put("a", torch.zeros(4, 3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        cache.put("b", torch.ones(4, 3))
    assert len(calls) == 1 and cache.stats.write_errors == 1
    assert torch.equal(cache.get("b", torch.device("cpu")), torch.ones(4, 3))  # the memory tier still works
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


# --------------------------------------------------------------------------------------------- issue 29, class 2


def test_path_kind_raises_where_path_methods_say_absent(tmp_path):
    from talkface.io.fileio import file_exists, folder_exists, path_kind

    (tmp_path / "loop").symlink_to("loop")
    assert not (tmp_path / "loop").exists()  # what pathlib says: a loop looks like nothing
    with pytest.raises(OSError) as info:
        path_kind(tmp_path / "loop")
    assert info.value.errno == errno.ELOOP
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert [path_kind(tmp_path / n) for n in ("f", "d", "none")] == ["file", "folder", None]
    assert path_kind(tmp_path / "f" / "below") is None  # ENOTDIR: nothing there
    assert file_exists(tmp_path / "f") and not file_exists(tmp_path / "none")
    with pytest.raises(IsADirectoryError):
        file_exists(tmp_path / "d")
    with pytest.raises(NotADirectoryError):
        folder_exists(tmp_path / "f")


def test_reading_folder_names_the_file_each_os_error_came_from(tmp_path):
    from talkface.io.fileio import path_kind, reading_folder

    raw = tmp_path / "raw"
    (raw / "wav").mkdir(parents=True)
    (raw / "wav" / "a.wav").symlink_to("a.wav")
    with pytest.raises(DatasetError) as info, reading_folder(raw, "it as part of the dataset", DatasetError, "fix it"):
        for p in sorted((raw / "wav").glob("*.wav")):
            path_kind(p)
    assert str(info.value).startswith(f"{raw / 'wav' / 'a.wav'}: cannot read it as part of the dataset (a symlink loop")
    with pytest.raises(DatasetError, match="it is a folder; expected a file"), \
            reading_folder(raw, "the dataset", DatasetError, "fix it"):
        (raw / "wav").read_bytes()
    with pytest.raises(DatasetError, match="vanished while reading"), reading_folder(raw, "the dataset", DatasetError,
                                                                                     "fix it"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(raw / "gone.wav"))
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="disk is full"), reading_folder(raw, "the dataset", DatasetError, "fix it",
                                                                          output=out):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "clips" / "a.npz"))
    with pytest.raises(ValueError), reading_folder(raw, "the dataset", DatasetError, "fix it"):
        raise ValueError("not an OS error: the reader maps its own")


# --------------------------------------------------------------------------------------------- issue 29, class 5


def test_check_paths_with_read_sets(tmp_path):
    """A run folder is read for its checkpoint and assets: a report beside them may be replaced (with
    --overwrite only); the read files, the folder itself and a folder that holds them may not."""
    from talkface.io.fileio import Reads

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.safetensors", "templates.npz", "eval.json"):
        (run / name).write_bytes(b"x")
    reads = Reads(run, run, ("best.safetensors", "last.safetensors", "templates.npz"))
    check_paths({"--checkpoint": reads}, {"--report": run / "eval.json"}, overwrite=True)
    check_paths({"--checkpoint": reads}, {"--report": run / "new.json"})
    check_paths({"--checkpoint": reads}, {"--out": run / "results"}, output_folders=("--out",))
    with pytest.raises(OutputError, match="already exists.*does not read.*--overwrite"):
        check_paths({"--checkpoint": reads}, {"--report": run / "eval.json"})
    refused = [({"--report": run / "best.safetensors"}, ()), ({"--report": run / "templates.npz"}, ()),
               ({"--out": run}, ("--out",)), ({"--out": tmp_path}, ("--out",))]
    for outputs, folders in refused:
        with pytest.raises(OutputError, match="never replaces inputs"):
            check_paths({"--checkpoint": reads}, outputs, output_folders=folders, overwrite=True)
    (tmp_path / "link.npz").symlink_to(run / "templates.npz")
    with pytest.raises(OutputError, match="--checkpoint"):
        check_paths({"--checkpoint": reads}, {"--out": tmp_path / "link.npz"}, overwrite=True)
    # a checkpoint file brings the assets of its folder along
    single = Reads(run / "best.safetensors", run, ("best.safetensors", "templates.npz"))
    with pytest.raises(OutputError, match="read from"):
        check_paths({"--checkpoint": single}, {"--out": run / "templates.npz"}, overwrite=True)
    with pytest.raises(OutputError, match="same path"):
        check_paths({"--checkpoint": reads}, {"--report": run / "eval.json", "--csv": run / "eval.json"},
                    overwrite=True)
