// tqllama: CPU kernels of the turbo KV-cache types: the generic code.
//
// Split as upstream splits a quant type (quants.c): this file holds the scalar versions
// (*_generic) and the trait glue; arch/x86/turbo-cpu.c (AVX2) and arch/arm/turbo-cpu.c (NEON)
// hold the SIMD ones, and turbo-arch-fallback.h gives the generic versions the public names
// where none is compiled. The kernels are: the quantizer's two inner loops (from_float: every
// token's K and V rows go through it), K dot products against a q8_0 query (a _qjl key's
// against its turbo_qjl_q query), and flash attention's V accumulation straight from the
// codes.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "quants.h"
#include "ggml-turbo-quants.h"
#include "turbo-cpu.h"
#include "trellis-cpu.h"
#include "turbo-arch-fallback.h"

#include <assert.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// quantization: the rule of the reference (ggml-turbo-quants.c) with this backend's inner
// loops. The scalar ones search the nearest codebook entry with data-dependent branches,
// nine scale candidates per value: most of their time is mispredicted branches, which the
// SIMD versions avoid; all give the same bytes.

int ggml_turbo_best_code_generic(const float * xs, int k_ref, const struct turbo_codebook * cb) {
    return turbo_best_code(xs, k_ref, cb->values, cb->thresh, cb->n, cb->lo, cb->hi);
}

void ggml_turbo_indices_generic(const float * xs, float inv, const struct turbo_codebook * cb, uint8_t * idx) {
    turbo_indices(xs, inv, cb->thresh, cb->n, idx);
}

static const turbo_search turbo_search_cpu = { ggml_turbo_best_code, ggml_turbo_indices };

#define TURBO_FROM_FLOAT(name)                                                                    \
void quantize_row_##name(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {      \
    quantize_row_##name##_with(x, y, k, &turbo_search_cpu);                                       \
}

TURBO_FROM_FLOAT(turbo2)
TURBO_FROM_FLOAT(turbo3)
TURBO_FROM_FLOAT(turbo4)
TURBO_FROM_FLOAT(turbo5)
TURBO_FROM_FLOAT(turbo2_qjl)
TURBO_FROM_FLOAT(turbo3_qjl)
TURBO_FROM_FLOAT(turbo4_qjl)

// for the SIMD searches of arch/*/turbo-cpu.c (turbo-cpu.h)
void ggml_turbo_candidates_init(ggml_turbo_candidates * c, int k_ref, const struct turbo_codebook * cb) {
    c->n_cand = cb->hi - cb->lo + 1;
    assert(c->n_cand <= 16);
    assert(cb->n <= 32);
    for (int i = 0; i < 16; ++i) {
        c->kc[i]  = turbo_clamp_k(k_ref + cb->lo + (i < c->n_cand ? i : c->n_cand - 1));
        c->d[i]   = turbo_k_to_d(c->kc[i]);
        c->inv[i] = 1.0f/c->d[i];
    }
    for (int i = 0; i < 32; ++i) {
        c->values[i] = i < cb->n ? (float) cb->values[i] : 0.0f;
    }
}

int ggml_turbo_first_best(const ggml_turbo_candidates * c, const float * err) {
    int best = 0;
    for (int i = 1; i < c->n_cand; ++i) {
        if (err[i] < err[best]) {
            best = i;
        }
    }
    return c->kc[best];
}

static_assert(sizeof(((block_turbo_qjl_q *) 0)->q) == 2*sizeof(block_q8_0), "turbo_qjl_q must hold two q8_0 blocks");

// The query of a turbo_qjl dot product, once per query row: q8_0 by the CPU backend's own
// quantizer (the query the plain turbo types read) and S q. The transforms are scalar:
// one pair per block of a query, against one dot product per block of every key it meets.
void quantize_row_turbo_qjl_q(const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t k) {
    assert(k % QK_TURBO == 0);
    block_turbo_qjl_q * GGML_RESTRICT y = vy;
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, x += QK_TURBO) {
        quantize_row_q8_0(x, y[ib].q, QK_TURBO);
        float p[QK_TURBO];
        memcpy(p, x, sizeof(p));
        turbo_qjl_project(p);
        for (int i = 0; i < QK_TURBO; ++i) {
            y[ib].p[i] = GGML_CPU_FP32_TO_FP16(p[i]*(1.0f/QK_TURBO)); // P(q)/64 = S q, exact scaling
        }
    }
}

// ---------------------------------------------------------------------------------------
// sub-block j of a block -> its 32 codebook values, in element order; K dot products, V
// accumulation

#define TURBO_VALUES(B)                                                                           \
static inline void turbo##B##_values(const block_turbo##B * x, int j, int8_t * out) {             \
    for (int i = 0; i < QK_TURBO_SUB; ++i) {                                                      \
        out[i] = kvalues_turbo##B[turbo##B##_index(x, QK_TURBO_SUB*j + i)];                       \
    }                                                                                             \
}
TURBO_VALUES(1)
TURBO_VALUES(2)
TURBO_VALUES(3)
TURBO_VALUES(4)
TURBO_VALUES(5)

#define TURBO_VEC_DOT_Q8_0(fn, name)                                                              \
GGML_TURBO_VEC_DOT_FN(fn) {                                                                       \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name, block_q8_0);                                           \
    float sumf = 0.0f;                                                                            \
    int8_t w[QK_TURBO_SUB];                                                                       \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            name##_values(x + ib, j, w);                                                          \
            const int8_t * q = y[2*ib + j].qs;                                                    \
            int sumi = 0;                                                                         \
            for (int i = 0; i < QK_TURBO_SUB; ++i) {                                              \
                sumi += w[i]*q[i];                                                                \
            }                                                                                     \
            sumf += turbo_scale(x[ib].s, j)*GGML_CPU_FP16_TO_FP32(y[2*ib + j].d)*(float) sumi;    \
        }                                                                                         \
    }                                                                                             \
    *s = sumf;                                                                                    \
}

#define TURBO_VEC_DOT_QJL(name, stage)                                                            \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_qjl_q_generic) {                                      \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name##_qjl, block_turbo_qjl_q);                              \
    float sumf = 0.0f;                                                                            \
    int8_t w[QK_TURBO_SUB];                                                                       \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const block_##stage * m = &x[ib].mse;                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            stage##_values(m, j, w);                                                              \
            const int8_t * q = y[ib].q[j].qs;                                                     \
            int sumi = 0;                                                                         \
            for (int i = 0; i < QK_TURBO_SUB; ++i) {                                              \
                sumi += w[i]*q[i];                                                                \
            }                                                                                     \
            sumf += turbo_scale(m->s, j)*GGML_CPU_FP16_TO_FP32(y[ib].q[j].d)*(float) sumi;          \
        }                                                                                         \
        float sr = 0.0f;                                                                          \
        for (int i = 0; i < QK_TURBO; ++i) {                                                      \
            const float p = GGML_CPU_FP16_TO_FP32(y[ib].p[i]);                                    \
            sr += (x[ib].qr[i >> 3] >> (i & 7)) & 1 ? -p : p;                                     \
        }                                                                                         \
        sumf += GGML_CPU_FP16_TO_FP32(x[ib].rn)*TURBO_QJL_SCALE_SQ*sr;                            \
    }                                                                                             \
    *s = sumf;                                                                                    \
}

#define TURBO_VEC_MAD(fn, name)                                                                   \
GGML_TURBO_VEC_MAD_FN(fn) {                                                                       \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                             \
    int8_t w[QK_TURBO_SUB];                                                                       \
    for (int ib = 0; ib < n/QK_TURBO; ++ib, y += QK_TURBO) {                                      \
        for (int j = 0; j < 2; ++j) {                                                             \
            const float vd = v*turbo_scale(x[ib].s, j);                                           \
            name##_values(x + ib, j, w);                                                          \
            for (int i = 0; i < QK_TURBO_SUB; ++i) {                                              \
                y[QK_TURBO_SUB*j + i] += vd*(float) w[i];                                         \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

#define TURBO_VEC_DOT(name, nvalues, stage, nstage)                                               \
    TURBO_VEC_DOT_Q8_0(ggml_vec_dot_##name##_q8_0_generic, name)                                  \
    TURBO_VEC_DOT_QJL(name, stage)                                                                \
    TURBO_VEC_MAD(ggml_vec_mad_##name##_generic, name)

GGML_TURBO_VEC_DOT_TYPES(TURBO_VEC_DOT)

TURBO_VEC_DOT_Q8_0(ggml_vec_dot_turbo5_q8_0_generic, turbo5)
TURBO_VEC_MAD(ggml_vec_mad_turbo5_generic, turbo5)

ggml_turbo_vec_mad_t ggml_turbo_get_vec_mad(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2: return ggml_vec_mad_turbo2;
        case GGML_TYPE_TURBO3: return ggml_vec_mad_turbo3;
        case GGML_TYPE_TURBO4: return ggml_vec_mad_turbo4;
        case GGML_TYPE_TURBO5: return ggml_vec_mad_turbo5;
        case GGML_TYPE_TURBO2T: return ggml_vec_mad_turbo2t;
        case GGML_TYPE_TURBO3T: return ggml_vec_mad_turbo3t;
        default:               return NULL;
    }
}
