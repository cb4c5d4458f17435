// tqllama: the turbo KV-cache blocks and the scalar pieces of their quantization rule, declared
// once for C, C++, CUDA and Metal, as ggml-common.h declares upstream's blocks.
//
// The contract is docs/FORMAT.md and docs/FORMAT-QJL.md of tqllama; every constant and
// codebook comes from the generated ggml-turbo-tables.h, included here. The includer says
// which language it is, before including this file:
//   GGML_TURBO_DECL_C      C (ggml-turbo-quants.h, the reference and the CPU backend)
//   GGML_TURBO_DECL_CPP    C++ (Metal's turbo.h compiled for the host, in tqllama's tests)
//   GGML_TURBO_DECL_CUDA   CUDA (ggml-cuda/turbo.cuh; tables in device memory)
//   GGML_TURBO_DECL_METAL  Metal Shading Language (ggml-metal/kernels/turbo.h)
// Everything below the language section is the common subset of the four: C syntax, pointers
// qualified with the Metal address space they point into (TURBO_DEVICE: rows and blocks,
// TURBO_THREAD: a thread's own arrays, TURBO_CONSTANT: the tables; empty elsewhere), bit
// casts through turbo_as_float/turbo_as_uint, and float arithmetic through TURBO_ADD, _SUB,
// _MUL, _DIV and _SQRT: one IEEE float32 operation each, rounded to nearest, never fused into a
// multiply-add (C and C++ are compiled with -ffp-contract=off, CUDA uses the _rn intrinsics,
// Metal asks for safe math without contraction), sums in index order: the same bits on
// every backend.
#pragma once

#if defined(GGML_TURBO_DECL_METAL)
#define TURBO_FN       static inline
#define TURBO_DEVICE   device
#define TURBO_THREAD   thread
#define TURBO_CONSTANT constant
// FORMAT.md: IEEE float32, one rounding per operation, no fused multiply-add
#define TURBO_EXACT_MATH _Pragma("METAL fp math_mode(safe)") _Pragma("METAL fp contract(off)")
#define TURBO_STATIC_ASSERT static_assert
#define TURBO_TABLE_BEGIN(type, name, size) static const constant type name[size] = {
#define TURBO_TABLE_END() };
TURBO_FN float    turbo_as_float(uint32_t b) { return as_type<float>(b); }
TURBO_FN uint32_t turbo_as_uint(float f)     { return as_type<uint32_t>(f); }
#define TURBO_ADD(a, b) ((a) + (b))
#define TURBO_SUB(a, b) ((a) - (b))
#define TURBO_MUL(a, b) ((a) * (b))
#define TURBO_DIV(a, b) ((a) / (b))
#define TURBO_SQRT(a)   precise::sqrt(a)

#elif defined(GGML_TURBO_DECL_CUDA)
#include <cstdint>
#define TURBO_FN       static __device__ __forceinline__
#define TURBO_DEVICE
#define TURBO_THREAD
#define TURBO_CONSTANT
#define TURBO_EXACT_MATH // the _rn intrinsics below: nvcc never fuses them, -use_fast_math keeps them IEEE
#define TURBO_STATIC_ASSERT static_assert
// Tables in device memory, 16-byte aligned so that a codebook can be read as 32-bit words
// for __byte_perm lookups. This must be the first inclusion of the tables header in the
// translation unit (it has #pragma once); no CUDA source includes it any other way.
#define TURBO_TABLE_BEGIN(type, name, size) static const __device__ __align__(16) type name[size] = {
#define TURBO_TABLE_END() };
TURBO_FN float    turbo_as_float(uint32_t b) { return __uint_as_float(b); }
TURBO_FN uint32_t turbo_as_uint(float f)     { return __float_as_uint(f); }
#define TURBO_ADD(a, b) __fadd_rn(a, b)
#define TURBO_SUB(a, b) __fsub_rn(a, b)
#define TURBO_MUL(a, b) __fmul_rn(a, b)
#define TURBO_DIV(a, b) __fdiv_rn(a, b)
#define TURBO_SQRT(a)   __fsqrt_rn(a) // correctly rounded: sqrtf is not under -use_fast_math

#elif defined(GGML_TURBO_DECL_C) || defined(GGML_TURBO_DECL_CPP)
#include <stdint.h>
#include <string.h>
#define TURBO_FN       static inline
#define TURBO_DEVICE
#define TURBO_THREAD
#define TURBO_CONSTANT
#define TURBO_EXACT_MATH // the files that include this header are compiled with -ffp-contract=off
#ifdef __cplusplus
#define TURBO_STATIC_ASSERT static_assert
#else
#define TURBO_STATIC_ASSERT _Static_assert
#endif
TURBO_FN float turbo_as_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}
TURBO_FN uint32_t turbo_as_uint(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof(b));
    return b;
}
#define TURBO_ADD(a, b) ((a) + (b))
#define TURBO_SUB(a, b) ((a) - (b))
#define TURBO_MUL(a, b) ((a) * (b))
#define TURBO_DIV(a, b) ((a) / (b))
#define TURBO_SQRT(a)   sqrtf(a) // the includer includes <math.h>

#else
#error "define GGML_TURBO_DECL_C, _CPP, _CUDA or _METAL before including ggml-turbo-common.h"
#endif

#include "ggml-turbo-tables.h"

// ------------------------------------------------------------------------------------------
// blocks (FORMAT.md "Blocks", FORMAT-QJL.md)
// ------------------------------------------------------------------------------------------

#define QK_TURBO     64  // values per block
#define QK_TURBO_SUB 32  // values per sub-block (one scale each)

typedef struct {
    uint16_t s;                  // shared exponent E (6 bits) + fine scale codes f0, f1 (5 bits each)
    uint8_t  qs[QK_TURBO/2];     // low 4 bits of the 5-bit indices, turbo4's order
    uint8_t  qh[QK_TURBO/8];     // bit 4, bit i of the 32-bit word of each sub-block
} block_turbo5;

typedef struct {
    uint16_t s;                  // shared exponent E (6 bits) + fine scale codes f0, f1 (5 bits each)
    uint8_t  qs[QK_TURBO/2];     // 4-bit indices, q4_0 order per sub-block
} block_turbo4;

typedef struct {
    uint16_t s;
    uint8_t  qs[QK_TURBO/4];     // low 2 bits of the 3-bit indices
    uint8_t  qh[QK_TURBO/8];     // high bit, bit i of the 32-bit word of each sub-block
} block_turbo3;

typedef struct {
    uint16_t s;
    uint8_t  qs[QK_TURBO/4];     // 2-bit indices
} block_turbo2;

typedef struct {
    uint16_t s;
    uint8_t  qs[QK_TURBO/8];     // 1-bit indices, bit i of the 32-bit word of each sub-block
} block_turbo1;                  // stage 1 of turbo2_qjl only

// two-stage keys (docs/FORMAT-QJL.md): a turbo{b-1} block first, so that kernels read stage
// 1 with the plain type's code, then the residual's norm and the signs of its projection
typedef struct {
    block_turbo1 mse;
    uint16_t     rn;             // |r|, fp16
    uint8_t      qr[QK_TURBO/8]; // bit i: (S r)_i < 0
} block_turbo2_qjl;

typedef struct {
    block_turbo2 mse;
    uint16_t     rn;
    uint8_t      qr[QK_TURBO/8];
} block_turbo3_qjl;

typedef struct {
    block_turbo3 mse;
    uint16_t     rn;
    uint8_t      qr[QK_TURBO/8];
} block_turbo4_qjl;

// The query side of K . Q for turbo_qjl keys (their vec_dot_type, GGML_TYPE_TURBO_QJL_Q),
// per block of 64: the query as q8_0 for stage 1, and its projection S q for the signs,
// computed once per query row instead of once per key. S q is stored, not P(q) = 64 S q:
// it is bounded by the block's norm, so fp16 holds it wherever an f16 cache holds q.
typedef struct {
    struct {
        uint16_t d;              // fp16
        int8_t   qs[QK_TURBO_SUB];
    } q[2];                      // each sub-block as a block_q8_0 (the same layout)
    uint16_t p[QK_TURBO];        // S q, fp16
} block_turbo_qjl_q;             // 3.06 bytes per value: fits flash attention's Q scratch (4)

// a _qjl key's sign term is g * <s, P(q)> = (64 g) * <s, S q>, and block_turbo_qjl_q holds S q
#define TURBO_QJL_SCALE_SQ (TURBO_QJL_SCALE*QK_TURBO)

TURBO_STATIC_ASSERT(sizeof(block_turbo5) == 42, "wrong turbo5 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo4) == 34, "wrong turbo4 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo3) == 26, "wrong turbo3 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo2) == 18, "wrong turbo2 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo1) == 10, "wrong turbo1 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo4_qjl) == 36, "wrong turbo4_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo3_qjl) == 28, "wrong turbo3_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo2_qjl) == 20, "wrong turbo2_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo_qjl_q) == 196, "wrong turbo_qjl_q block size");

// ------------------------------------------------------------------------------------------
// the scale field (FORMAT.md "The scale field")
// ------------------------------------------------------------------------------------------

// d(k) = M[k & 15] * 2^((k >> 4) - TURBO_EXP_BIAS) for a scale code k in 1..TURBO_KMAX;
// the power of two is built from its bits: exact, and the same on every backend
TURBO_FN float turbo_k_to_d(int k) {
    return TURBO_MUL(turbo_scale_mant[k & 15], turbo_as_float((uint32_t) ((k >> 4) - TURBO_EXP_BIAS + 127) << 23));
}

// scale of sub-block j (0 or 1) of a block whose scale field is s; 0 for a zero sub-block.
// Every 16-bit pattern decodes to a finite scale (E <= 63, f <= 31: k <= TURBO_KMAX), so
// turbo rows need no validation beyond their size.
TURBO_FN float turbo_scale(uint16_t s, int j) {
    const int f = (s >> (5*j)) & 31;
    return f == 0 ? 0.0f : turbo_k_to_d(8*(s >> 10) + f);
}

TURBO_FN int turbo_clamp_k(int k) {
    return k < 1 ? 1 : k > TURBO_KMAX ? TURBO_KMAX : k;
}

// ------------------------------------------------------------------------------------------
// the quantization rule (FORMAT.md steps 0-6): a change of the rule is an edit here
// ------------------------------------------------------------------------------------------

// A codebook (FORMAT.md "Codebooks" and the window of step 3) as the arguments of the
// functions below: TURBO_CODEBOOK(B) for turbo{B}'s, TURBO_CB_PARAMS their parameters.
#define TURBO_CODEBOOK(B) kvalues_turbo##B, kthresh_turbo##B, 1 << (B), (float) TURBO##B##_CBMAX, \
                          TURBO##B##_SEARCH_LO, TURBO##B##_SEARCH_HI
#define TURBO_CB_PARAMS TURBO_CONSTANT const int8_t * values, TURBO_CONSTANT const float * thresh, \
                        int n, float cbmax, int lo, int hi

// step 0: NaN -> 0, everything else clamped to f16's range. NaN is tested on the bits: a
// fast-math compiler may fold v != v to false.
TURBO_FN float turbo_sanitize(float v) {
    if ((turbo_as_uint(v) & 0x7fffffffu) > 0x7f800000u) {
        return 0.0f;
    }
    return v > TURBO_XMAX ? TURBO_XMAX : v < -TURBO_XMAX ? -TURBO_XMAX : v;
}

// frexp of a positive finite v, on its bits (C's, CUDA's and MSL's frexpf differ, and
// -use_fast_math flushes a subnormal): v = m * 2^e, m in [0.5, 1), subnormals normalized
TURBO_FN float turbo_frexp(float v, TURBO_THREAD int * e) {
    const uint32_t bits = turbo_as_uint(v);
    uint32_t mant = bits & 0x7fffffu;
    int ex = (int) (bits >> 23) - 126; // v = (1.mant / 2) * 2^ex
    if ((bits >> 23) == 0) {
        ex = -125;
        while ((mant & 0x800000u) == 0) {
            mant <<= 1;
            --ex;
        }
        mant &= 0x7fffffu;
    }
    *e = ex;
    return turbo_as_float(mant | 126u << 23);
}

// step 2: the smallest code whose scale maps amax (> 0) inside the codebook
TURBO_FN int turbo_k_ref(float amax, float cbmax) {
    TURBO_EXACT_MATH
    const float t = TURBO_DIV(amax, cbmax);
    if (t == 0.0f) {
        return 1; // a subnormal amax that underflowed: the smallest scale
    }
    int e;
    const float u = TURBO_MUL(turbo_frexp(t, &e), 2.0f); // 2*m, in [1, 2): exact
    int i = 0;
    while (i < 16 && turbo_scale_mant[i] < u) {
        ++i;
    }
    // i == 16: u > M[15], and the next octave's M[0] = 2 covers it
    return turbo_clamp_k(16*(e - 1 + TURBO_EXP_BIAS) + i);
}

// steps 0-2 for a sub-block of 32 values: xs <- the sanitized values, returns k_ref, or 0
// when the sub-block is zero (step 1: then f = 0 and every index is 0)
TURBO_FN int turbo_sub_k_ref(TURBO_DEVICE const float * x, TURBO_THREAD float * xs, float cbmax) {
    TURBO_EXACT_MATH
    float amax = 0.0f;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float v = turbo_sanitize(x[i]);
        const float a = v < 0.0f ? -v : v;
        xs[i] = v;
        amax  = a > amax ? a : amax;
    }
    return amax == 0.0f ? 0 : turbo_k_ref(amax, cbmax);
}

// idx = #{t : y > thresh[t]}: the thresholds ascend, so a binary search counts them
// (4 comparisons for 16 entries instead of 15: this runs 9 times per value on every token)
TURBO_FN int turbo_nearest(float y, TURBO_CONSTANT const float * thresh, int n) {
    int lo = 0;
    int hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (y > thresh[mid]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// step 3 for one candidate: squared error of a sub-block quantized with scale d,
// accumulated in index order
TURBO_FN float turbo_sub_error(TURBO_THREAD const float * xs, float d, TURBO_CONSTANT const int8_t * values,
                               TURBO_CONSTANT const float * thresh, int n) {
    TURBO_EXACT_MATH
    const float inv = TURBO_DIV(1.0f, d);
    float err = 0.0f;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const int   idx = turbo_nearest(TURBO_MUL(xs[i], inv), thresh, n);
        const float r   = TURBO_SUB(xs[i], TURBO_MUL(d, (float) values[idx]));
        err = TURBO_ADD(err, TURBO_MUL(r, r));
    }
    return err;
}

// step 3: every candidate k_ref + lo .. k_ref + hi in increasing order; the smallest error
// wins, the first one among equal errors
TURBO_FN int turbo_best_code(TURBO_THREAD const float * xs, int k_ref, TURBO_CONSTANT const int8_t * values,
                             TURBO_CONSTANT const float * thresh, int n, int lo, int hi) {
    float best   = 0.0f;
    int   best_k = 0;
    for (int delta = lo; delta <= hi; ++delta) {
        const int   kc  = turbo_clamp_k(k_ref + delta);
        const float err = turbo_sub_error(xs, turbo_k_to_d(kc), values, thresh, n);
        if (delta == lo || err < best) {
            best   = err;
            best_k = kc;
        }
    }
    return best_k;
}

// step 5: the scale field of a block whose sub-blocks have the best codes k0, k1 (0: a zero
// sub-block): the smallest E that fits the larger code, the other code raised to 1 if below
TURBO_FN uint16_t turbo_scale_field(int k0, int k1) {
    const int k_hi = k0 > k1 ? k0 : k1;
    const int E    = k_hi > 31 ? (k_hi - 24) >> 3 : 0;
    const int f0   = k0 == 0 ? 0 : (k0 - 8*E < 1 ? 1 : k0 - 8*E);
    const int f1   = k1 == 0 ? 0 : (k1 - 8*E < 1 ? 1 : k1 - 8*E);
    return (uint16_t) (f0 | f1 << 5 | E << 10);
}

// step 6: idx[i] = #{t : xs[i]*inv > thresh[t]} for the 32 values of a sub-block
TURBO_FN void turbo_indices(TURBO_THREAD const float * xs, float inv, TURBO_CONSTANT const float * thresh, int n,
                            TURBO_THREAD uint8_t * idx) {
    TURBO_EXACT_MATH
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        idx[i] = (uint8_t) turbo_nearest(TURBO_MUL(xs[i], inv), thresh, n);
    }
}

// TURBO_QUANTIZE_BLOCK(name, cbmax, best_code, indices, params...) defines
//     uint16_t name(const float * x, uint8_t * idx, params...)
// steps 0-6 for the block of 64 floats at x: the scale field, and the 64 codebook indices in
// idx. Steps 3 and 6 for the sub-block of 32 sanitized values at xs are the expressions
// best_code (of xs and k_ref) and indices (of xs, inv = 1/d and the 32 indices at is): the
// scalar loops above for turbo_quantize_block below (Metal), the loops of a turbo_search
// for ggml-turbo-quants.c (where the CPU backend plugs in its SIMD ones). The rule around
// them is written once, here.
#define TURBO_QUANTIZE_BLOCK(name, cbmax, best_code, indices, ...)                             \
TURBO_FN uint16_t name(TURBO_DEVICE const float * x, TURBO_THREAD uint8_t * idx, __VA_ARGS__) { \
    TURBO_EXACT_MATH                                                                           \
    float xb[QK_TURBO];                                                                        \
    int   kb[2];                                                                               \
    for (int j = 0; j < 2; ++j) {                                                              \
        TURBO_THREAD const float * xs = xb + j*QK_TURBO_SUB;                                   \
        const int k_ref = turbo_sub_k_ref(x + j*QK_TURBO_SUB, xb + j*QK_TURBO_SUB, cbmax);     \
        kb[j] = k_ref == 0 ? 0 : (best_code);                                                  \
    }                                                                                          \
    const uint16_t s = turbo_scale_field(kb[0], kb[1]);                                        \
    for (int j = 0; j < 2; ++j) {                                                              \
        TURBO_THREAD const float * xs = xb + j*QK_TURBO_SUB;                                   \
        TURBO_THREAD uint8_t *     is = idx + j*QK_TURBO_SUB;                                  \
        const float d = turbo_scale(s, j);                                                     \
        if (d == 0.0f) {                                                                       \
            for (int i = 0; i < QK_TURBO_SUB; ++i) {                                           \
                is[i] = 0;                                                                     \
            }                                                                                  \
        } else {                                                                               \
            const float inv = TURBO_DIV(1.0f, d);                                              \
            indices;                                                                           \
        }                                                                                      \
    }                                                                                          \
    return s;                                                                                  \
}

TURBO_QUANTIZE_BLOCK(turbo_quantize_block, cbmax,
                     turbo_best_code(xs, k_ref, values, thresh, n, lo, hi),
                     turbo_indices(xs, inv, thresh, n, is), TURBO_CB_PARAMS)

// ------------------------------------------------------------------------------------------
// index packing and decoding (FORMAT.md "Index packing", FORMAT-QJL.md "turbo1")
// ------------------------------------------------------------------------------------------

// turbo4: qs[16*j + l] = idx[32*j + l] | idx[32*j + l + 16] << 4 (q4_0's order)
TURBO_FN void turbo_pack4(TURBO_THREAD const uint8_t * idx, TURBO_DEVICE uint8_t * qs) {
    for (int j = 0; j < 2; ++j) {
        for (int l = 0; l < 16; ++l) {
            qs[16*j + l] = (uint8_t) ((idx[32*j + l] & 15) | (idx[32*j + l + 16] & 15) << 4);
        }
    }
}

// the low two bits of the 64 indices: byte 8*j + l holds indices l, l+8, l+16, l+24 of
// sub-block j (turbo2's qs, turbo3's qs)
TURBO_FN void turbo_pack2(TURBO_THREAD const uint8_t * idx, TURBO_DEVICE uint8_t * qs) {
    for (int j = 0; j < 2; ++j) {
        TURBO_THREAD const uint8_t * is = idx + 32*j;
        for (int l = 0; l < 8; ++l) {
            qs[8*j + l] = (uint8_t) ((is[l] & 3) | (is[l + 8] & 3) << 2 | (is[l + 16] & 3) << 4 | (is[l + 24] & 3) << 6);
        }
    }
}

// bit b of each of the 64 indices -> 8 bytes: bit i of the 32-bit little-endian word of each
// sub-block, which is bit i & 7 of byte i >> 3 (turbo3's qh, turbo1's qs, the QJL signs)
TURBO_FN void turbo_pack_bit(TURBO_THREAD const uint8_t * idx, int b, TURBO_DEVICE uint8_t * out) {
    for (int m = 0; m < QK_TURBO/8; ++m) {
        int v = 0;
        for (int l = 0; l < 8; ++l) {
            v |= ((idx[8*m + l] >> b) & 1) << l;
        }
        out[m] = (uint8_t) v;
    }
}

// bit i (0..63) of 8 bytes packed by turbo_pack_bit
TURBO_FN int turbo_bit(TURBO_DEVICE const uint8_t * q, int i) {
    return (q[i >> 3] >> (i & 7)) & 1;
}

// the low two bits of index i (0..63) packed by turbo_pack2
TURBO_FN int turbo_index_lo2(TURBO_DEVICE const uint8_t * qs, int i) {
    return (qs[8*(i >> 5) + (i & 7)] >> (2*((i >> 3) & 3))) & 3;
}

// the low four bits of index i (0..63) packed by turbo_pack4
TURBO_FN int turbo_index_lo4(TURBO_DEVICE const uint8_t * qs, int i) {
    return (qs[16*(i >> 5) + (i & 15)] >> (4*((i >> 4) & 1))) & 15;
}

// the codebook index of value i (0..63) of a block
TURBO_FN int turbo4_index(TURBO_DEVICE const block_turbo4 * b, int i) {
    return turbo_index_lo4(b->qs, i);
}

TURBO_FN int turbo5_index(TURBO_DEVICE const block_turbo5 * b, int i) {
    return turbo_index_lo4(b->qs, i) | turbo_bit(b->qh, i) << 4;
}

TURBO_FN int turbo3_index(TURBO_DEVICE const block_turbo3 * b, int i) {
    return turbo_index_lo2(b->qs, i) | turbo_bit(b->qh, i) << 2;
}

TURBO_FN int turbo2_index(TURBO_DEVICE const block_turbo2 * b, int i) {
    return turbo_index_lo2(b->qs, i);
}

TURBO_FN int turbo1_index(TURBO_DEVICE const block_turbo1 * b, int i) {
    return turbo_bit(b->qs, i);
}

// FORMAT.md dequantization: turbo{B}_dequantize writes n values of a block from value i0 on
// (within one sub-block: i0 % n == 0, n divides 32) to y; a zero sub-block gives 0 * value
#define TURBO_DEQUANTIZE_FN(B)                                                                  \
TURBO_FN void turbo##B##_dequantize(TURBO_DEVICE const block_turbo##B * b, int i0, int n,    \
                                     TURBO_THREAD float * y) {                                 \
    TURBO_EXACT_MATH                                                                           \
    const float d = turbo_scale(b->s, i0 >> 5);                                                \
    for (int i = 0; i < n; ++i) {                                                              \
        y[i] = TURBO_MUL(d, (float) kvalues_turbo##B[turbo##B##_index(b, i0 + i)]);            \
    }                                                                                          \
}
TURBO_DEQUANTIZE_FN(1)
TURBO_DEQUANTIZE_FN(2)
TURBO_DEQUANTIZE_FN(3)
TURBO_DEQUANTIZE_FN(4)
TURBO_DEQUANTIZE_FN(5)
#undef TURBO_DEQUANTIZE_FN
