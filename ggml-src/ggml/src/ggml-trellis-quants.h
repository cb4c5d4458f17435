// tqllama: the C side of the trellis-coded turbo types (turbo2t, turbo3t): the reference
// (de)quantization of ggml-base and the interface through which the CPU backend plugs in
// its SIMD Viterbi search. The blocks and the scalar pieces are ggml-trellis-common.h's; the
// contract is docs/FORMAT-TRELLIS.md of tqllama; tqllama/quant/trellis.py is its oracle.
#pragma once

#include "ggml-turbo-quants.h" // the language section, and TURBO_QUANTIZE_CHUNK
#include "ggml-trellis-common.h"

#include <stddef.h>
#include <stdint.h>

#define TRELLIS_MAX_STATES 512 // 2^L of the largest type

// A trellis type as the encoder and the decoders see it: k bits per value, L-bit states, the
// block size, and its table: c(s) = table[s], or with `sign` table[s >> 1] negated for odd s
typedef struct trellis_type {
    int            k;
    int            L;
    int            block_size;
    int            sign;
    const int8_t * table;
} trellis_type;

static inline int trellis_code(const trellis_type * tt, int s) {
    const int c = tt->table[s >> tt->sign];
    return tt->sign && (s & 1) ? -c : c;
}

// FORMAT-TRELLIS.md step 4 for one block and one scale: the minimum-error path through the
// trellis for the values x[0..63], dc[s] = d * c(s) for each of the 2^L states. Returns the
// path's error (squares summed in index order) and writes its states. SIMD backends supply
// their own, which must give the same error and states bit for bit.
typedef float (*trellis_viterbi_t)(const float * x, const float * dc, int k, int L, uint16_t * states);

#ifdef __cplusplus
extern "C" {
#endif

const trellis_type * ggml_trellis_type(enum ggml_type type); // NULL for other types

float trellis_viterbi_ref(const float * x, const float * dc, int k, int L, uint16_t * states);

// the quantization rule with the given Viterbi search (the _ref functions use the scalar one)
void quantize_row_turbo2t_with(const float * GGML_RESTRICT x, block_turbo2t * GGML_RESTRICT y, int64_t k, trellis_viterbi_t viterbi);
void quantize_row_turbo3t_with(const float * GGML_RESTRICT x, block_turbo3t * GGML_RESTRICT y, int64_t k, trellis_viterbi_t viterbi);

void quantize_row_turbo2t_ref(const float * GGML_RESTRICT x, block_turbo2t * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3t_ref(const float * GGML_RESTRICT x, block_turbo3t * GGML_RESTRICT y, int64_t k);

void dequantize_row_turbo2t(const block_turbo2t * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3t(const block_turbo3t * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

size_t quantize_turbo2t(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_turbo3t(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

#ifdef __cplusplus
}
#endif
