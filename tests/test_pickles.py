"""The restricted unpickler: data pickles load (Python 2 and 3, numpy 1 and 2 layouts), code never runs."""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import struct
import subprocess

import numpy as np
import pytest

from talkface.data.pickles import load_pickle, loads_pickle
from talkface.errors import DatasetError


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` as protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"J" + struct.pack("<i", value)


def _py2_body(obj: object) -> bytes:
    """Opcodes a Python 2.7 pickler with numpy 1.x emits at protocol 2 (no memo)."""
    if isinstance(obj, dict):
        out = b"}("
        for key, value in obj.items():
            out += _py2_body(key) + _py2_body(value)
        return out + b"u"
    if isinstance(obj, str):
        return _py2_str(obj.encode("latin-1"))
    if isinstance(obj, bool) or obj is None:
        raise NotImplementedError
    if isinstance(obj, int):
        return _py2_int(obj)
    if isinstance(obj, np.ndarray):
        dtype = obj.dtype
        out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b")
        out += b"\x87R("  # _reconstruct(ndarray, (0,), 'b'), then state
        out += _py2_int(1) + b"(" + b"".join(_py2_int(n) for n in obj.shape) + b"t"
        out += b"cnumpy\ndtype\n" + _py2_str(dtype.str[1:].encode()) + _py2_int(0) + _py2_int(1) + b"\x87R"
        out += b"(" + _py2_int(3) + _py2_str(dtype.str[:1].encode()) + b"NNN" + b"J\xff\xff\xff\xff" * 2
        out += _py2_int(0) + b"tb"  # dtype.__setstate__
        out += b"\x89" + _py2_str(np.ascontiguousarray(obj).tobytes()) + b"tb"  # not fortran, raw bytes as str
        return out
    raise NotImplementedError(type(obj))


def py2_pickle(obj: object) -> bytes:
    """A byte-exact stand-in for ``cPickle.dumps(obj, 2)`` under Python 2 + numpy 1.x."""
    return b"\x80\x02" + _py2_body(obj) + b"."


def test_python2_vocaset_audio_pickle_loads_with_latin1_bytes() -> None:
    audio = np.array([0, -1, 32767, -32768, 1234, -200], dtype=np.int16)  # bytes >= 0x80 need latin-1
    data = {"FaceTalk_170728_03272_TA": {"sentence01": {"audio": audio, "sample_rate": 22000}}}
    out = loads_pickle(py2_pickle(data))
    entry = out["FaceTalk_170728_03272_TA"]["sentence01"]
    assert entry["sample_rate"] == 22000
    assert entry["audio"].dtype == np.int16
    np.testing.assert_array_equal(entry["audio"], audio)


def test_python2_float_template_pickle_round_trips() -> None:
    template = np.random.default_rng(0).normal(size=(7, 3)).astype(">f8")  # big-endian too
    out = loads_pickle(py2_pickle({"S": template}))
    np.testing.assert_array_equal(out["S"], template)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_python3_pickles_of_plain_data_round_trip(protocol: int) -> None:
    data = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": [1, 2.5, True, None, "x", b"\xe9\xff"],
        "c": (np.float64(2.5), np.int64(-3), np.dtype("<i2")),
        "d": {0: 10, 1: 11},
        "e": np.array([], dtype=np.int16),
        "f": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    }
    out = loads_pickle(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["a"], data["a"])
    assert out["b"] == data["b"]
    assert out["c"] == data["c"] and type(out["c"][0]) is np.float64
    assert out["d"] == data["d"]
    assert out["e"].shape == (0,) and out["e"].dtype == np.int16
    np.testing.assert_array_equal(out["f"], data["f"])


class _Reduce:
    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_os_system_pickle_is_refused_without_running(tmp_path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"templates": _Reduce(os.system, (f"touch {marker}",))}, protocol=protocol)
    assert pickle.loads(payload) == {"templates": 0} and marker.exists()  # it really runs under plain pickle
    marker.unlink()
    path = tmp_path / "templates.pkl"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match="system") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("func, args", [
    (eval, ("1+1",)),
    (exec, ("x = 1",)),
    (subprocess.check_call, (["true"],)),
    (shutil.rmtree, ("/nonexistent-talkface",)),
    (np.load, ("x.npy",)),
    (collections.OrderedDict, ()),
    (set, ([1],)),
])
def test_other_callables_are_refused(func: object, args: tuple[object, ...]) -> None:
    with pytest.raises(DatasetError, match="does not load"):
        loads_pickle(pickle.dumps(_Reduce(func, args), protocol=2))


def test_crafted_getattr_chain_is_refused() -> None:
    # builtins.getattr(builtins.__import__('os'), 'system') written by hand
    crafted = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'true'\ntR."
    with pytest.raises(DatasetError, match="getattr"):
        loads_pickle(crafted)


def test_ndarray_subclass_and_other_codecs_are_refused() -> None:
    crafted = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85U\x01b\x87R.")
    with pytest.raises(DatasetError):
        loads_pickle(crafted)
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(DatasetError, match="latin-1"):
        loads_pickle(rot13)


def test_truncated_and_missing_files_raise_dataset_error(tmp_path) -> None:
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)}, protocol=2)[:50])
    with pytest.raises(DatasetError, match="not a readable data pickle"):
        load_pickle(path)
    with pytest.raises(DatasetError, match="no such file"):
        load_pickle(tmp_path / "missing.pkl")
