"""Reading glTF 2.0 / GLB: the JSON document, its buffers and its accessors' data (sparse accessors included).

Pure numpy + json. Buffers come from the GLB binary chunk, base64 data URIs or files beside the document.
Accessors of any component type are returned as float64 rows; sparse accessors (Blender's default for
shape keys that move few vertices) are applied over their base data (or zeros).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from talkface.errors import TalkfaceError, TemplateError

_COMPONENTS = {5120: ("b", 1), 5121: ("B", 1), 5122: ("h", 2), 5123: ("H", 2), 5125: ("I", 4), 5126: ("f", 4)}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def read_gltf_parts(p: Path, error: type[TalkfaceError] = TemplateError) -> tuple[dict[str, Any], list[bytes]]:
    """The glTF JSON and its buffers' bytes (GLB chunk, data URIs or files beside it)."""
    raw = p.read_bytes()
    glb = None
    if raw[:4] == b"glTF":
        if len(raw) < 20:
            raise error(f"{p}: truncated GLB header")
        _, version, total = struct.unpack_from("<4sII", raw, 0)
        if version != 2:
            raise error(f"{p}: GLB version {version}; expected glTF 2.0")
        offset, doc = 12, None
        while offset + 8 <= min(total, len(raw)):
            length, kind = struct.unpack_from("<II", raw, offset)
            chunk = raw[offset + 8:offset + 8 + length]
            if len(chunk) < length:
                raise error(f"{p}: GLB chunk cut short (file truncated)")
            if kind == 0x4E4F534A:
                doc = json.loads(chunk.decode("utf-8"))
            elif kind == 0x004E4942 and glb is None:
                glb = chunk
            offset += 8 + length
        if doc is None:
            raise error(f"{p}: GLB has no JSON chunk")
    else:
        doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict):
        raise error(f"{p}: not a glTF document (expected a JSON object)")
    buffers = []
    for i, buf in enumerate(doc.get("buffers", [])):
        uri = buf.get("uri")
        if uri is None:
            if glb is None:
                raise error(f"{p}: buffer {i} has no uri and the file has no binary chunk")
            buffers.append(glb)
        elif uri.startswith("data:"):
            buffers.append(base64.b64decode(uri.split(",", 1)[1]))
        else:
            side = (p.parent / uri).resolve()
            if not side.is_file():
                raise error(f"{p}: buffer file {uri!r} is missing beside it")
            buffers.append(side.read_bytes())
    return doc, buffers


def read_accessor(doc: dict[str, Any], buffers: list[bytes], index: int) -> np.ndarray:
    """An accessor's data as (count, width) float64 (sparse accessors applied)."""
    acc = doc["accessors"][index]
    width = _WIDTH[acc["type"]]
    count = int(acc["count"])
    fmt, size = _COMPONENTS[acc["componentType"]]
    if "bufferView" in acc:
        view = doc["bufferViews"][acc["bufferView"]]
        data = buffers[view.get("buffer", 0)]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        stride = view.get("byteStride") or size * width
        dtype = np.dtype(f"<{fmt}")
        rows = np.lib.stride_tricks.as_strided(
            np.frombuffer(data, dtype=np.uint8, count=max(0, (count - 1) * stride + size * width), offset=start),
            shape=(count, size * width), strides=(stride, 1)) if count else np.zeros((0, size * width), np.uint8)
        out = np.ascontiguousarray(rows).view(dtype).reshape(count, width).astype(np.float64)
    else:
        out = np.zeros((count, width))
    sparse = acc.get("sparse")
    if sparse:
        n = int(sparse["count"])
        ind, val = sparse["indices"], sparse["values"]
        ifmt, isize = _COMPONENTS[ind["componentType"]]
        iview = doc["bufferViews"][ind["bufferView"]]
        idx = np.frombuffer(buffers[iview.get("buffer", 0)], dtype=f"<{ifmt}", count=n,
                            offset=iview.get("byteOffset", 0) + ind.get("byteOffset", 0)).astype(np.int64)
        vview = doc["bufferViews"][val["bufferView"]]
        values = np.frombuffer(buffers[vview.get("buffer", 0)], dtype=f"<{fmt}", count=n * width,
                               offset=vview.get("byteOffset", 0) + val.get("byteOffset", 0))
        out[idx] = values.reshape(n, width)
    if acc.get("normalized"):
        raise ValueError("quantized (normalized integer) accessors are not supported; export float positions")
    return out
