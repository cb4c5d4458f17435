// tqllama: flash attention (the vec kernel, a few queries at a time) over turbo K/V caches,
// alone and mixed with f16 and q8_0. Head sizes 64, 128 and 256 (turbo blocks hold 64
// values), each at the baseline configuration of ggml_metal_tuning (one query per
// simdgroup, fa_vec_baseline_ne head elements per thread): the tuned table has no turbo rows.
// Names: kernel_flash_attn_ext_vec_<K>_dk<D>_dv<D> when K and V share a type,
// kernel_flash_attn_ext_vec_<K>_<V>_dk<D>_dv<D> otherwise (ggml-metal-device.cpp builds both).
#include "common.h"
#include "dequantize.h"
#include "turbo.h"
#include "fa_vec_common.metal"

#define FA_TYPES \
           half4,  \
           half4,  \
           half4,  \
    float,         \
    float, float4, \
           float4

typedef decltype(kernel_flash_attn_ext_vec<FA_TYPES, half4, 1, dequantize_f16_t4, half4, 1, dequantize_f16_t4, 128, 128, 4>) flash_attn_ext_vec_t;

// a cache type: name, type in device memory, 4-value pieces per block, dequantize
#define FA_KV_F16    f16,    half4,        1,  dequantize_f16_t4
#define FA_KV_Q8_0   q8_0,   block_q8_0,   8,  dequantize_q8_0_t4
#define FA_KV_TURBO2 turbo2, block_turbo2, 16, dequantize_turbo2_t4
#define FA_KV_TURBO3 turbo3, block_turbo3, 16, dequantize_turbo3_t4
#define FA_KV_TURBO4 turbo4, block_turbo4, 16, dequantize_turbo4_t4
#define FA_KV_TURBO5 turbo5, block_turbo5, 16, dequantize_turbo5_t4

// NE: head elements per thread, fa_vec_baseline_ne(D, D)
#define FA_INST(name, kt, knl, kdq, vt, vnl, vdq, D, NE) \
template [[host_name("kernel_flash_attn_ext_vec_" name "_dk" #D "_dv" #D)]] kernel flash_attn_ext_vec_t \
    kernel_flash_attn_ext_vec<FA_TYPES, kt, knl, kdq, vt, vnl, vdq, D, D, NE>;

#define FA_SAME_(kn, kt, knl, kdq, D, NE) FA_INST(#kn, kt, knl, kdq, kt, knl, kdq, D, NE)
#define FA_PAIR_(kn, kt, knl, kdq, vn, vt, vnl, vdq, D, NE) FA_INST(#kn "_" #vn, kt, knl, kdq, vt, vnl, vdq, D, NE)
#define FA_SAME_ALL(KV)   FA_SAME_(KV, 64, 2)   FA_SAME_(KV, 128, 1)   FA_SAME_(KV, 256, 1)
#define FA_PAIR_ALL(K, V) FA_PAIR_(K, V, 64, 2) FA_PAIR_(K, V, 128, 1) FA_PAIR_(K, V, 256, 1)

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
