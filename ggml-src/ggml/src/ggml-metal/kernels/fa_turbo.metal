// tqllama: flash attention (the simdgroup-matrix kernel, batches of queries) over turbo
// K/V caches, alone and mixed with f16 and q8_0. Head sizes 64, 128 and 256 (turbo blocks
// hold 64 values). Names: kernel_flash_attn_ext_<K>_dk<D>_dv<D> when K and V share a type,
// kernel_flash_attn_ext_<K>_<V>_dk<D>_dv<D> otherwise (ggml-metal-device.cpp builds both).
#include "common.h"
#include "dequantize.h"
#include "turbo.h"
#include "fa_common.metal"

#define FA_TYPES \
    half,   half4,     simdgroup_half8x8,  \
    half,   half4x4,   simdgroup_half8x8,  \
    half,   half4x4,   simdgroup_half8x8,  \
    float,             simdgroup_float8x8, \
    float,  float2,    simdgroup_float8x8, \
    float,  float4,    simdgroup_float8x8

typedef decltype(kernel_flash_attn_ext<FA_TYPES, half4x4, 1, dequantize_f16, half4x4, 1, dequantize_f16, 64, 64>) flash_attn_ext_t;

// a cache type: name, type in device memory, 16-value pieces per block, dequantize
#define FA_KV_F16    f16,    half4x4,      1, dequantize_f16
#define FA_KV_Q8_0   q8_0,   block_q8_0,   2, dequantize_q8_0
#define FA_KV_TURBO2 turbo2, block_turbo2, 4, dequantize_turbo2
#define FA_KV_TURBO3 turbo3, block_turbo3, 4, dequantize_turbo3
#define FA_KV_TURBO4 turbo4, block_turbo4, 4, dequantize_turbo4
#define FA_KV_TURBO5 turbo5, block_turbo5, 4, dequantize_turbo5

#define FA_INST(name, kt, knl, kdq, vt, vnl, vdq, D) \
template [[host_name("kernel_flash_attn_ext_" name "_dk" #D "_dv" #D)]] kernel flash_attn_ext_t \
    kernel_flash_attn_ext<FA_TYPES, kt, knl, kdq, vt, vnl, vdq, D, D>;

#define FA_SAME_(kn, kt, knl, kdq, D) FA_INST(#kn, kt, knl, kdq, kt, knl, kdq, D)
#define FA_PAIR_(kn, kt, knl, kdq, vn, vt, vnl, vdq, D) FA_INST(#kn "_" #vn, kt, knl, kdq, vt, vnl, vdq, D)
#define FA_SAME_ALL(KV)   FA_SAME_(KV, 64)   FA_SAME_(KV, 128)   FA_SAME_(KV, 256)
#define FA_PAIR_ALL(K, V) FA_PAIR_(K, V, 64) FA_PAIR_(K, V, 128) FA_PAIR_(K, V, 256)

FA_SAME_ALL(FA_KV_TURBO2)
FA_SAME_ALL(FA_KV_TURBO3)
FA_SAME_ALL(FA_KV_TURBO4)

FA_PAIR_ALL(FA_KV_F16,    FA_KV_TURBO2)
FA_PAIR_ALL(FA_KV_F16,    FA_KV_TURBO3)
FA_PAIR_ALL(FA_KV_F16,    FA_KV_TURBO4)
FA_PAIR_ALL(FA_KV_Q8_0,   FA_KV_TURBO2)
FA_PAIR_ALL(FA_KV_Q8_0,   FA_KV_TURBO3)
FA_PAIR_ALL(FA_KV_Q8_0,   FA_KV_TURBO4)
FA_PAIR_ALL(FA_KV_TURBO2, FA_KV_F16)
FA_PAIR_ALL(FA_KV_TURBO2, FA_KV_Q8_0)
FA_PAIR_ALL(FA_KV_TURBO2, FA_KV_TURBO3)
FA_PAIR_ALL(FA_KV_TURBO2, FA_KV_TURBO4)
FA_PAIR_ALL(FA_KV_TURBO3, FA_KV_F16)
FA_PAIR_ALL(FA_KV_TURBO3, FA_KV_Q8_0)
FA_PAIR_ALL(FA_KV_TURBO3, FA_KV_TURBO2)
FA_PAIR_ALL(FA_KV_TURBO3, FA_KV_TURBO4)
FA_PAIR_ALL(FA_KV_TURBO4, FA_KV_F16)
FA_PAIR_ALL(FA_KV_TURBO4, FA_KV_Q8_0)
FA_PAIR_ALL(FA_KV_TURBO4, FA_KV_TURBO2)
FA_PAIR_ALL(FA_KV_TURBO4, FA_KV_TURBO3)
FA_PAIR_ALL(FA_KV_TURBO4, FA_KV_TURBO5)

// turbo5 (patch 0045) with every partner
FA_SAME_ALL(FA_KV_TURBO5)
FA_PAIR_ALL(FA_KV_F16,    FA_KV_TURBO5)
FA_PAIR_ALL(FA_KV_Q8_0,   FA_KV_TURBO5)
FA_PAIR_ALL(FA_KV_TURBO2, FA_KV_TURBO5)
FA_PAIR_ALL(FA_KV_TURBO3, FA_KV_TURBO5)
FA_PAIR_ALL(FA_KV_TURBO5, FA_KV_F16)
FA_PAIR_ALL(FA_KV_TURBO5, FA_KV_Q8_0)
FA_PAIR_ALL(FA_KV_TURBO5, FA_KV_TURBO2)
FA_PAIR_ALL(FA_KV_TURBO5, FA_KV_TURBO3)
FA_PAIR_ALL(FA_KV_TURBO5, FA_KV_TURBO4)

#undef FA_TYPES
