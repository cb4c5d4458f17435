// tqllama: the turbo KV-cache types (turbo2, turbo3, turbo4, turbo5) on Metal.
//
// The block layouts and the quantization rule are ggml-turbo-common.h's, the one declaration
// that C, CUDA and Metal share; this file gives the kernels their quantize_func (one block per
// call) and dequantize functions. It compiles as Metal Shading Language (the kernels include
// it) and as plain C++ (tests/metal/turbo_helpers.cpp compiles it with g++ and compares its
// bytes with the NumPy reference), so the rule the GPU runs is the rule that is tested. The
// contract is docs/FORMAT.md of tqllama.
#pragma once

#if defined(__METAL_VERSION__)
#define GGML_TURBO_DECL_METAL
#else
#define GGML_TURBO_DECL_CPP // tests/metal/turbo_helpers.cpp, compiled with -ffp-contract=off
#endif
#include "ggml-turbo-common.h"

// one block: the signature of the quantize_func of Metal's set_rows and cpy templates
void quantize_turbo5(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo5 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block(src, idx, TURBO_CODEBOOK(5));
    turbo_pack4(idx, dst.qs);
    turbo_pack_bit(idx, 4, dst.qh);
}

void quantize_turbo4(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo4 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block(src, idx, TURBO_CODEBOOK(4));
    turbo_pack4(idx, dst.qs);
}

void quantize_turbo3(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo3 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block(src, idx, TURBO_CODEBOOK(3));
    turbo_pack2(idx, dst.qs);
    turbo_pack_bit(idx, 2, dst.qh);
}

void quantize_turbo2(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo2 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block(src, idx, TURBO_CODEBOOK(2));
    turbo_pack2(idx, dst.qs);
}

#if defined(__METAL_VERSION__)
// the two forms the kernel templates take: 16 values (il = 0..3, mul_mm/get_rows/cpy/FA)
// and 4 values (il = 0..15, the FA vec kernel), in the order of the row: turbo{B}_dequantize
// of ggml-turbo-common.h
#define TURBO_DEQUANTIZE(B)                                                                       \
template <typename type4x4>                                                                       \
void dequantize_turbo##B(device const block_turbo##B * xb, short il, thread type4x4 & reg) {      \
    float4x4 reg_f;                                                                               \
    turbo##B##_dequantize(xb, 16*il, 16, (thread float *) &reg_f);                                \
    reg = (type4x4) reg_f;                                                                        \
}                                                                                                 \
template <typename type4>                                                                         \
void dequantize_turbo##B##_t4(device const block_turbo##B * xb, short il, thread type4 & reg) {   \
    float4 reg_f;                                                                                 \
    turbo##B##_dequantize(xb, 4*il, 4, (thread float *) &reg_f);                                  \
    reg = (type4) reg_f;                                                                          \
}
TURBO_DEQUANTIZE(2)
TURBO_DEQUANTIZE(3)
TURBO_DEQUANTIZE(4)
TURBO_DEQUANTIZE(5)
#undef TURBO_DEQUANTIZE
#endif
