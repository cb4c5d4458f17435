// tqllama: CPU kernels of the turbo KV-cache types.
//
// Layout as in ggml-cpu/quants.c: every kernel first turns one 32-value sub-block into its
// 32 int8 codebook values (a table lookup: pshufb on x86, tbl on ARM, like iq4_nl), then
// the dot product with a q8_0 block or the fused V accumulation works on those. One scalar
// path serves every other architecture.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "quants.h"
#include "ggml-turbo-quants.h"
#include "turbo-cpu.h"

#include <assert.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// quantization (from_float: every token's K and V rows go through it)
//
// The rule is the reference's (ggml-turbo-quants.c); only its two inner loops differ. The
// scalar loops search the nearest codebook entry with data-dependent branches, nine scale
// candidates per value: most of their time is mispredicted branches. Here every candidate
// is a SIMD lane and an index is a count of compares, so nothing branches on data, and each
// lane does exactly the reference's float operations in the reference's order (this file
// is compiled with -ffp-contract=off, so no multiply-add is fused): the same bytes.

#if defined(__AVX2__) || (defined(__ARM_NEON) && defined(__aarch64__))

// Both SIMD searches: up to 16 scale candidates (kc, d, 1/d), padding slots repeating the
// last one, which can never win since the first of equal errors wins; returns their count
static int turbo_candidates(int k_ref, const turbo_codebook * cb, int * kc, float * d, float * inv) {
    const int n_cand = cb->hi - cb->lo + 1;
    assert(n_cand <= 16);
    for (int c = 0; c < 16; ++c) {
        kc[c]  = turbo_clamp_k(k_ref + cb->lo + (c < n_cand ? c : n_cand - 1));
        d[c]   = turbo_k_to_d(kc[c]);
        inv[c] = 1.0f/d[c];
    }
    return n_cand;
}

// the code of the first candidate with the smallest error, as the reference picks it
static int turbo_first_best(const float * err, const int * kc, int n_cand) {
    int best = 0;
    for (int c = 1; c < n_cand; ++c) {
        if (err[c] < err[best]) {
            best = c;
        }
    }
    return kc[best];
}

// the codebook as 16 floats, zero-padded
static void turbo_values_f32(const turbo_codebook * cb, float * v) {
    for (int i = 0; i < 16; ++i) {
        v[i] = i < cb->n ? (float) cb->values[i] : 0.0f;
    }
}

#endif

#if defined(__AVX2__)

#include <immintrin.h>

// #{t : y > thresh[t]} in each lane, as int32
static inline __m256i turbo_count_gt(__m256 y, const __m256 * thresh, int n_thresh) {
    __m256i idx = _mm256_setzero_si256();
    for (int t = 0; t < n_thresh; ++t) {
        // a true compare is all ones: -1 as an int
        idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(y, thresh[t], _CMP_GT_OQ)));
    }
    return idx;
}

// (float) values[idx] for idx in 0..15: two 8-entry tables, picked by bit 3
static inline __m256 turbo_lookup(__m256i idx, __m256 lo, __m256 hi) {
    const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), upper);
}

static void turbo_thresh_avx2(const turbo_codebook * cb, __m256 * thresh, __m256 * lo, __m256 * hi) {
    float v[16];
    for (int t = 0; t < cb->n - 1; ++t) {
        thresh[t] = _mm256_set1_ps(cb->thresh[t]);
    }
    turbo_values_f32(cb, v);
    *lo = _mm256_loadu_ps(v);
    *hi = _mm256_loadu_ps(v + 8);
}

// the candidates 8 per vector
static int turbo_best_code_avx2(const float * xs, int k_ref, const turbo_codebook * cb) {
    int   kc[16];
    float d[16], inv[16];
    const int n_cand = turbo_candidates(k_ref, cb, kc, d, inv);

    __m256 thresh[15], lo, hi;
    turbo_thresh_avx2(cb, thresh, &lo, &hi);

    const int    nv = n_cand > 8 ? 2 : 1;
    const __m256 d0 = _mm256_loadu_ps(d),   d1 = _mm256_loadu_ps(d + 8);
    const __m256 i0 = _mm256_loadu_ps(inv), i1 = _mm256_loadu_ps(inv + 8);
    __m256 e0 = _mm256_setzero_ps();
    __m256 e1 = _mm256_setzero_ps();
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const __m256 x = _mm256_set1_ps(xs[i]);
        {
            const __m256 q = turbo_lookup(turbo_count_gt(_mm256_mul_ps(x, i0), thresh, cb->n - 1), lo, hi);
            const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(d0, q));
            e0 = _mm256_add_ps(e0, _mm256_mul_ps(r, r));
        }
        if (nv == 2) {
            const __m256 q = turbo_lookup(turbo_count_gt(_mm256_mul_ps(x, i1), thresh, cb->n - 1), lo, hi);
            const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(d1, q));
            e1 = _mm256_add_ps(e1, _mm256_mul_ps(r, r));
        }
    }

    float err[16];
    _mm256_storeu_ps(err, e0);
    _mm256_storeu_ps(err + 8, e1);
    return turbo_first_best(err, kc, n_cand);
}

static void turbo_indices_avx2(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    __m256 thresh[15], lo, hi;
    turbo_thresh_avx2(cb, thresh, &lo, &hi);

    const __m256 vinv = _mm256_set1_ps(inv);
    for (int i = 0; i < QK_TURBO_SUB; i += 8) {
        int32_t c[8];
        _mm256_storeu_si256((__m256i *) c, turbo_count_gt(_mm256_mul_ps(_mm256_loadu_ps(xs + i), vinv), thresh, cb->n - 1));
        for (int l = 0; l < 8; ++l) {
            idx[i + l] = (uint8_t) c[l];
        }
    }
}

static const turbo_search turbo_search_cpu = { turbo_best_code_avx2, turbo_indices_avx2 };

#elif defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

// #{t : y > thresh[t]} in each lane
static inline uint32x4_t turbo_count_gt(float32x4_t y, const float32x4_t * thresh, int n_thresh) {
    uint32x4_t idx = vdupq_n_u32(0);
    for (int t = 0; t < n_thresh; ++t) {
        idx = vsubq_u32(idx, vcgtq_f32(y, thresh[t])); // a true compare is all ones: -1
    }
    return idx;
}

// (float) values[idx] for idx in 0..15: a byte table lookup of the 4 bytes of each float
static inline float32x4_t turbo_lookup(uint32x4_t idx, uint8x16x4_t values) {
    const uint32x4_t bytes = vaddq_u32(vmulq_n_u32(idx, 0x04040404u), vdupq_n_u32(0x03020100u));
    return vreinterpretq_f32_u8(vqtbl4q_u8(values, vreinterpretq_u8_u32(bytes)));
}

static void turbo_thresh_neon(const turbo_codebook * cb, float32x4_t * thresh, uint8x16x4_t * values) {
    float v[16];
    for (int t = 0; t < cb->n - 1; ++t) {
        thresh[t] = vdupq_n_f32(cb->thresh[t]);
    }
    turbo_values_f32(cb, v);
    *values = vld1q_u8_x4((const uint8_t *) v);
}

// the candidates 4 per vector
static int turbo_best_code_neon(const float * xs, int k_ref, const turbo_codebook * cb) {
    int   kc[16];
    float d[16], inv[16];
    const int n_cand = turbo_candidates(k_ref, cb, kc, d, inv);

    float32x4_t  thresh[15];
    uint8x16x4_t values;
    turbo_thresh_neon(cb, thresh, &values);

    const int   nv = (n_cand + 3)/4;
    float32x4_t vd[4], vinv[4], e[4];
    for (int v = 0; v < 4; ++v) {
        vd[v]   = vld1q_f32(d + 4*v);
        vinv[v] = vld1q_f32(inv + 4*v);
        e[v]    = vdupq_n_f32(0.0f);
    }
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float32x4_t x = vdupq_n_f32(xs[i]);
        for (int v = 0; v < nv; ++v) {
            const float32x4_t q = turbo_lookup(turbo_count_gt(vmulq_f32(x, vinv[v]), thresh, cb->n - 1), values);
            const float32x4_t r = vsubq_f32(x, vmulq_f32(vd[v], q));
            e[v] = vaddq_f32(e[v], vmulq_f32(r, r));
        }
    }

    float err[16];
    for (int v = 0; v < 4; ++v) {
        vst1q_f32(err + 4*v, e[v]);
    }
    return turbo_first_best(err, kc, n_cand);
}

static void turbo_indices_neon(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    float32x4_t  thresh[15];
    uint8x16x4_t values;
    turbo_thresh_neon(cb, thresh, &values);

    const float32x4_t vinv = vdupq_n_f32(inv);
    for (int i = 0; i < QK_TURBO_SUB; i += 4) {
        uint32_t c[4];
        vst1q_u32(c, turbo_count_gt(vmulq_f32(vld1q_f32(xs + i), vinv), thresh, cb->n - 1));
        for (int l = 0; l < 4; ++l) {
            idx[i + l] = (uint8_t) c[l];
        }
    }
}

static const turbo_search turbo_search_cpu = { turbo_best_code_neon, turbo_indices_neon };

#endif

// from_float: the SIMD inner loops where there are some, else the reference
#if defined(__AVX2__) || (defined(__ARM_NEON) && defined(__aarch64__))
#define TURBO_FROM_FLOAT(name)                                                                    \
void quantize_row_##name(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {      \
    quantize_row_##name##_with(x, y, k, &turbo_search_cpu);                                       \
}
#else
#define TURBO_FROM_FLOAT(name)                                                                    \
void quantize_row_##name(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {      \
    quantize_row_##name##_ref(x, y, k);                                                           \
}
#endif

TURBO_FROM_FLOAT(turbo2)
TURBO_FROM_FLOAT(turbo3)
TURBO_FROM_FLOAT(turbo4)
TURBO_FROM_FLOAT(turbo2_qjl)
TURBO_FROM_FLOAT(turbo3_qjl)
TURBO_FROM_FLOAT(turbo4_qjl)

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
// sub-block j of a block -> its 32 codebook values, in element order

// a _qjl key's sign term is g * <s, P(q)> = (64 g) * <s, S q>, and the query stores S q
#define TURBO_QJL_SCALE_SQ (TURBO_QJL_SCALE*QK_TURBO)

#if defined(__AVX2__)

#include <immintrin.h>

// 8 bytes of 2-bit indices (byte l holds elements l, l+8, l+16, l+24) -> 32 byte indices.
// Shifting whole 64-bit lanes is fine: the mask keeps only bits that came from the same byte.
static inline __m256i turbo_idx2(const uint8_t * qs) {
    uint64_t w;
    memcpy(&w, qs, sizeof(w));
    const __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x((long long) w), _mm256_setr_epi64x(0, 2, 4, 6));
    return _mm256_and_si256(v, _mm256_set1_epi8(3));
}

// bit i of a 32-bit word -> byte i = one or 0 (one: 4 for the high bit of a 3-bit index,
// 1 for a 1-bit index)
static inline __m256i turbo_idx_bit(const uint8_t * qh, char one) {
    uint32_t w;
    memcpy(&w, qh, sizeof(w));
    // byte i takes byte i/8 of w; or-ing every bit but bit i%8 makes it 0xFF iff that bit is set
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int) w),
            _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi8(-1));
    return _mm256_and_si256(set, _mm256_set1_epi8(one));
}

static inline __m256i turbo_table(const int8_t * values, int n) {
    int8_t t[16] = {0};
    memcpy(t, values, n);
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) t));
}

static inline __m256i turbo4_values(const block_turbo4 * x, int j, __m256i table) {
    const __m128i b  = _mm_loadu_si128((const __m128i *) (x->qs + 16*j));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m256i idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(b, m4));
    return _mm256_shuffle_epi8(table, idx);
}

static inline __m256i turbo3_values(const block_turbo3 * x, int j, __m256i table) {
    const __m256i idx = _mm256_or_si256(turbo_idx2(x->qs + 8*j), turbo_idx_bit(x->qh + 4*j, 4));
    return _mm256_shuffle_epi8(table, idx);
}

static inline __m256i turbo1_values(const block_turbo1 * x, int j, __m256i table) {
    return _mm256_shuffle_epi8(table, turbo_idx_bit(x->qs + 4*j, 1));
}

static inline __m256i turbo2_values(const block_turbo2 * x, int j, __m256i table) {
    return _mm256_shuffle_epi8(table, turbo_idx2(x->qs + 8*j));
}

static inline float turbo_hsum(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// sum over 32 lanes of a*b as 8 int32 partial sums (a signed via the sign trick of maddubs)
static inline __m256i turbo_dot_i8(__m256i a, __m256i b) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// y[0..32) += v * values (32 int8)
static inline void turbo_mad32(float * GGML_RESTRICT y, __m256i values, float v) {
    const __m256  vv = _mm256_set1_ps(v);
    const __m128i lo = _mm256_castsi256_si128(values);
    const __m128i hi = _mm256_extracti128_si256(values, 1);
    const __m128i parts[4] = { lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8) };
    for (int g = 0; g < 4; ++g) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[g]));
        _mm256_storeu_ps(y + 8*g, _mm256_fmadd_ps(vv, f, _mm256_loadu_ps(y + 8*g)));
    }
}

// sum_i (1 - 2 bit_i) p_i over a block's 64 fp16 p, as 8 partial sums: a set bit flips
// the sign bit of its float
static inline __m256 turbo_signed_sum(const uint8_t * qr, const uint16_t * p) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256 sum = _mm256_setzero_ps();
    for (int g = 0; g < QK_TURBO/8; ++g) {
        const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(qr[g]), bit), bit);
#if defined(__F16C__)
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p + 8*g)));
#else
        float f[8];
        for (int i = 0; i < 8; ++i) {
            f[i] = GGML_CPU_FP16_TO_FP32(p[8*g + i]);
        }
        const __m256 v = _mm256_loadu_ps(f);
#endif
        sum = _mm256_add_ps(sum, _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(set, 31))));
    }
    return sum;
}

#define TURBO_VEC_DOT(name, nvalues, stage, nstage)                                               \
void ggml_vec_dot_##name##_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {   \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
    const block_q8_0   * GGML_RESTRICT y = vy;                                                    \
    const __m256i table = turbo_table(kvalues_##name, nvalues);                                   \
    __m256 acc0 = _mm256_setzero_ps();                                                            \
    __m256 acc1 = _mm256_setzero_ps();                                                            \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const __m256i p0 = turbo_dot_i8(name##_values(x + ib, 0, table), _mm256_loadu_si256((const __m256i *) y[2*ib + 0].qs)); \
        const __m256i p1 = turbo_dot_i8(name##_values(x + ib, 1, table), _mm256_loadu_si256((const __m256i *) y[2*ib + 1].qs)); \
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(turbo_scale(x[ib].s, 0)*GGML_CPU_FP16_TO_FP32(y[2*ib + 0].d)), _mm256_cvtepi32_ps(p0), acc0); \
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(turbo_scale(x[ib].s, 1)*GGML_CPU_FP16_TO_FP32(y[2*ib + 1].d)), _mm256_cvtepi32_ps(p1), acc1); \
    }                                                                                             \
    *s = turbo_hsum(_mm256_add_ps(acc0, acc1));                                                   \
}                                                                                                 \
                                                                                                  \
void ggml_vec_dot_##name##_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                 size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {  \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name##_qjl * GGML_RESTRICT x = vx;                                              \
    const block_turbo_qjl_q  * GGML_RESTRICT y = vy;                                              \
    const __m256i table = turbo_table(kvalues_##stage, nstage);                                   \
    __m256 acc = _mm256_setzero_ps();                                                             \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const block_##stage * m = &x[ib].mse;                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            const __m256i p = turbo_dot_i8(stage##_values(m, j, table), _mm256_loadu_si256((const __m256i *) (y[ib].q[j].qs))); \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(turbo_scale(m->s, j)*GGML_CPU_FP16_TO_FP32(y[ib].q[j].d)), _mm256_cvtepi32_ps(p), acc); \
        }                                                                                         \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(GGML_CPU_FP16_TO_FP32(x[ib].rn)*TURBO_QJL_SCALE_SQ), turbo_signed_sum(x[ib].qr, y[ib].p), acc); \
    }                                                                                             \
    *s = turbo_hsum(acc);                                                                         \
}                                                                                                 \
                                                                                                  \
static void name##_vec_mad(int n, float * GGML_RESTRICT y, const void * GGML_RESTRICT vx, float v) { \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
    const __m256i table = turbo_table(kvalues_##name, nvalues);                                   \
    for (int ib = 0; ib < n/QK_TURBO; ++ib, y += QK_TURBO) {                                      \
        for (int j = 0; j < 2; ++j) {                                                             \
            const float d = turbo_scale(x[ib].s, j);                                              \
            if (d != 0.0f) {                                                                      \
                turbo_mad32(y + QK_TURBO_SUB*j, name##_values(x + ib, j, table), v*d);            \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

#elif defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

// a sub-block's 32 codebook values as two registers of 16, in element order
static inline int8x16x2_t turbo4_values(const block_turbo4 * x, int j, int8x16_t table) {
    const uint8x16_t b = vld1q_u8(x->qs + 16*j);
    const int8x16x2_t v = { { vqtbl1q_s8(table, vandq_u8(b, vdupq_n_u8(0x0f))), vqtbl1q_s8(table, vshrq_n_u8(b, 4)) } };
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

static inline int8x16x2_t turbo2_values(const block_turbo2 * x, int j, int8x16_t table) {
    const uint8x16x2_t idx = turbo_idx2(x->qs + 8*j);
    const int8x16x2_t v = { { vqtbl1q_s8(table, idx.val[0]), vqtbl1q_s8(table, idx.val[1]) } };
    return v;
}

// bits 16h .. 16h+15 of a 32-bit word -> 16 bytes, one where the bit is set, else 0 (one: 4
// for the high bit of a 3-bit index, 1 for a 1-bit index)
static inline uint8x16_t turbo_idx_bit(const uint8_t * qh, int h, uint8_t one) {
    // lane i tests bit i%8 of byte 2h + i/8
    const uint8x16_t bit = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    const uint8x16_t bytes = vcombine_u8(vdup_n_u8(qh[2*h]), vdup_n_u8(qh[2*h + 1]));
    return vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(one));
}

static inline int8x16x2_t turbo3_values(const block_turbo3 * x, int j, int8x16_t table) {
    uint8x16x2_t idx = turbo_idx2(x->qs + 8*j);
    for (int h = 0; h < 2; ++h) {
        idx.val[h] = vorrq_u8(idx.val[h], turbo_idx_bit(x->qh + 4*j, h, 4));
    }
    const int8x16x2_t v = { { vqtbl1q_s8(table, idx.val[0]), vqtbl1q_s8(table, idx.val[1]) } };
    return v;
}

static inline int8x16x2_t turbo1_values(const block_turbo1 * x, int j, int8x16_t table) {
    const int8x16x2_t v = { { vqtbl1q_s8(table, turbo_idx_bit(x->qs + 4*j, 0, 1)),
                              vqtbl1q_s8(table, turbo_idx_bit(x->qs + 4*j, 1, 1)) } };
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

static inline int8x16_t turbo_table(const int8_t * values, int n) {
    int8_t t[16] = {0};
    memcpy(t, values, n);
    return vld1q_s8(t);
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

#define TURBO_VEC_DOT(name, nvalues, stage, nstage)                                               \
void ggml_vec_dot_##name##_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {   \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
    const block_q8_0   * GGML_RESTRICT y = vy;                                                    \
    const int8x16_t table = turbo_table(kvalues_##name, nvalues);                                 \
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
}                                                                                                 \
                                                                                                  \
void ggml_vec_dot_##name##_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                 size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {  \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name##_qjl * GGML_RESTRICT x = vx;                                              \
    const block_turbo_qjl_q  * GGML_RESTRICT y = vy;                                              \
    const int8x16_t table = turbo_table(kvalues_##stage, nstage);                                 \
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
}                                                                                                 \
                                                                                                  \
static void name##_vec_mad(int n, float * GGML_RESTRICT y, const void * GGML_RESTRICT vx, float v) { \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
    const int8x16_t table = turbo_table(kvalues_##name, nvalues);                                 \
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

#else // scalar

static inline void turbo4_values(const block_turbo4 * x, int j, int8_t * out) {
    const uint8_t * qs = x->qs + 16*j;
    for (int l = 0; l < 16; ++l) {
        out[l]      = kvalues_turbo4[qs[l] & 15];
        out[l + 16] = kvalues_turbo4[qs[l] >> 4];
    }
}

static inline void turbo3_values(const block_turbo3 * x, int j, int8_t * out) {
    const uint8_t * qs = x->qs + 8*j;
    const uint8_t * qh = x->qh + 4*j;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const int lo = (qs[i & 7] >> (2*(i >> 3))) & 3;
        const int hi = (qh[i >> 3] >> (i & 7)) & 1;
        out[i] = kvalues_turbo3[lo | hi << 2];
    }
}

static inline void turbo2_values(const block_turbo2 * x, int j, int8_t * out) {
    const uint8_t * qs = x->qs + 8*j;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        out[i] = kvalues_turbo2[(qs[i & 7] >> (2*(i >> 3))) & 3];
    }
}

static inline void turbo1_values(const block_turbo1 * x, int j, int8_t * out) {
    const uint8_t * qs = x->qs + 4*j;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        out[i] = kvalues_turbo1[(qs[i >> 3] >> (i & 7)) & 1];
    }
}

#define TURBO_VEC_DOT(name, nvalues, stage, nstage)                                               \
void ggml_vec_dot_##name##_q8_0(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {   \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
    const block_q8_0   * GGML_RESTRICT y = vy;                                                    \
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
}                                                                                                 \
                                                                                                  \
void ggml_vec_dot_##name##_qjl_q(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                 size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {  \
    assert(nrc == 1 && n % QK_TURBO == 0);                                                        \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    const block_##name##_qjl * GGML_RESTRICT x = vx;                                              \
    const block_turbo_qjl_q  * GGML_RESTRICT y = vy;                                              \
    float sumf = 0.0f;                                                                            \
    int8_t w[QK_TURBO_SUB];                                                                       \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const block_##stage * m = &x[ib].mse;                                                     \
        for (int j = 0; j < 2; ++j) {                                                             \
            stage##_values(m, j, w);                                                              \
            const int8_t * q = y[ib].q[j].qs;                                         \
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
}                                                                                                 \
                                                                                                  \
static void name##_vec_mad(int n, float * GGML_RESTRICT y, const void * GGML_RESTRICT vx, float v) { \
    const block_##name * GGML_RESTRICT x = vx;                                                    \
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

#endif

// each plain type, and its _qjl variant whose stage 1 is one bit below it
TURBO_VEC_DOT(turbo4, 16, turbo3, 8)
TURBO_VEC_DOT(turbo3, 8, turbo2, 4)
TURBO_VEC_DOT(turbo2, 4, turbo1, 2)

ggml_turbo_vec_mad_t ggml_turbo_get_vec_mad(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2: return turbo2_vec_mad;
        case GGML_TYPE_TURBO3: return turbo3_vec_mad;
        case GGML_TYPE_TURBO4: return turbo4_vec_mad;
        default:               return NULL;
    }
}
