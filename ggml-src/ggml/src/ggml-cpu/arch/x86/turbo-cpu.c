// tqllama: CPU kernels of the turbo KV-cache types on x86 (AVX2); the generic code and
// the trait glue are ../../turbo-cpu.c.
//
// Every kernel first turns one 32-value sub-block into its 32 int8 codebook values (a table
// lookup, pshufb, like iq4_nl), then the dot product with a q8_0 block or the fused V
// accumulation works on those; the quantizer's two inner loops run the 9 scale candidates as
// SIMD lanes. Without AVX2 this file is empty and the generic code serves
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

#if defined(__AVX2__)

#include <immintrin.h>

// ---------------------------------------------------------------------------------------
// quantization: FORMAT.md steps 3 and 6 for from_float (the rest of the rule is the
// reference's). Every candidate is a SIMD lane and an index is a count of compares, so
// nothing branches on data, and each lane does exactly the reference's float operations in
// the reference's order (this file is compiled with -ffp-contract=off, so no multiply-add is
// fused): the same bytes.

// the thresholds of a codebook, each in a vector
static void turbo_thresh_avx2(const turbo_codebook * cb, __m256 * thresh) {
    for (int t = 0; t < cb->n - 1; ++t) {
        thresh[t] = _mm256_set1_ps(cb->thresh[t]);
    }
}

// #{t : y > thresh[t]} in each lane, as int32
static inline __m256i turbo_count_gt(__m256 y, const __m256 * thresh, int n_thresh) {
    __m256i idx = _mm256_setzero_si256();
    for (int t = 0; t < n_thresh; ++t) {
        // a true compare is all ones: -1 as an int
        idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(y, thresh[t], _CMP_GT_OQ)));
    }
    return idx;
}

// (float) values[idx] from the codebook's four 8-entry tables v: picked by bit 3 (moved to
// the sign, which blendv reads) and, for turbo5's 32 entries (wide), by bit 4
static inline __m256 turbo_lookup(__m256i idx, const __m256 * v, const bool wide) {
    const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v[0], idx), _mm256_permutevar8x32_ps(v[1], idx), b3);
    if (!wide) {
        return lo;
    }
    const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(v[2], idx), _mm256_permutevar8x32_ps(v[3], idx), b3);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));
}

// the candidates 8 per vector
static inline int turbo_best_code_avx2(const float * xs, int k_ref, const turbo_codebook * cb, const bool wide) {
    ggml_turbo_candidates c;
    ggml_turbo_candidates_init(&c, k_ref, cb);
    __m256 thresh[31];
    turbo_thresh_avx2(cb, thresh);

    const int    nv   = c.n_cand > 8 ? 2 : 1;
    const __m256 v[4] = { _mm256_loadu_ps(c.values),      _mm256_loadu_ps(c.values + 8),
                          _mm256_loadu_ps(c.values + 16), _mm256_loadu_ps(c.values + 24) };
    const __m256 d0 = _mm256_loadu_ps(c.d),   d1 = _mm256_loadu_ps(c.d + 8);
    const __m256 i0 = _mm256_loadu_ps(c.inv), i1 = _mm256_loadu_ps(c.inv + 8);
    __m256 e0 = _mm256_setzero_ps();
    __m256 e1 = _mm256_setzero_ps();
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const __m256 x = _mm256_set1_ps(xs[i]);
        {
            const __m256 q = turbo_lookup(turbo_count_gt(_mm256_mul_ps(x, i0), thresh, cb->n - 1), v, wide);
            const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(d0, q));
            e0 = _mm256_add_ps(e0, _mm256_mul_ps(r, r));
        }
        if (nv == 2) {
            const __m256 q = turbo_lookup(turbo_count_gt(_mm256_mul_ps(x, i1), thresh, cb->n - 1), v, wide);
            const __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(d1, q));
            e1 = _mm256_add_ps(e1, _mm256_mul_ps(r, r));
        }
    }

    float err[16];
    _mm256_storeu_ps(err, e0);
    _mm256_storeu_ps(err + 8, e1);
    return ggml_turbo_first_best(&c, err);
}

int ggml_turbo_best_code(const float * xs, int k_ref, const turbo_codebook * cb) {
    return cb->n > 16 ? turbo_best_code_avx2(xs, k_ref, cb, true) : turbo_best_code_avx2(xs, k_ref, cb, false);
}

void ggml_turbo_indices(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    __m256 thresh[31];
    turbo_thresh_avx2(cb, thresh);

    const __m256 vinv = _mm256_set1_ps(inv);
    for (int i = 0; i < QK_TURBO_SUB; i += 8) {
        int32_t c[8];
        _mm256_storeu_si256((__m256i *) c, turbo_count_gt(_mm256_mul_ps(_mm256_loadu_ps(xs + i), vinv), thresh, cb->n - 1));
        for (int l = 0; l < 8; ++l) {
            idx[i + l] = (uint8_t) c[l];
        }
    }
}

// ---------------------------------------------------------------------------------------
// sub-block j of a block -> its 32 codebook values, in element order; K dot products, V
// accumulation

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

// a codebook as pshufb tables: entries 0..15 in lo, 16..31 in hi (turbo5 only), zero-padded
typedef struct {
    __m256i lo, hi;
} turbo_lut;

static inline turbo_lut turbo_table(const int8_t * values, int n) {
    int8_t t[32] = {0};
    memcpy(t, values, n);
    turbo_lut lut = {
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) t)),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (t + 16))),
    };
    return lut;
}

// 16 bytes of 4-bit indices in q4_0's order -> 32 byte indices
static inline __m256i turbo_idx4(const uint8_t * qs) {
    const __m128i b  = _mm_loadu_si128((const __m128i *) qs);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(b, m4));
}

static inline __m256i turbo5_values(const block_turbo5 * x, int j, turbo_lut table) {
    const __m256i idx = turbo_idx4(x->qs + 16*j);
    return _mm256_blendv_epi8(_mm256_shuffle_epi8(table.lo, idx), _mm256_shuffle_epi8(table.hi, idx),
                              turbo_idx_bit(x->qh + 4*j, -1));
}

static inline __m256i turbo4_values(const block_turbo4 * x, int j, turbo_lut table) {
    return _mm256_shuffle_epi8(table.lo, turbo_idx4(x->qs + 16*j));
}

static inline __m256i turbo3_values(const block_turbo3 * x, int j, turbo_lut table) {
    const __m256i idx = _mm256_or_si256(turbo_idx2(x->qs + 8*j), turbo_idx_bit(x->qh + 4*j, 4));
    return _mm256_shuffle_epi8(table.lo, idx);
}

static inline __m256i turbo1_values(const block_turbo1 * x, int j, turbo_lut table) {
    return _mm256_shuffle_epi8(table.lo, turbo_idx_bit(x->qs + 4*j, 1));
}

static inline __m256i turbo2_values(const block_turbo2 * x, int j, turbo_lut table) {
    return _mm256_shuffle_epi8(table.lo, turbo_idx2(x->qs + 8*j));
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

#define TURBO_VEC_DOT_Q8_0(name, nvalues)                                                         \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_q8_0) {                                               \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name, block_q8_0);                                           \
    const turbo_lut table = turbo_table(kvalues_##name, nvalues);                                 \
    __m256 acc0 = _mm256_setzero_ps();                                                            \
    __m256 acc1 = _mm256_setzero_ps();                                                            \
    for (int ib = 0; ib < n/QK_TURBO; ++ib) {                                                     \
        const __m256i p0 = turbo_dot_i8(name##_values(x + ib, 0, table), _mm256_loadu_si256((const __m256i *) y[2*ib + 0].qs)); \
        const __m256i p1 = turbo_dot_i8(name##_values(x + ib, 1, table), _mm256_loadu_si256((const __m256i *) y[2*ib + 1].qs)); \
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(turbo_scale(x[ib].s, 0)*GGML_CPU_FP16_TO_FP32(y[2*ib + 0].d)), _mm256_cvtepi32_ps(p0), acc0); \
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(turbo_scale(x[ib].s, 1)*GGML_CPU_FP16_TO_FP32(y[2*ib + 1].d)), _mm256_cvtepi32_ps(p1), acc1); \
    }                                                                                             \
    *s = turbo_hsum(_mm256_add_ps(acc0, acc1));                                                   \
}

#define TURBO_VEC_DOT_QJL(name, stage, nstage)                                                   \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_qjl_q) {                                              \
    GGML_TURBO_VEC_DOT_BEGIN(block_##name##_qjl, block_turbo_qjl_q);                              \
    const turbo_lut table = turbo_table(kvalues_##stage, nstage);                                 \
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
}

#define TURBO_VEC_MAD(name, nvalues)                                                              \
GGML_TURBO_VEC_MAD_FN(ggml_vec_mad_##name) {                                                      \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                             \
    const turbo_lut table = turbo_table(kvalues_##name, nvalues);                                 \
    for (int ib = 0; ib < n/QK_TURBO; ++ib, y += QK_TURBO) {                                      \
        for (int j = 0; j < 2; ++j) {                                                             \
            const float d = turbo_scale(x[ib].s, j);                                              \
            if (d != 0.0f) {                                                                      \
                turbo_mad32(y + QK_TURBO_SUB*j, name##_values(x + ib, j, table), v*d);            \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

#define TURBO_VEC_DOT(name, nvalues, stage, nstage)                                               \
    TURBO_VEC_DOT_Q8_0(name, nvalues)                                                             \
    TURBO_VEC_DOT_QJL(name, stage, nstage)                                                        \
    TURBO_VEC_MAD(name, nvalues)

GGML_TURBO_VEC_DOT_TYPES(TURBO_VEC_DOT)
TURBO_VEC_DOT_Q8_0(turbo5, 32)
TURBO_VEC_MAD(turbo5, 32)

#endif // defined(__AVX2__)
