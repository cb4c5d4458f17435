"""An F32 copy of a quantized model: the same function without its activations' rounding.

A CPU matmul against quantized weights first rounds its activations to the weights' dot
type (8 bits per value for Q4_1, Q4_K and their kin). That rounding is a step function:
any change to the KV cache, however small, moves some activations across a step in every
later layer, and the logits move by an amount set by how many layers follow, not by the
change. On SmolLM2-135M Q4_1 one layer's cache in bf16 costs 0.0038 KLD against the f16
cache at layer 0 and 0.0007 at layer 29, q8_0 everywhere 0.0042; on the F32 copy the same
bf16 layer costs 1e-6 and q8_0 everywhere 0.0002 (docs/BENCHMARKS.md, "The floor is the
weights' activation rounding"). `tqllama tune` measures each cache on this copy, where its
KLD is its own.

The copy dequantizes every tensor with gguf-py's reference dequantizers and keeps every
metadata field but the file type, so llama.cpp loads it as the same model (the same cache
policy id: tqllama.policy.model_id).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from tqllama import paths
from tqllama.errors import TqError
from tqllama.source import sha256_file


def exact_copy(model: Path, on_start: Callable[[], None] | None = None) -> Path:
    """The F32 copy of `model`, made once and kept in $TQLLAMA_CACHE/tune/models/;
    `on_start()` is called before a copy is made."""
    path = paths.cache_dir() / "tune" / "models" / f"{sha256_file(model)[:24]}-f32.gguf"
    if path.is_file():
        return path
    if on_start is not None:
        on_start()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    try:
        write_f32_copy(model, partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_f32_copy(model: Path, out: Path) -> None:
    """Write `model` with every tensor dequantized to F32 (streamed: one tensor in memory)."""
    try:
        reader = gguf.GGUFReader(model)
    except (OSError, ValueError) as exc:
        raise TqError(f"cannot read {model} as a GGUF file ({exc}): fetch it again with "
                      "tqllama model fetch") from None
    for kind in {t.tensor_type for t in reader.tensors}:
        size = gguf.GGML_QUANT_SIZES[kind][1]  # the bytes of one block
        try:
            gguf.quants.dequantize(np.zeros(size, np.uint8), kind)
        except NotImplementedError:
            raise TqError(f"{model.name} has {kind.name} tensors, which tqllama tune cannot "
                          "turn into F32 to measure on: tune a copy of the model in another "
                          "type") from None
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        value_type = field.types[0]
        sub_type = field.types[1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        shape = [int(n) for n in reversed(tensor.shape)]
        writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32),
                               4 * int(np.prod(shape)), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.write_tensor_data(np.ascontiguousarray(values, dtype=np.float32))
    writer.close()
