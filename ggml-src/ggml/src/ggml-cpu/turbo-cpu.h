// tqllama: CPU kernels of the turbo KV-cache types.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

// from_float of the CPU type traits (the reference quantizer: the cache is written once per token)
void quantize_row_turbo2(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo2_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// from_float of GGML_TYPE_TURBO_QJL_Q: a query row as q8_0 plus its per-block projection S q
void quantize_row_turbo_qjl_q(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// K . Q with Q quantized to q8_0 (its 32-blocks line up with the turbo sub-blocks)
void ggml_vec_dot_turbo2_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo3_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo4_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);

// K . Q for two-stage keys: stage 1 against the q8_0 query, the signs against S q
void ggml_vec_dot_turbo2_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo3_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo4_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);

// y[0..n) += v * dequantize(x): flash attention accumulates turbo V rows straight from
// their codes instead of converting each row to floats first
typedef void (*ggml_turbo_vec_mad_t)(int n, float * GGML_RESTRICT y, const void * GGML_RESTRICT x, float v);

// the fused V accumulator of a turbo type, NULL for any other type
ggml_turbo_vec_mad_t ggml_turbo_get_vec_mad(enum ggml_type type);

#ifdef __cplusplus
}
#endif
