// tqllama: CPU kernels of the turbo KV-cache types.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

// from_float of the CPU type traits: the reference's rule with this backend's inner loops
// (SIMD where arch/*/turbo-cpu.c has them)
void quantize_row_turbo2(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo5(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo2_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_qjl(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// from_float of GGML_TYPE_TURBO_QJL_Q: a query row as q8_0 plus its per-block projection S q
void quantize_row_turbo_qjl_q(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// the signatures of the kernels below (ggml_vec_dot_t, ggml_turbo_vec_mad_t), and the start of
// a turbo vec_dot: x and y, its arguments as blocks of the given types
#define GGML_TURBO_VEC_DOT_FN(name) \
    void name(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc)
#define GGML_TURBO_VEC_MAD_FN(name) \
    void name(int n, float * GGML_RESTRICT y, const void * GGML_RESTRICT vx, float v)
#define GGML_TURBO_VEC_DOT_BEGIN(x_block, y_block)                          \
    assert(nrc == 1 && n % QK_TURBO == 0);                                  \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);    \
    const x_block * GGML_RESTRICT x = (const x_block *) vx;                 \
    const y_block * GGML_RESTRICT y = (const y_block *) vy

// Each kernel that arch/*/turbo-cpu.c may have, with its generic version in turbo-cpu.c
// (turbo-arch-fallback.h gives that one the kernel's name where the architecture has none)
#define GGML_TURBO_VEC_DOT_DECL(name) GGML_TURBO_VEC_DOT_FN(name); GGML_TURBO_VEC_DOT_FN(name##_generic)
#define GGML_TURBO_VEC_MAD_DECL(name) GGML_TURBO_VEC_MAD_FN(name); GGML_TURBO_VEC_MAD_FN(name##_generic)

// K . Q with Q quantized to q8_0 (its 32-blocks line up with the turbo sub-blocks)
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo2_q8_0);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo3_q8_0);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo4_q8_0);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo5_q8_0);

// K . Q for two-stage keys: stage 1 against the q8_0 query, the signs against S q
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo2_qjl_q);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo3_qjl_q);
GGML_TURBO_VEC_DOT_DECL(ggml_vec_dot_turbo4_qjl_q);

// y[0..n) += v * dequantize(x): flash attention accumulates turbo V rows straight from
// their codes instead of converting each row to floats first
typedef GGML_TURBO_VEC_MAD_FN((*ggml_turbo_vec_mad_t));
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo2);
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo3);
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo4);
GGML_TURBO_VEC_MAD_DECL(ggml_vec_mad_turbo5);

// the fused V accumulator of a turbo or trellis type, NULL for any other type
ggml_turbo_vec_mad_t ggml_turbo_get_vec_mad(enum ggml_type type);

// the quantizer's inner loops (a turbo_search of ggml-turbo-quants.h): FORMAT.md step 3, the
// best scale code of a non-zero sub-block of 32 values, and step 6, its indices
struct turbo_codebook;
int  ggml_turbo_best_code(const float * xs, int k_ref, const struct turbo_codebook * cb);
void ggml_turbo_indices(const float * xs, float inv, const struct turbo_codebook * cb, uint8_t * idx);
int  ggml_turbo_best_code_generic(const float * xs, int k_ref, const struct turbo_codebook * cb);
void ggml_turbo_indices_generic(const float * xs, float inv, const struct turbo_codebook * cb, uint8_t * idx);

// What a SIMD search of arch/*/turbo-cpu.c starts from: the scale candidates of a sub-block
// whose reference code is k_ref (FORMAT.md step 3: codes kc, scales d, 1/d; up to 16, padding
// slots repeat the last one, which can never win since the first of equal errors wins), and
// the codebook as 32 floats, zero-padded. ggml_turbo_first_best: the code of the first
// candidate with the smallest of the errors err[0 .. n_cand), as the reference picks it.
typedef struct {
    int   n_cand;
    int   kc[16];
    float d[16];
    float inv[16];
    float values[32];
} ggml_turbo_candidates;

void ggml_turbo_candidates_init(ggml_turbo_candidates * c, int k_ref, const struct turbo_codebook * cb);
int  ggml_turbo_first_best(const ggml_turbo_candidates * c, const float * err);

// X(name, n values, stage, n stage values): each plain type, and its _qjl variant whose
// stage 1 is one bit below it (the kernels' instances)
#define GGML_TURBO_VEC_DOT_TYPES(X) X(turbo4, 16, turbo3, 8) X(turbo3, 8, turbo2, 4) X(turbo2, 4, turbo1, 2)

#ifdef __cplusplus
}
#endif
