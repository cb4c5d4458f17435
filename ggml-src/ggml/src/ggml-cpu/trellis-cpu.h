// tqllama: CPU kernels of the trellis-coded turbo types (turbo2t, turbo3t).
#pragma once

#include "ggml.h"
#include "turbo-cpu.h"

#ifdef __cplusplus
extern "C" {
#endif

// from_float of the CPU type traits: the reference's rule with this backend's Viterbi search
void quantize_row_turbo2t(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3t(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// FORMAT-TRELLIS.md step 4 (a trellis_viterbi_t of ggml-trellis-quants.h): SIMD in
// arch/*/trellis-cpu.c where there is one, bit-exact with trellis_viterbi_ref
float ggml_trellis_viterbi(const float * x, const float * dc, int k, int L, uint16_t * states);
float ggml_trellis_viterbi_generic(const float * x, const float * dc, int k, int L, uint16_t * states);

// K . Q with Q quantized to q8_0 (two q8_0 blocks per trellis block)
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo2t_q8_0);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo3t_q8_0);

// y[0..n) += v * dequantize(x): flash attention's V accumulation from the codes
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo2t);
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo3t);

#ifdef __cplusplus
}
#endif
