"""Safe reading of the legacy pickles shipped with VOCASET, BIWI and FaceFormer's processed data.

``pickle.load`` runs whatever callables a file names, so a downloaded ``templates.pkl`` could run any
command. ``load_pickle`` uses an unpickler whose ``find_class`` admits only the handful of numpy
reconstructors that ndarray, dtype and numpy-scalar pickles need (protocols 0-5, written by Python 2 or
3, numpy 1 or 2); plain containers and numbers are pickle opcodes and need no callables at all. Any
other global (``os.system``, ``builtins.eval``, ``collections.OrderedDict``, ...) raises
``DatasetError`` before anything is called. Strings are decoded as latin-1, which Python-2 pickles of
numpy arrays need (their raw buffers are ``str``) and which is lossless for ASCII keys.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from talkface.errors import DatasetError

_NUMPY_CORE_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")


def _multiarray() -> Any:
    """numpy's C multiarray module (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # ndarray pickles call _reconstruct(ndarray, (0,), b'b'); a subclass could run its own __new__.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array reconstruction of {subtype!r} refused; only numpy.ndarray is allowed")
    return _multiarray()._reconstruct(np.ndarray, shape, dtype)


def _safe_scalar(dtype: Any, *data: Any) -> Any:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("numpy scalar without a dtype refused")
    return _multiarray().scalar(dtype, *data)


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # Protocol-5 ndarray pickles; mirrors numpy's own _frombuffer.
    if not isinstance(buffer, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise pickle.UnpicklingError(f"array buffer of type {type(buffer).__name__} refused")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("array buffer with an object or unknown dtype refused")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _safe_codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 writes ``bytes`` as _codecs.encode(str, 'latin1') under protocols 0-2.
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused; only latin-1 is allowed")
    return text.encode("latin-1", errors)


def _safe_bytes(*args: Any) -> bytes:
    # Python 3 writes b"" as bytes() under protocols 0-2 (non-empty bytes go through _codecs.encode).
    if args:
        raise pickle.UnpicklingError("bytes(...) with arguments refused")
    return b""


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    table: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_codecs_encode,
        ("__builtin__", "bytes"): _safe_bytes,
        ("builtins", "bytes"): _safe_bytes,
    }
    for module in _NUMPY_CORE_MODULES:
        table[(module, "_reconstruct")] = _safe_reconstruct
        table[(module, "scalar")] = _safe_scalar
    for module in _NUMPY_NUMERIC_MODULES:
        table[(module, "_frombuffer")] = _safe_frombuffer
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array/dtype/scalar reconstructors."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="latin1", errors="strict")
        self._source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self._source}: pickle refers to {module}.{name}, which talkface does not load "
                "(only numpy arrays, dtypes, scalars, dict, list, tuple, str, int, float, bool and None are "
                "allowed); the file is not a plain data pickle, so it was not read"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"{self._source}: pickle uses persistent ids, which talkface does not load")


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the restricted unpickler.

    Args:
        data: the pickle bytes.
        source: a name for error messages (usually the file path).

    Returns:
        The object: nested dict/list/tuple of str, int, float, bool, None, numpy arrays and scalars.

    Raises:
        DatasetError: the pickle names a disallowed callable, or is truncated or corrupt.
    """
    return _load(io.BytesIO(data), source)


def _load(file: BinaryIO, source: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except DatasetError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeError, MemoryError) as e:
        raise DatasetError(f"{source}: not a readable data pickle ({type(e).__name__}: {e}); "
                           "re-download or re-create the file") from e


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Read a pickle file safely (see the module docstring for what is admitted).

    Args:
        path: the ``.pkl`` file.

    Returns:
        The unpickled data.

    Raises:
        DatasetError: missing or unreadable file, disallowed content, or a corrupt pickle.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file")
    try:
        with open(p, "rb") as f:
            return _load(f, str(p))
    except OSError as e:
        raise DatasetError(f"{p}: cannot read ({e.strerror})") from e
