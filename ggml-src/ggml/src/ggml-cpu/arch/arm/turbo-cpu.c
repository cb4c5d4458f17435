// tqllama: CPU kernels of the turbo KV-cache types on ARM (NEON, AArch64); the generic code and
// the trait glue are ../../turbo-cpu.c.
//
// Every kernel first turns one 32-value sub-block into its 32 int8 codebook values (a table
// lookup, tbl, like iq4_nl), then the dot product with a q8_0 block or the fused V
// accumulation works on those; the quantizer's two inner loops run the 9 scale candidates as
// SIMD lanes. Without NEON on AArch64 this file is empty and the generic code serves
// (../../turbo-arch-fallback.h).

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-turbo-quants.h"

#include "../../quants.h"
#include "../../turbo-cpu.h"

#include <assert.h>
#include <string.h>

#if defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

// ---------------------------------------------------------------------------------------
// quantization: FORMAT.md steps 3 and 6 for from_float (the rest of the rule is the
// reference's). Every candidate is a SIMD lane and an index is a count of compares, so
// nothing branches on data, and each lane does exactly the reference's float operations in
// the reference's order (this file is compiled with -ffp-contract=off, so no multiply-add is
// fused): the same bytes.

// #{t : y > thresh[t]} in each lane
static inline uint32x4_t turbo_count_gt(float32x4_t y, const float32x4_t * thresh, int n_thresh) {
    uint32x4_t idx = vdupq_n_u32(0);
    for (int t = 0; t < n_thresh; ++t) {
        idx = vsubq_u32(idx, vcgtq_f32(y, thresh[t])); // a true compare is all ones: -1
    }
    return idx;
}

// (float) values[idx]: a byte table lookup of the 4 bytes of each float, entries 0..15 in
// values[0]; for turbo5's 32 entries (wide) 16..31 in values[1], looked up 64 bytes lower
// (tbl gives 0 for a byte index past its table, so exactly one of the two lookups hits)
static inline float32x4_t turbo_lookup(uint32x4_t idx, const uint8x16x4_t * values, const bool wide) {
    const uint8x16_t bytes = vreinterpretq_u8_u32(vaddq_u32(vmulq_n_u32(idx, 0x04040404u), vdupq_n_u32(0x03020100u)));
    uint8x16_t r = vqtbl4q_u8(values[0], bytes);
    if (wide) {
        r = vorrq_u8(r, vqtbl4q_u8(values[1], vsubq_u8(bytes, vdupq_n_u8(64))));
    }
    return vreinterpretq_f32_u8(r);
}

// the thresholds of a codebook, each in a vector
static void turbo_thresh_neon(const turbo_codebook * cb, float32x4_t * thresh) {
    for (int t = 0; t < cb->n - 1; ++t) {
        thresh[t] = vdupq_n_f32(cb->thresh[t]);
    }
}

// the candidates 4 per vector
static inline int turbo_best_code_neon(const float * xs, int k_ref, const turbo_codebook * cb, const bool wide) {
    ggml_turbo_candidates c;
    ggml_turbo_candidates_init(&c, k_ref, cb);
    float32x4_t thresh[31];
    turbo_thresh_neon(cb, thresh);

    const int          nv        = (c.n_cand + 3)/4;
    const uint8x16x4_t values[2] = { vld1q_u8_x4((const uint8_t *) c.values), vld1q_u8_x4((const uint8_t *) (c.values + 16)) };
    float32x4_t vd[4], vinv[4], e[4];
    for (int v = 0; v < 4; ++v) {
        vd[v]   = vld1q_f32(c.d + 4*v);
        vinv[v] = vld1q_f32(c.inv + 4*v);
        e[v]    = vdupq_n_f32(0.0f);
    }
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float32x4_t x = vdupq_n_f32(xs[i]);
        for (int v = 0; v < nv; ++v) {
            const float32x4_t q = turbo_lookup(turbo_count_gt(vmulq_f32(x, vinv[v]), thresh, cb->n - 1), values, wide);
            const float32x4_t r = vsubq_f32(x, vmulq_f32(vd[v], q));
            e[v] = vaddq_f32(e[v], vmulq_f32(r, r));
        }
    }

    float err[16];
    for (int v = 0; v < 4; ++v) {
        vst1q_f32(err + 4*v, e[v]);
    }
    return ggml_turbo_first_best(&c, err);
}

int ggml_turbo_best_code(const float * xs, int k_ref, const turbo_codebook * cb) {
    return cb->n > 16 ? turbo_best_code_neon(xs, k_ref, cb, true) : turbo_best_code_neon(xs, k_ref, cb, false);
}

void ggml_turbo_indices(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    float32x4_t thresh[31];
    turbo_thresh_neon(cb, thresh);

    const float32x4_t vinv = vdupq_n_f32(inv);
    for (int i = 0; i < QK_TURBO_SUB; i += 4) {
        uint32_t c[4];
        vst1q_u32(c, turbo_count_gt(vmulq_f32(vld1q_f32(xs + i), vinv), thresh, cb->n - 1));
        for (int l = 0; l < 4; ++l) {
            idx[i + l] = (uint8_t) c[l];
        }
    }
}

// ---------------------------------------------------------------------------------------
// sub-block j of a block -> its 32 codebook values, in element order; K dot products, V
// accumulation

// a codebook as a byte table: entries 0..15 in val[0], 16..31 in val[1] (turbo5 only), zero-padded
typedef int8x16x2_t turbo_lut;

// a sub-block's 32 codebook values as two registers of 16, in element order
static inline int8x16x2_t turbo4_values(const block_turbo4 * x, int j, turbo_lut table) {
    const uint8x16_t b = vld1q_u8(x->qs + 16*j);
    const int8x16x2_t v = { { vqtbl1q_s8(table.val[0], vandq_u8(b, vdupq_n_u8(0x0f))), vqtbl1q_s8(table.val[0], vshrq_n_u8(b, 4)) } };
    return v;
}

// 8 bytes of 2-bit indices (byte l holds elements l, l+8, l+16, l+24) -> 2 x 16 indices
static inline uint8x16x2_t turbo_idx2(const uint8_t * qs) {
    const uint8x8_t w = vld1_u8(qs);
    const uint8x8_t m = vdup_n_u8(3);
    const uint8x16x2_t idx = { {
        vcombine_u8(vand_u8(w, m), vand_u8(vshr_n_u8(w, 2), m)),
        vcombine_u8(vand_u8(vshr_n_u8(w, 4), m), vshr_n_u8(w, 6)),
    } };
    return idx;
}

static inline int8x16x2_t turbo2_values(const block_turbo2 * x, int j, turbo_lut table) {
    const uint8x16x2_t idx = turbo_idx2(x->qs + 8*j);
    const int8x16x2_t v = { { vqtbl1q_s8(table.val[0], idx.val[0]), vqtbl1q_s8(table.val[0], idx.val[1]) } };
    return v;
}

// bits 16h .. 16h+15 of a 32-bit word -> 16 bytes, one where the bit is set, else 0 (one: 4
// for the high bit of a 3-bit index, 16 for that of a 5-bit one, 1 for a 1-bit index)
static inline uint8x16_t turbo_idx_bit(const uint8_t * qh, int h, uint8_t one) {
    // lane i tests bit i%8 of byte 2h + i/8
    const uint8x16_t bit = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[2*h]), vdup_n_u8(qh[2*h + 1]));
    return vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(one));
}

static inline int8x16x2_t turbo3_values(const block_turbo3 * x, int j, turbo_lut table) {
    uint8x16x2_t idx = turbo_idx2(x->qs + 8*j);
    for (int h = 0; h < 2; ++h) {
        idx.val[h] = vorrq_u8(idx.val[h], turbo_idx_bit(x->qh + 4*j, h, 4));
    }
    const int8x16x2_t v = { { vqtbl1q_s8(table.val[0], idx.val[0]), vqtbl1q_s8(table.val[0], idx.val[1]) } };
    return v;
}

// turbo4's low four bits, turbo3's high bit as bit 4, looked up in all 32 entries at once
static inline int8x16x2_t turbo5_values(const block_turbo5 * x, int j, turbo_lut table) {
    const uint8x16_t b  = vld1q_u8(x->qs + 16*j);
    const uint8x16_t i0 = vorrq_u8(vandq_u8(b, vdupq_n_u8(0x0f)), turbo_idx_bit(x->qh + 4*j, 0, 16));
    const uint8x16_t i1 = vorrq_u8(vshrq_n_u8(b, 4),              turbo_idx_bit(x->qh + 4*j, 1, 16));
    const int8x16x2_t v = { { vqtbl2q_s8(table, i0), vqtbl2q_s8(table, i1) } };
    return v;
}

static inline int8x16x2_t turbo1_values(const block_turbo1 * x, int j, turbo_lut table) {
    const int8x16x2_t v = { { vqtbl1q_s8(table.val[0], turbo_idx_bit(x->qs + 4*j, 0, 1)),
                              vqtbl1q_s8(table.val[0], turbo_idx_bit(x->qs + 4*j, 1, 1)) } };
    return v;
}

// sum_i (1 - 2 bit_i) p_i over a block's 64 fp16 p, as 4 partial sums: a set bit flips
// the sign bit of its float
static inline float32x4_t turbo_signed_sum(const uint8_t * qr, const uint16_t * p) {
    const uint32x4_t lo = { 1, 2, 4, 8 };
    const uint32x4_t hi = { 16, 32, 64, 128 };
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (int g = 0; g < QK_TURBO/8; ++g) {
        const uint32x4_t b  = vdupq_n_u32(qr[g]);
        const float32x4_t v0 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 8*g)));
        const float32x4_t v1 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 8*g + 4)));
        sum = vaddq_f32(sum, vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v0), vshlq_n_u32(vtstq_u32(b, lo), 31))));
        sum = vaddq_f32(sum, vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v1), vshlq_n_u32(vtstq_u32(b, hi), 31))));
    }
    return sum;
}

static inline turbo_lut turbo_table(const int8_t * values, int n) {
    int8_t t[32] = {0};
    memcpy(t, values, n);
    const turbo_lut lut = { { vld1q_s8(t), vld1q_s8(t + 16) } };
    return lut;
}

static inline int32x4_t turbo_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t p0 = vmull_s8(vget_low_s8(a),  vget_low_s8(b));
    const int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vaddq_s32(acc, vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)));
#endif
}

// y[0..16) += v * values (16 int8)
static inline void turbo_mad16(float * GGML_RESTRICT y, int8x16_t values, float32x4_t vv) {
    const int16x8_t w[2] = { vmovl_s8(vget_low_s8(values)), vmovl_s8(vget_high_s8(values)) };
    for (int h = 0; h < 2; ++h) {
        const float32x4_t f0 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w[h])));
        const float32x4_t f1 = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w[h])));
        vst1q_f32(y + 8*h,     vfmaq_f32(vld1q_f32(y + 8*h),     f0, vv));
        vst1q_f32(y + 8*h + 4, vfmaq_f32(vld1q_f32(y + 8*h + 4), f1, vv));
    }
}

#define TURBO_VEC_DOT_Q8_0(name, nvalues)                                                         \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_q8_0) {                                               \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name, block_q8_0);                                           \
    const turbo_lut table = turbo_table(kvalues_##name, nvalues);                                 \
    float32x4_t acc = vdupq_n_f32(0.0f);                                                          \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            const int8x16x2_t w = name##_values(x + ib, j, table);                                \
            const int8_t * q = y[2*ib + j].qs;                                                    \
            const int32x4_t p = turbo_dot16(turbo_dot16(vdupq_n_s32(0), w.val[0], vld1q_s8(q)), w.val[1], vld1q_s8(q + 16)); \
            acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), turbo_scale(x[ib].s, j)*GGML_CPU_FP16_TO_FP32(y[2*ib + j].d)); \
        }                                                                                         \
    }                                                                                             \
    *s = vaddvq_f32(acc);                                                                         \
}

#define TURBO_VEC_DOT_QJL(name, stage, nstage)                                                    \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_qjl_q) {                                              \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name##_qjl, block_turbo_qjl_q);                              \
    const turbo_lut table = turbo_table(kvalues_##stage, nstage);                                 \
    float32x4_t acc = vdupq_n_f32(0.0f);                                                          \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const block_##stage * m = &x[ib].mse;                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            const int8x16x2_t w = stage##_values(m, j, table);                                    \
            const int8_t * q = y[ib].q[j].qs;                                         \
            const int32x4_t p = turbo_dot16(turbo_dot16(vdupq_n_s32(0), w.val[0], vld1q_s8(q)), w.val[1], vld1q_s8(q + 16)); \
            acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), turbo_scale(m->s, j)*GGML_CPU_FP16_TO_FP32(y[ib].q[j].d)); \
        }                                                                                         \
        acc = vmlaq_n_f32(acc, turbo_signed_sum(x[ib].qr, y[ib].p), GGML_CPU_FP16_TO_FP32(x[ib].rn)*TURBO_QJL_SCALE_SQ); \
    }                                                                                             \
    *s = vaddvq_f32(acc);                                                                         \
}

#define TURBO_VEC_MAD(name, nvalues)                                                              \
GGML_TURBO_VEC_MAD_FN(ggml_vec_mad_##name) {                                                      \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                             \
    const turbo_lut table = turbo_table(kvalues_##name, nvalues);                                 \
    for (int ib = 0; ib < n/QK_TURBO; ++ib, y += QK_TURBO) {                                      \
        for (int j = 0; j < 2; ++j) {                                                             \
            const float d = turbo_scale(x[ib].s, j);                                              \
            if (d != 0.0f) {                                                                      \
                const int8x16x2_t w = name##_values(x + ib, j, table);                            \
                const float32x4_t vv = vdupq_n_f32(v*d);                                          \
                turbo_mad16(y + QK_TURBO_SUB*j,      w.val[0], vv);                               \
                turbo_mad16(y + QK_TURBO_SUB*j + 16, w.val[1], vv);                               \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

// each plain type with its _qjl variant (turbo-cpu.h), and turbo5, which has none
#define TURBO_VEC_DOT(name, nvalues, stage, nstage) \
    TURBO_VEC_DOT_Q8_0(name, nvalues) TURBO_VEC_DOT_QJL(name, stage, nstage) TURBO_VEC_MAD(name, nvalues)

GGML_TURBO_VEC_DOT_TYPES(TURBO_VEC_DOT)
TURBO_VEC_DOT_Q8_0(turbo5, 32)
TURBO_VEC_MAD(turbo5, 32)

#endif // defined(__ARM_NEON) && defined(__aarch64__)
