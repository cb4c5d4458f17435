// tqllama: block layouts and reference (de)quantization of the turbo KV-cache types.
// The contract is docs/FORMAT.md of tqllama; the NumPy reference is its oracle.
#pragma once

#include "ggml.h"
#include "ggml-turbo-tables.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QK_TURBO     64  // values per block
#define QK_TURBO_SUB 32  // values per sub-block (one scale each)

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

#ifdef __cplusplus
#define TURBO_STATIC_ASSERT static_assert
#else
#define TURBO_STATIC_ASSERT _Static_assert
#endif
TURBO_STATIC_ASSERT(sizeof(block_turbo4) == 34, "wrong turbo4 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo3) == 26, "wrong turbo3 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo2) == 18, "wrong turbo2 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo1) == 10, "wrong turbo1 block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo4_qjl) == 36, "wrong turbo4_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo3_qjl) == 28, "wrong turbo3_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo2_qjl) == 20, "wrong turbo2_qjl block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo_qjl_q) == 196, "wrong turbo_qjl_q block size");
#undef TURBO_STATIC_ASSERT

// d(k) = M[k & 15] * 2^((k >> 4) - TURBO_EXP_BIAS) for a scale code k in 1..TURBO_KMAX;
// the power of two is built from its bits: exact, and the same on every backend
static inline float turbo_k_to_d(int k) {
    const uint32_t bits = (uint32_t) ((k >> 4) - TURBO_EXP_BIAS + 127) << 23;
    float p2;
    memcpy(&p2, &bits, sizeof(p2));
    return turbo_scale_mant[k & 15] * p2;
}

// scale of sub-block j (0 or 1) of a block whose scale field is s; 0 for a zero sub-block.
// Every 16-bit pattern decodes to a finite scale (E <= 63, f <= 31: k <= TURBO_KMAX), so
// turbo rows need no validation beyond their size.
static inline float turbo_scale(uint16_t s, int j) {
    const int f = (s >> (5*j)) & 31;
    return f == 0 ? 0.0f : turbo_k_to_d(8*(s >> 10) + f);
}

// a codebook and its scale search window (FORMAT.md "Codebooks" and step 3)
typedef struct {
    const int8_t * values;  // 2^bits int8 entries, ascending
    const float  * thresh;  // 2^bits - 1 midpoints
    int            n;       // 2^bits
    float          cbmax;   // max |values|
    int            lo, hi;  // scale candidates k_ref+lo .. k_ref+hi
} turbo_codebook;

// the two inner loops of the quantization rule; SIMD backends supply their own, which
// must give the same results bit for bit (the rest of the rule stays in one place)
typedef struct {
    // step 3: the best scale code of a non-zero sub-block of 32 values, given k_ref
    int  (*best_code)(const float * xs, int k_ref, const turbo_codebook * cb);
    // step 6: idx[i] = #{t : xs[i]*inv > thresh[t]} for the 32 values of a sub-block
    void (*indices)(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx);
} turbo_search;

static inline int turbo_clamp_k(int k) {
    return k < 1 ? 1 : k > TURBO_KMAX ? TURBO_KMAX : k;
}

// v <- Hu v for v[0..63], Hu the unnormalized +-1 Walsh-Hadamard matrix, in the butterfly
// order of FORMAT-QJL.md (one rounding per addition)
static inline void turbo_hu64(float * v) {
    for (int h = 1; h < QK_TURBO; h <<= 1) {
        for (int i = 0; i < QK_TURBO; ++i) {
            if ((i & h) == 0) {
                const float a = v[i];
                const float b = v[i + h];
                v[i]     = a + b;
                v[i + h] = a - b;
            }
        }
    }
}

// v <- P(v) = Hu D3 Hu D2 v = 64 S v: the QJL projection of a block
static inline void turbo_qjl_project(float * v) {
    for (int i = 0; i < QK_TURBO; ++i) {
        v[i] *= (float) turbo_qjl_signs[i];
    }
    turbo_hu64(v);
    for (int i = 0; i < QK_TURBO; ++i) {
        v[i] *= (float) turbo_qjl_signs[QK_TURBO + i];
    }
    turbo_hu64(v);
}

#ifdef __cplusplus
extern "C" {
#endif

// the quantization rule with the given inner loops (the _ref functions use the scalar ones)
void quantize_row_turbo2_with(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k, const turbo_search * search);
void quantize_row_turbo3_with(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k, const turbo_search * search);
void quantize_row_turbo4_with(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k, const turbo_search * search);

void quantize_row_turbo2_ref(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_ref(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_ref(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k);

void dequantize_row_turbo2(const block_turbo2 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3(const block_turbo3 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo4(const block_turbo4 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

void quantize_row_turbo2_qjl_with(const float * GGML_RESTRICT x, block_turbo2_qjl * GGML_RESTRICT y, int64_t k, const turbo_search * search);
void quantize_row_turbo3_qjl_with(const float * GGML_RESTRICT x, block_turbo3_qjl * GGML_RESTRICT y, int64_t k, const turbo_search * search);
void quantize_row_turbo4_qjl_with(const float * GGML_RESTRICT x, block_turbo4_qjl * GGML_RESTRICT y, int64_t k, const turbo_search * search);

void quantize_row_turbo2_qjl_ref(const float * GGML_RESTRICT x, block_turbo2_qjl * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_qjl_ref(const float * GGML_RESTRICT x, block_turbo3_qjl * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_qjl_ref(const float * GGML_RESTRICT x, block_turbo4_qjl * GGML_RESTRICT y, int64_t k);

void dequantize_row_turbo2_qjl(const block_turbo2_qjl * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3_qjl(const block_turbo3_qjl * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo4_qjl(const block_turbo4_qjl * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// ggml_validate_row_data for the _qjl types: every residual norm a finite, non-negative fp16
bool turbo_qjl_validate_row(enum ggml_type type, const void * data, size_t nblocks);

size_t quantize_turbo2(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo3(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo4(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo2_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo3_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo4_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

#ifdef __cplusplus
}
#endif
