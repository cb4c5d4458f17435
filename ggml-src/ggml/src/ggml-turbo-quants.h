// tqllama: the C side of the turbo KV-cache types: the reference (de)quantization of
// ggml-base and the interface through which the CPU backend plugs in its SIMD inner loops.
// The blocks and the rule itself are ggml-turbo-common.h's (shared with CUDA and Metal); the
// contract is docs/FORMAT.md of tqllama; the NumPy reference is its oracle.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
#ifndef GGML_TURBO_DECL_CPP
#define GGML_TURBO_DECL_CPP
#endif
#else
#ifndef GGML_TURBO_DECL_C
#define GGML_TURBO_DECL_C
#endif
#endif
#include "ggml-turbo-common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// defines the ggml_quantize_chunk entry point quantize_<name> of a type whose reference is
// quantize_row_<name>_ref (the turbo and the trellis types): rows are independent, the imatrix
// is not used
#define TURBO_QUANTIZE_CHUNK(name, block)                                                         \
size_t quantize_##name(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, \
                       int64_t n_per_row, const float * imatrix) {                               \
    GGML_UNUSED(imatrix);                                                                        \
    const size_t row_size = ggml_row_size(GGML_TYPE_##block, n_per_row);                         \
    for (int64_t r = 0; r < nrows; ++r) {                                                        \
        quantize_row_##name##_ref(src + r*n_per_row, (void *) ((char *) dst + r*row_size), n_per_row); \
    }                                                                                            \
    return nrows*row_size;                                                                       \
}

// a codebook and its scale search window (FORMAT.md "Codebooks" and step 3): initialized
// with TURBO_CODEBOOK(bits), whose order its fields follow
typedef struct turbo_codebook {
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
void quantize_row_turbo5_with(const float * GGML_RESTRICT x, block_turbo5 * GGML_RESTRICT y, int64_t k, const turbo_search * search);

void quantize_row_turbo2_ref(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_ref(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_ref(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo5_ref(const float * GGML_RESTRICT x, block_turbo5 * GGML_RESTRICT y, int64_t k);

void dequantize_row_turbo2(const block_turbo2 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3(const block_turbo3 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo4(const block_turbo4 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo5(const block_turbo5 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

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
size_t quantize_turbo5(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo2_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo3_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo4_qjl(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

#ifdef __cplusplus
}
#endif
