"""Read a GGUF file's metadata and tensor table, without the tensor data.

`gguf.GGUFReader` maps every array element to a NumPy view, which takes seconds on the
tokenizer arrays of a real model (8 s for SmolLM2's 49k tokens and merges); planning
needs only the header, so this reads it directly (GGUF v2/v3, either byte order) and
takes the value-type enum and the ggml block sizes from the `gguf` package.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from tqllama.errors import TqError

_MAGIC = b"GGUF"

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    ggml_type: int
    n_bytes: int
    file: Path  # the file (of a split model, the part) that holds the data
    offset: int  # where the data starts in that file

    def values(self) -> np.ndarray:
        """The tensor's values as float64, dequantized (reads only this tensor's bytes)."""
        from gguf.quants import dequantize

        qtype = GGMLQuantizationType(self.ggml_type)
        with self.file.open("rb") as fh:
            fh.seek(self.offset)
            raw = np.frombuffer(fh.read(self.n_bytes), np.uint8)
        block, type_size = GGML_QUANT_SIZES[qtype]
        rows = raw.reshape(-1, self.shape[0] // block * type_size)
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            rows = rows.view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16)
        return np.asarray(dequantize(rows, qtype), dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class GgufFile:
    path: Path
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise TqError(f"{self.path} has no general.architecture key: re-convert the model")
        return arch

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


class _Cursor:
    """Sequential reads from the mapped file; running off the end means a truncated file."""

    def __init__(self, buf: mmap.mmap, endian: str) -> None:
        self.buf = buf
        self.endian = endian
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        fmt = self.endian + fmt
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise EOFError
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise EOFError
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: GGUFValueType) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item_type = GGUFValueType(self.unpack("I"))
            count = self.unpack("Q")
            if item_type in _SCALARS:
                # numeric arrays (token types, per-layer head counts) in one slice
                dtype = np.dtype(self.endian + _SCALARS[item_type])
                end = self.pos + count * dtype.itemsize
                if end > len(self.buf):
                    raise EOFError
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
                self.pos = end
                return arr.tolist()
            return [self.value(item_type) for _ in range(count)]
        return self.unpack(_SCALARS[vtype])


def read_gguf(path: str | Path) -> GgufFile:
    """Metadata and tensor infos of the GGUF model at `path`; TqError if it is not one.

    For a split model (`name-00001-of-00003.gguf`, as llama-gguf-split writes it) pass the
    first file: the tensors of the others are added, the metadata is the first file's.
    """
    first = _read_one(Path(path))
    parts = split_paths(first)
    if len(parts) == 1:
        return first
    tensors = list(first.tensors)
    for part in parts[1:]:
        tensors += _read_one(part).tensors
    return GgufFile(first.path, first.metadata, tuple(tensors))


def split_paths(first: GgufFile) -> list[Path]:
    """The files of the model whose first (or only) file `first` is."""
    n_split = int(first.metadata.get("split.count", 1))
    if n_split <= 1:
        return [first.path]
    m = re.fullmatch(r"(.*)-00001-of-(\d{5})\.gguf", first.path.name)
    if m is None or int(m.group(2)) != n_split:
        raise TqError(f"{first.path} is one part of a {n_split}-file split model: pass the "
                      f"first part, named like <name>-00001-of-{n_split:05d}.gguf")
    return [first.path.with_name(f"{m.group(1)}-{i:05d}-of-{n_split:05d}.gguf")
            for i in range(1, n_split + 1)]


def _read_one(path: Path) -> GgufFile:
    try:
        with path.open("rb") as fh:
            if fh.read(4) != _MAGIC:
                raise TqError(f"{path} is not a GGUF file (no GGUF magic): pass a .gguf model")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf)
    except FileNotFoundError:
        raise TqError(f"{path} does not exist: pass the path of a .gguf model") from None
    except IsADirectoryError:
        raise TqError(f"{path} is a directory: pass the path of a .gguf model") from None
    except (EOFError, ValueError, struct.error) as exc:
        raise TqError(f"{path} is a damaged or truncated GGUF file ({exc or 'short read'}): "
                      "download or convert it again") from None


def _parse(path: Path, buf: mmap.mmap) -> GgufFile:
    (version,) = struct.unpack_from("<I", buf, 4)
    # a big-endian file reads as a huge little-endian version number
    endian = "<" if version & 0xFFFF else ">"
    cur = _Cursor(buf, endian)
    cur.pos = 4
    version = cur.unpack("I")
    if version not in (2, 3):
        raise TqError(f"{path} is GGUF version {version}; only versions 2 and 3 are read: "
                      "re-convert the model with a current llama.cpp")
    n_tensors = cur.unpack("Q")
    n_kv = cur.unpack("Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(GGUFValueType(cur.unpack("I")))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        infos.append((name, shape, cur.unpack("I"), cur.unpack("Q")))
    alignment = int(metadata.get("general.alignment", 32))
    data_start = -(-cur.pos // alignment) * alignment
    tensors = tuple(TensorInfo(name, shape, ggml_type, _tensor_bytes(path, name, shape, ggml_type),
                               path, data_start + offset)
                    for name, shape, ggml_type, offset in infos)
    return GgufFile(path, metadata, tensors)


def _tensor_bytes(path: Path, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise TqError(f"{path}: tensor {name} has ggml type {ggml_type}, unknown to the installed "
                      "gguf package: upgrade it (pip install -U gguf)") from None
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * type_size
