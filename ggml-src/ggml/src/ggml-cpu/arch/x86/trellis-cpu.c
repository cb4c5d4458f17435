// tqllama: CPU kernels of the trellis-coded turbo types on x86 (AVX2); the generic code and
// the trait glue are ../../trellis-cpu.c.
//
// The Viterbi search of the quantizer (3 runs per block, on every K and V row written: the
// trellis's price) keeps the states in a lane layout where each step is vertical SIMD: the
// minimum over a node's K predecessors is a min of whole vectors, and each new metric takes
// its node's best as one broadcast load, so a step needs no shuffles (turbo2t: 8 unpacks).
// It keeps only each step's minima per node, not the choices: the trace back recomputes the
// K candidates of the one node it visits per step and takes the first that equals the node's
// minimum, the reference's choice. Every float value is the reference's: the same
// subtraction, square and sum per state (this file is compiled with -ffp-contract=off, so
// none is fused), and a minimum, exact in any order.
//
// The K dot products and the V accumulation decode 32 values at a time: the 16-bit windows
// of their states (pshufb from two in-block 16-byte loads), shifted by a multiply, then the
// 256-entry table by 16 pshufb; the integer sums are exact and the float sums are the
// generic code's, in its order. Without AVX2 this file is empty and the generic code
// serves (../../turbo-arch-fallback.h).

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-trellis-quants.h"

#include "../../trellis-cpu.h"

#include <assert.h>
#include <string.h>

#if defined(__AVX2__)

#include <immintrin.h>

// ---------------------------------------------------------------------------------------
// the Viterbi search (FORMAT-TRELLIS.md step 4) for (k, L) = (2, 8) and (3, 9): 64 nodes
//
// Step t computes, for each state s, D_t[s] = best_t[s & 63] + (x_t - dc[s])^2, where
// best_t[m] = min_a D_{t-1}[m K + a] (best_0 = 0: 0 + e^2 is e^2 exactly). hist[t] holds
// best_t, node m at pos[m]; the final D is kept whole for the last state.

#define TRELLIS_NODES 64

#define TRELLIS_X8(f, m)  f(m), f(m + 1), f(m + 2), f(m + 3), f(m + 4), f(m + 5), f(m + 6), f(m + 7)
#define TRELLIS_X64(f)    TRELLIS_X8(f, 0),  TRELLIS_X8(f, 8),  TRELLIS_X8(f, 16), TRELLIS_X8(f, 24), \
                          TRELLIS_X8(f, 32), TRELLIS_X8(f, 40), TRELLIS_X8(f, 48), TRELLIS_X8(f, 56)

// e^2 + best for 8 states, as the reference computes it
static inline __m256 trellis_metric(__m256 xt, __m256 dc, __m256 best) {
    const __m256 e = _mm256_sub_ps(xt, dc);
    return _mm256_add_ps(best, _mm256_mul_ps(e, e));
}

// the minimum of two vectors of D: D is never negative (best + e e, both at least +0, neither
// -0) nor NaN, and such floats order as their bits do, so the integer minimum is the float
// one; it runs on the integer ports, which the float ones, busy with e and best + e e, spare
static inline __m256 trellis_min(__m256 a, __m256 b) {
    return _mm256_castsi256_ps(_mm256_min_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}

static inline float trellis_hmin(__m256 v) {
    __m128 r = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_min_ps(r, _mm_movehl_ps(r, r));
    r = _mm_min_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// The trace back: s_{t-1} = m K + a for m = s_t & 63 and a the first predecessor whose
// D_{t-1}[m K + a] (recomputed as the SIMD pass computed it) is best_t[m], their minimum:
// the reference's choice. The K comparisons are independent of each other, and a select
// chain from the back finds the first, so a step's latency is short.
static inline void trellis_trace(const float * x, const float * dc, int k, const float * hist,
                                 const uint8_t * pos, int s, uint16_t * states) {
    const int K = 1 << k;
    states[QK_TRELLIS - 1] = (uint16_t) s;
    for (int t = QK_TRELLIS - 1; t > 0; --t) {
        const int     m    = s & (TRELLIS_NODES - 1);
        const float   bm   = hist[t*TRELLIS_NODES + pos[m]];
        const float * prev = hist + (t - 1)*TRELLIS_NODES;
        int a_best = K - 1; // if none before it reaches the minimum, the last one does
        for (int a = K - 2; a >= 0; --a) {
            const int   p = m*K + a;
            const float e = x[t - 1] - dc[p];
            a_best = prev[pos[p & (TRELLIS_NODES - 1)]] + e*e == bm ? a : a_best;
        }
        s = m*K + a_best;
        states[t - 1] = (uint16_t) s;
    }
}

// the smallest state s whose D (n vectors, lane l of vector v: state(v, l)) equals err
static inline int trellis_first_state(const __m256 * D, int n, float err, int (*state)(int, int)) {
    const __m256 ev = _mm256_set1_ps(err);
    int s_best = INT32_MAX;
    for (int v = 0; v < n; ++v) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(D[v], ev, _CMP_EQ_OQ));
        for (int l = 0; l < 8; ++l) {
            if (mask >> l & 1) {
                const int s = state(v, l);
                s_best = s < s_best ? s : s_best;
            }
        }
    }
    return s_best;
}

// turbo2t, 256 states in 32 vectors: lane l of vector v holds the state
// (v & 3) | (l & 1) << 2 | (v >> 2) << 3 | (l >> 1) << 6. Then node m's predecessors 4 m + a
// are one lane of the vectors 4 g + a (g = m bits 1..3), so the node minima are vertical:
// B_g, lane l: best[(l & 1) | g << 1 | (l >> 1) << 4]. The new D of vector v needs best at
// the two nodes that differ in bit 2 in lanes alternating: unpacking B_g with B_{g + 2} puts
// such pairs side by side, and one 64-bit broadcast load fetches them.
static inline int trellis2_state(int v, int l) {
    return (v & 3) | (l & 1) << 2 | (v >> 2) << 3 | (l >> 1) << 6;
}

// where best[m] is stored: vector (m bit 1) | (m bit 3) << 1 | (m bit 4) << 2, lane
// (m bit 2) | (m bit 0) << 1 | (m bit 5) << 2
#define TRELLIS2_POS(m) (8*((m) >> 1 & 1) + 16*((m) >> 3 & 1) + 32*((m) >> 4 & 1) + ((m) >> 2 & 1) + 2*((m) & 1) + 4*((m) >> 5 & 1))
static const uint8_t trellis2_pos[TRELLIS_NODES] = { TRELLIS_X64(TRELLIS2_POS) };

// the two floats at p in every lane pair
static inline __m256 trellis_pair(const float * p) {
    double pair;
    memcpy(&pair, p, sizeof(pair));
    return _mm256_castpd_ps(_mm256_set1_pd(pair));
}

// D of the vectors 4 g + a and 4 (g + 2) + a, for g = 0, 1, 4, 5 (dc = dcv + 4 g): their
// nodes a | g << 3 (and | 4) are at best + 16 (g & 3) + 4 (g >> 2) + {0, 2, 8, 10}, + 32 for g + 2
static inline void trellis2_groups(__m256 xt, const __m256 * dc, const float * best, int g, __m256 * d) {
    const float * b = best + 16*(g & 3) + 4*(g >> 2);
    d[0] = trellis_metric(xt, dc[0],  trellis_pair(b));
    d[1] = trellis_metric(xt, dc[1],  trellis_pair(b + 2));
    d[2] = trellis_metric(xt, dc[2],  trellis_pair(b + 8));
    d[3] = trellis_metric(xt, dc[3],  trellis_pair(b + 10));
    d[4] = trellis_metric(xt, dc[8],  trellis_pair(b + 32));
    d[5] = trellis_metric(xt, dc[9],  trellis_pair(b + 34));
    d[6] = trellis_metric(xt, dc[10], trellis_pair(b + 40));
    d[7] = trellis_metric(xt, dc[11], trellis_pair(b + 42));
}

// dc in the layout: the 8 states of row r (64 r + 8 g ..) are [a | bit 2 = 0, a | bit 2 = 1]
// for a = 0..3; paired as 64-bit elements (r, a), a 4 x 4 transpose gives the vectors 4 g + a
static inline void trellis2_dc(const float * dc, int g, __m256 * dcv) {
    const __m256i pair = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256d r0 = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_loadu_ps(dc +   0 + 8*g), pair));
    const __m256d r1 = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_loadu_ps(dc +  64 + 8*g), pair));
    const __m256d r2 = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_loadu_ps(dc + 128 + 8*g), pair));
    const __m256d r3 = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_loadu_ps(dc + 192 + 8*g), pair));
    const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    dcv[4*g + 0] = _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x20));
    dcv[4*g + 1] = _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x20));
    dcv[4*g + 2] = _mm256_castpd_ps(_mm256_permute2f128_pd(t0, t2, 0x31));
    dcv[4*g + 3] = _mm256_castpd_ps(_mm256_permute2f128_pd(t1, t3, 0x31));
}

static float trellis_viterbi_2_8(const float * x, const float * dc, uint16_t * states) {
    __m256 dcv[32];
    __m256 hist[QK_TRELLIS][8];
    __m256 D[32];

    for (int g = 0; g < 8; ++g) {
        trellis2_dc(dc, g, dcv);
    }
    for (int i = 0; i < 8; ++i) {
        hist[0][i] = _mm256_setzero_ps();
    }
    for (int t = 0; t < QK_TRELLIS - 1; ++t) {
        const __m256  xt   = _mm256_set1_ps(x[t]);
        const float * best = (const float *) hist[t];
        // i = (g & 1) | (g >> 2) << 1: m bits 1 and 3
        for (int i = 0; i < 4; ++i) {
            const int g = (i & 1) | (i >> 1) << 2;
            __m256 d[8];
            trellis2_groups(xt, dcv + 4*g, best, g, d);
            const __m256 b0 = trellis_min(trellis_min(d[0], d[1]), trellis_min(d[2], d[3]));
            const __m256 b1 = trellis_min(trellis_min(d[4], d[5]), trellis_min(d[6], d[7]));
            hist[t + 1][i]     = _mm256_unpacklo_ps(b0, b1);
            hist[t + 1][i + 4] = _mm256_unpackhi_ps(b0, b1);
        }
    }
    // the final D, whole: its minimum is err
    {
        const __m256  xt   = _mm256_set1_ps(x[QK_TRELLIS - 1]);
        const float * best = (const float *) hist[QK_TRELLIS - 1];
        for (int v = 0; v < 32; ++v) {
            D[v] = trellis_metric(xt, dcv[v], trellis_pair(best + trellis2_pos[(v & 3) | (v >> 2) << 3]));
        }
    }

    __m256 mn = D[0];
    for (int v = 1; v < 32; ++v) {
        mn = _mm256_min_ps(mn, D[v]);
    }
    const float err = trellis_hmin(mn);
    trellis_trace(x, dc, 2, (const float *) hist, trellis2_pos, trellis_first_state(D, 32, err, trellis2_state), states);
    return err;
}

// turbo3t, 512 states in 64 vectors: lane l of vector v holds the state v + 64 l. Node m's
// predecessors 8 m + a are lane m >> 3 of the vectors 8 (m & 7) + a: B_g = their minimum,
// lane l: best[g + 8 l]; the new D of vector v needs best[v] in every lane, one broadcast.
static inline int trellis3_state(int v, int l) {
    return v + 64*l;
}

// where best[m] is stored: vector m & 7, lane m >> 3
#define TRELLIS3_POS(m) (8*((m) & 7) + ((m) >> 3))
static const uint8_t trellis3_pos[TRELLIS_NODES] = { TRELLIS_X64(TRELLIS3_POS) };

// D of the vectors 8 g + a (dc = dcv + 8 g): their nodes 8 g + a are at best + g + 8 a
static inline void trellis3_group(__m256 xt, const __m256 * dc, const float * best, int g, __m256 * d) {
    const float * b = best + g;
    d[0] = trellis_metric(xt, dc[0], _mm256_broadcast_ss(b +  0));
    d[1] = trellis_metric(xt, dc[1], _mm256_broadcast_ss(b +  8));
    d[2] = trellis_metric(xt, dc[2], _mm256_broadcast_ss(b + 16));
    d[3] = trellis_metric(xt, dc[3], _mm256_broadcast_ss(b + 24));
    d[4] = trellis_metric(xt, dc[4], _mm256_broadcast_ss(b + 32));
    d[5] = trellis_metric(xt, dc[5], _mm256_broadcast_ss(b + 40));
    d[6] = trellis_metric(xt, dc[6], _mm256_broadcast_ss(b + 48));
    d[7] = trellis_metric(xt, dc[7], _mm256_broadcast_ss(b + 56));
}

// dc in the layout: vector 8 c + i, lane l = dc[64 l + 8 c + i], an 8 x 8 transpose
static inline void trellis3_dc(const float * dc, int c, __m256 * dcv) {
    const float * p = dc + 8*c;
    const __m256 t0 = _mm256_unpacklo_ps(_mm256_loadu_ps(p +   0), _mm256_loadu_ps(p +  64));
    const __m256 t1 = _mm256_unpackhi_ps(_mm256_loadu_ps(p +   0), _mm256_loadu_ps(p +  64));
    const __m256 t2 = _mm256_unpacklo_ps(_mm256_loadu_ps(p + 128), _mm256_loadu_ps(p + 192));
    const __m256 t3 = _mm256_unpackhi_ps(_mm256_loadu_ps(p + 128), _mm256_loadu_ps(p + 192));
    const __m256 t4 = _mm256_unpacklo_ps(_mm256_loadu_ps(p + 256), _mm256_loadu_ps(p + 320));
    const __m256 t5 = _mm256_unpackhi_ps(_mm256_loadu_ps(p + 256), _mm256_loadu_ps(p + 320));
    const __m256 t6 = _mm256_unpacklo_ps(_mm256_loadu_ps(p + 384), _mm256_loadu_ps(p + 448));
    const __m256 t7 = _mm256_unpackhi_ps(_mm256_loadu_ps(p + 384), _mm256_loadu_ps(p + 448));
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    __m256 * out = dcv + 8*c;
    out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    out[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    out[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static float trellis_viterbi_3_9(const float * x, const float * dc, uint16_t * states) {
    __m256 dcv[64];
    __m256 hist[QK_TRELLIS][8];
    __m256 D[64];

    for (int c = 0; c < 8; ++c) {
        trellis3_dc(dc, c, dcv);
    }
    for (int i = 0; i < 8; ++i) {
        hist[0][i] = _mm256_setzero_ps();
    }
    for (int t = 0; t < QK_TRELLIS - 1; ++t) {
        const __m256  xt   = _mm256_set1_ps(x[t]);
        const float * best = (const float *) hist[t];
        for (int g = 0; g < 8; ++g) {
            __m256 d[8];
            trellis3_group(xt, dcv + 8*g, best, g, d);
            hist[t + 1][g] = trellis_min(trellis_min(trellis_min(d[0], d[1]), trellis_min(d[2], d[3])),
                                         trellis_min(trellis_min(d[4], d[5]), trellis_min(d[6], d[7])));
        }
    }
    // the final D, whole: its minimum is err
    {
        const __m256  xt   = _mm256_set1_ps(x[QK_TRELLIS - 1]);
        const float * best = (const float *) hist[QK_TRELLIS - 1];
        for (int v = 0; v < 64; ++v) {
            D[v] = trellis_metric(xt, dcv[v], _mm256_broadcast_ss(best + trellis3_pos[v]));
        }
    }

    __m256 mn = D[0];
    for (int v = 1; v < 64; ++v) {
        mn = _mm256_min_ps(mn, D[v]);
    }
    const float err = trellis_hmin(mn);
    trellis_trace(x, dc, 3, (const float *) hist, trellis3_pos, trellis_first_state(D, 64, err, trellis3_state), states);
    return err;
}

float ggml_trellis_viterbi(const float * x, const float * dc, int k, int L, uint16_t * states) {
    if (k == TURBO2T_K && L == TURBO2T_L) {
        return trellis_viterbi_2_8(x, dc, states);
    }
    if (k == TURBO3T_K && L == TURBO3T_L) {
        return trellis_viterbi_3_9(x, dc, states);
    }
    return ggml_trellis_viterbi_generic(x, dc, k, L, states); // a trellis of another shape
}

// ---------------------------------------------------------------------------------------
// decoding: a block's 64 values as int8 codes c(s_t), two vectors of 32 in value order
//
// Value t's state is the L bits from bit p = 10 + k t, within bytes p >> 3 and the next. A
// pshufb puts those two bytes in a 16-bit lane, and a multiply by 2^(16 - L - (p & 7)) moves
// the window to the lane's top L bits (the bits above it fall off). A group of 8 values
// (t = 8 q + u) starts at a byte multiple of k, so p & 7 depends on u only. Lanes 0 and 1 of
// the four window vectors hold the groups (0, 2), (1, 3), (4, 6), (5, 7): packing vectors 0
// and 1, and 2 and 3, gives the values in order. pshufb reads within its 16-byte source; the
// sources are the block's first 16 bytes and its last 16, so nothing outside the block is
// read (turbo2t's last window names byte 18, which does not exist, as its high byte: pshufb
// takes that index mod 16, and the multiply by 2^8 drops that byte anyway).

#define TRELLIS_WIN(k, q, u, o)  (((10 + (k)*(8*(q) + (u))) >> 3) - (o)), (((10 + (k)*(8*(q) + (u))) >> 3) - (o) + 1)
#define TRELLIS_GROUP(k, q, o)   TRELLIS_WIN(k, q, 0, o), TRELLIS_WIN(k, q, 1, o), TRELLIS_WIN(k, q, 2, o), TRELLIS_WIN(k, q, 3, o), \
                                 TRELLIS_WIN(k, q, 4, o), TRELLIS_WIN(k, q, 5, o), TRELLIS_WIN(k, q, 6, o), TRELLIS_WIN(k, q, 7, o)
#define TRELLIS_IDX(k, q0, o0, q1, o1) _mm256_setr_epi8(TRELLIS_GROUP(k, q0, o0), TRELLIS_GROUP(k, q1, o1))
#define TRELLIS_MUL(k, L, u)     (1 << (16 - (L) - ((10 + (k)*(u)) & 7)))
#define TRELLIS_MULS(k, L)       _mm256_setr_epi16(TRELLIS_MUL(k, L, 0), TRELLIS_MUL(k, L, 1), TRELLIS_MUL(k, L, 2), TRELLIS_MUL(k, L, 3), \
                                                   TRELLIS_MUL(k, L, 4), TRELLIS_MUL(k, L, 5), TRELLIS_MUL(k, L, 6), TRELLIS_MUL(k, L, 7), \
                                                   TRELLIS_MUL(k, L, 0), TRELLIS_MUL(k, L, 1), TRELLIS_MUL(k, L, 2), TRELLIS_MUL(k, L, 3), \
                                                   TRELLIS_MUL(k, L, 4), TRELLIS_MUL(k, L, 5), TRELLIS_MUL(k, L, 6), TRELLIS_MUL(k, L, 7))

// A 256-entry int8 table lookup of 32 bytes: one pshufb per 16 entries. An index with bit 7
// set reads 0, so entries 16 h.. and 128 + 16 h.. combine by an or, and bits 4..6 of the
// index pick among the 8 pairs (blendv reads bit 7 of each byte: 16-bit shifts bring bits
// 4, 5, 6 there, each from its own byte).
static inline __m256i trellis_lookup_pair(const int8_t * table, int h, __m256i s, __m256i s_hi) {
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (table + 16*h)));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (table + 128 + 16*h)));
    return _mm256_or_si256(_mm256_shuffle_epi8(lo, s), _mm256_shuffle_epi8(hi, s_hi));
}

static inline __m256i trellis_lookup(const int8_t * table, __m256i s) {
    const __m256i s_hi = _mm256_xor_si256(s, _mm256_set1_epi8((char) 0x80));
    const __m256i bit4 = _mm256_slli_epi16(s, 3);
    const __m256i bit5 = _mm256_slli_epi16(s, 2);
    const __m256i bit6 = _mm256_slli_epi16(s, 1);
    const __m256i r01  = _mm256_blendv_epi8(trellis_lookup_pair(table, 0, s, s_hi), trellis_lookup_pair(table, 1, s, s_hi), bit4);
    const __m256i r23  = _mm256_blendv_epi8(trellis_lookup_pair(table, 2, s, s_hi), trellis_lookup_pair(table, 3, s, s_hi), bit4);
    const __m256i r45  = _mm256_blendv_epi8(trellis_lookup_pair(table, 4, s, s_hi), trellis_lookup_pair(table, 5, s, s_hi), bit4);
    const __m256i r67  = _mm256_blendv_epi8(trellis_lookup_pair(table, 6, s, s_hi), trellis_lookup_pair(table, 7, s, s_hi), bit4);
    return _mm256_blendv_epi8(_mm256_blendv_epi8(r01, r23, bit5), _mm256_blendv_epi8(r45, r67, bit5), bit6);
}

static inline float trellis_scale(const uint8_t * b) {
    return trellis_k_to_d((b[0] | b[1] << 8) & TRELLIS_KMAX);
}

// turbo2t (18 bytes): the state is the window's high byte
static inline float trellis2_codes(const uint8_t * GGML_RESTRICT b, __m256i * GGML_RESTRICT w) {
    const __m128i lo  = _mm_loadu_si128((const __m128i *) b);        // bytes 0..15: groups 0..5
    const __m128i hi  = _mm_loadu_si128((const __m128i *) (b + 2));  // bytes 2..17: groups 6, 7
    const __m256i s01 = _mm256_set_m128i(lo, lo);
    const __m256i s23 = _mm256_set_m128i(hi, lo);
    const __m256i mul = TRELLIS_MULS(2, 8);
    const __m256i w0  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s01, TRELLIS_IDX(2, 0, 0, 2, 0)), mul);
    const __m256i w1  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s01, TRELLIS_IDX(2, 1, 0, 3, 0)), mul);
    const __m256i w2  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s23, TRELLIS_IDX(2, 4, 0, 6, 2)), mul);
    const __m256i w3  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s23, TRELLIS_IDX(2, 5, 0, 7, 2)), mul);
    w[0] = trellis_lookup(trellis_table_turbo2t, _mm256_packus_epi16(_mm256_srli_epi16(w0, 8), _mm256_srli_epi16(w1, 8)));
    w[1] = trellis_lookup(trellis_table_turbo2t, _mm256_packus_epi16(_mm256_srli_epi16(w2, 8), _mm256_srli_epi16(w3, 8)));
    return trellis_scale(b);
}

// turbo3t (26 bytes): the window's high byte is s >> 1, the table index, and its bit 7 is
// s & 1, the sign (or-ing 1 makes the byte a nonzero int8 of that sign for sign_epi8)
static inline __m256i trellis3_values(__m256i wa, __m256i wb) {
    const __m256i low = _mm256_set1_epi16(0x00ff);
    const __m256i idx = _mm256_packus_epi16(_mm256_srli_epi16(wa, 8), _mm256_srli_epi16(wb, 8));
    const __m256i sgn = _mm256_or_si256(_mm256_packus_epi16(_mm256_and_si256(wa, low), _mm256_and_si256(wb, low)), _mm256_set1_epi8(1));
    return _mm256_sign_epi8(trellis_lookup(trellis_table_turbo3t, idx), sgn);
}

static inline float trellis3_codes(const uint8_t * GGML_RESTRICT b, __m256i * GGML_RESTRICT w) {
    const __m128i lo  = _mm_loadu_si128((const __m128i *) b);         // bytes 0..15: groups 0..3
    const __m128i hi  = _mm_loadu_si128((const __m128i *) (b + 10));  // bytes 10..25: groups 4..7
    const __m256i s01 = _mm256_set_m128i(lo, lo);
    const __m256i s23 = _mm256_set_m128i(hi, hi);
    const __m256i mul = TRELLIS_MULS(3, 9);
    const __m256i w0  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s01, TRELLIS_IDX(3, 0, 0, 2, 0)), mul);
    const __m256i w1  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s01, TRELLIS_IDX(3, 1, 0, 3, 0)), mul);
    const __m256i w2  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s23, TRELLIS_IDX(3, 4, 10, 6, 10)), mul);
    const __m256i w3  = _mm256_mullo_epi16(_mm256_shuffle_epi8(s23, TRELLIS_IDX(3, 5, 10, 7, 10)), mul);
    w[0] = trellis3_values(w0, w1);
    w[1] = trellis3_values(w2, w3);
    return trellis_scale(b);
}

// sum_i w_i q_i over 32 lanes as 8 int32 partial sums, exact for every int8 q: |q|
// (sign_epi8(q, q)) is at most 128 read as unsigned and w is never -128, so maddubs's pair
// sums stay within int16
static inline __m256i trellis_dot32(__m256i w, const int8_t * q) {
    const __m256i qv = _mm256_loadu_si256((const __m256i *) q);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(w, qv)), _mm256_set1_epi16(1));
}

// a block's two terms d d_q sumi (for the q8_0 halves j = 0, 1), as the generic code rounds
// them: lanes 0 and 1
static inline __m128 trellis_dot64(const __m256i * w, const block_q8_0 * GGML_RESTRICT y, float d) {
    const __m256i h = _mm256_hadd_epi32(trellis_dot32(w[0], y[0].qs), trellis_dot32(w[1], y[1].qs));
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    r = _mm_hadd_epi32(r, r); // sumi_0, sumi_1, sumi_0, sumi_1
    const __m128 dd = _mm_mul_ps(_mm_set1_ps(d), _mm_setr_ps(GGML_CPU_FP16_TO_FP32(y[0].d), GGML_CPU_FP16_TO_FP32(y[1].d), 0.0f, 0.0f));
    return _mm_mul_ps(dd, _mm_cvtepi32_ps(r));
}

// y[0..8) += vd * w (8 int8), a multiply then an add per value, as the generic code does
static inline void trellis_mad8(float * GGML_RESTRICT y, __m128i w, __m256 vd) {
    const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w));
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), _mm256_mul_ps(vd, f)));
}

static inline void trellis_mad32(float * GGML_RESTRICT y, __m256i w, __m256 vd) {
    const __m128i lo = _mm256_castsi256_si128(w);
    const __m128i hi = _mm256_extracti128_si256(w, 1);
    trellis_mad8(y,      lo,                    vd);
    trellis_mad8(y +  8, _mm_srli_si128(lo, 8), vd);
    trellis_mad8(y + 16, hi,                    vd);
    trellis_mad8(y + 24, _mm_srli_si128(hi, 8), vd);
}

// the float sums in the generic code's order: per block, sumf += d d_q sumi for each q8_0 half
#define TRELLIS_KERNELS(name, codes)                                                             \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_q8_0) {                                              \
    assert(nrc == 1 && n % QK_TRELLIS == 0);                                                     \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                         \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                            \
    const block_q8_0   * GGML_RESTRICT y = (const block_q8_0 *) vy;                              \
    float sumf = 0.0f;                                                                           \
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib) {                                                  \
        __m256i w[2];                                                                            \
        const float d = codes((const uint8_t *) (x + ib), w);                                    \
        const __m128 p = trellis_dot64(w, y + 2*ib, d);                                          \
        sumf += _mm_cvtss_f32(p);                                                                \
        sumf += _mm_cvtss_f32(_mm_movehdup_ps(p));                                               \
    }                                                                                            \
    *s = sumf;                                                                                   \
}                                                                                                \
                                                                                                 \
GGML_TURBO_VEC_MAD_FN(ggml_vec_mad_##name) {                                                     \
    assert(n % QK_TRELLIS == 0);                                                                 \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                            \
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib) {                                                  \
        __m256i w[2];                                                                            \
        const __m256 vd = _mm256_set1_ps(v*codes((const uint8_t *) (x + ib), w));                \
        trellis_mad32(y + QK_TRELLIS*ib,      w[0], vd);                                         \
        trellis_mad32(y + QK_TRELLIS*ib + 32, w[1], vd);                                         \
    }                                                                                            \
}

TRELLIS_KERNELS(turbo2t, trellis2_codes)
TRELLIS_KERNELS(turbo3t, trellis3_codes)

#endif // defined(__AVX2__)
