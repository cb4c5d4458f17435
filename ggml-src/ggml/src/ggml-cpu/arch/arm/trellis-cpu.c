// tqllama: CPU kernels of the trellis-coded turbo types on ARM (NEON, AArch64); the generic
// code and the trait glue are ../../trellis-cpu.c.
//
// The Viterbi search of the quantizer (3 runs per block, on every K and V row written: the
// trellis's price) keeps the states in a lane layout where the minimum over a node's K
// predecessors is a min of whole vectors, and each new metric adds its nodes' minima as a
// whole vector: the minima come out 4 consecutive nodes per vector and are needed 4 nodes K
// apart, so 4 x 4 transposes between the steps (8 trn per 16 nodes) stand for the 4-lane
// broadcast each metric would otherwise need. It keeps only each step's minima per node, not
// the choices: the trace back recomputes the K candidates of the one node it visits per step
// and takes the first that equals the node's minimum, the reference's choice. Every float
// value is the reference's: the same subtraction, square and sum per state (this file is
// compiled with -ffp-contract=off, so none is fused), and a minimum, exact in any order.
//
// The K dot products and the V accumulation decode 16 values at a time: the 16-bit windows
// of their states (tbl from the block's first and last 16 bytes), shifted to the lanes' top,
// then the 256-entry table by one tbl and three tbx of 64 entries; the integer sums are exact
// and the float sums are the generic code's, in its order. Without NEON on AArch64 this file
// is empty and the generic code serves (../../turbo-arch-fallback.h).

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-trellis-quants.h"

#include "../../trellis-cpu.h"

#include <assert.h>

#if defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

// ---------------------------------------------------------------------------------------
// the Viterbi search (FORMAT-TRELLIS.md step 4) for (k, L) = (2, 8) and (3, 9): 64 nodes
//
// Step t computes, for each state s, D_t[s] = best_t[s & 63] + (x_t - dc[s])^2, where
// best_t[m] = min_a D_{t-1}[m K + a] (best_0 = 0: 0 + e^2 is e^2 exactly). With K = 2^k
// predecessors (4 or 8), lane j of metric vector a + K g (a < K, g < 16) holds the state
// s = a + K j + 4 K g. Then
// - its predecessor node s >> k is j + 4 g: the minimum over a of the vectors a + K g is
//   B_g, lane j = best_{t+1}[4 g + j], the nodes in order (as hist[t + 1] keeps them);
// - its node s & 63 is a + K j + 4 K h, h = g mod 16/K: lane j of T[a + K h], where
//   T[c + K h], lane j = best_t[c + K j + 4 K h] (a transpose of B, trellis_spread).
// The final D is kept whole for the last state.

#define TRELLIS_NODES 64

// e^2 + best for 4 states, as the reference computes it
static inline float32x4_t trellis_metric(float32x4_t xt, float32x4_t dc, float32x4_t best) {
    const float32x4_t e = vsubq_f32(xt, dc);
    return vaddq_f32(best, vmulq_f32(e, e));
}

// out[i], lane j = r_j, lane i
static inline void trellis_transpose(float32x4_t r0, float32x4_t r1, float32x4_t r2, float32x4_t r3, float32x4_t * out) {
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
    const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
    const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    out[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
    out[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    out[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
    out[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}

// n values in order -> out[c + K h], lane j = in[c + K j + 4 K h] (c < K): the lanes of an
// out vector are lane c & 3 of the in vectors (c >> 2) + K/4 j + K h, so one transpose per
// c >> 2 and h. This lays out dc as the metric vectors (dcv[a + K g]) and best_t as T.
static inline void trellis_spread(const float * in, int K, int n, float32x4_t * out) {
    for (int h = 0; h < n/(4*K); ++h) {
        for (int b = 0; b < K/4; ++b) {
            const float * r = in + 4*(b + K*h);
            trellis_transpose(vld1q_f32(r), vld1q_f32(r + K), vld1q_f32(r + 2*K), vld1q_f32(r + 3*K), out + 4*b + K*h);
        }
    }
}

// step t: from T = best_t, best_{t+1} into next (hist[t + 1]) and T
static inline void trellis_step(float32x4_t xt, const float32x4_t * dcv, int K, float32x4_t * T, float * next) {
    for (int g = 0; g < 16; ++g) {
        const float32x4_t * dg = dcv + K*g;
        const float32x4_t * tg = T + K*(g & (16/K - 1));
        float32x4_t b = trellis_metric(xt, dg[0], tg[0]);
        for (int a = 1; a < K; ++a) {
            b = vminq_f32(b, trellis_metric(xt, dg[a], tg[a]));
        }
        vst1q_f32(next + 4*g, b);
    }
    trellis_spread(next, K, TRELLIS_NODES, T);
}

// min(acc, i) in the lanes where d == target: over lanes and calls, the smallest index i
// whose d reaches target
static inline uint32x4_t trellis_first(uint32x4_t acc, float32x4_t d, float32x4_t target, uint32x4_t i) {
    return vminq_u32(acc, vornq_u32(i, vceqq_f32(d, target)));
}

// The trace back: s_{t-1} = m K + a for m = s_t & 63 and a the first predecessor whose
// D_{t-1}[m K + a] (recomputed as the SIMD pass computed it) is best_t[m], their minimum:
// the reference's choice. The K candidates read K consecutive dc and K consecutive best_{t-1}
// ((m K + a) & 63 = (m K & 63) + a): one or two vectors.
static void trellis_trace(const float * x, const float * dc, int k, const float * hist, int s, uint16_t * states) {
    const int        K    = 1 << k;
    const uint32x4_t lane = { 0, 1, 2, 3 };
    states[QK_TRELLIS - 1] = (uint16_t) s;
    for (int t = QK_TRELLIS - 1; t > 0; --t) {
        const int         m    = s & (TRELLIS_NODES - 1);
        const float32x4_t bm   = vdupq_n_f32(hist[t*TRELLIS_NODES + m]);
        const float32x4_t xt   = vdupq_n_f32(x[t - 1]);
        const float *     prev = hist + (t - 1)*TRELLIS_NODES + ((m*K) & (TRELLIS_NODES - 1));
        uint32x4_t a = vdupq_n_u32(UINT32_MAX);
        for (int i = 0; i < K; i += 4) {
            const float32x4_t d = trellis_metric(xt, vld1q_f32(dc + m*K + i), vld1q_f32(prev + i));
            a = trellis_first(a, d, bm, vaddq_u32(lane, vdupq_n_u32(i)));
        }
        s = m*K + (int) vminvq_u32(a);
        states[t - 1] = (uint16_t) s;
    }
}

// the last step: D_63 whole, err its minimum, s_63 the smallest state reaching it; then the
// trace back
static float trellis_last(const float * x, const float * dc, int k, const float32x4_t * dcv, const float32x4_t * T,
                          const float * hist, uint16_t * states) {
    const int         K  = 1 << k;
    const float32x4_t xt = vdupq_n_f32(x[QK_TRELLIS - 1]);
    float32x4_t D[TRELLIS_MAX_STATES/4];
    for (int g = 0; g < 16; ++g) {
        for (int a = 0; a < K; ++a) {
            D[a + K*g] = trellis_metric(xt, dcv[a + K*g], T[a + K*(g & (16/K - 1))]);
        }
    }
    float32x4_t mn = D[0];
    for (int v = 1; v < 16*K; ++v) {
        mn = vminq_f32(mn, D[v]);
    }
    const float       err  = vminvq_f32(mn);
    const float32x4_t errv = vdupq_n_f32(err);
    const uint32x4_t  lane = { 0, 1, 2, 3 };
    uint32x4_t s = vdupq_n_u32(UINT32_MAX);
    for (int g = 0; g < 16; ++g) {
        for (int a = 0; a < K; ++a) {
            s = trellis_first(s, D[a + K*g], errv, vmlaq_n_u32(vdupq_n_u32(a + 4*K*g), lane, K));
        }
    }
    trellis_trace(x, dc, k, hist, (int) vminvq_u32(s), states);
    return err;
}

// one search of a (k, L = k + 6) trellis: 2^L / 4 metric vectors; hist[t] = best_t, in node order
#define TRELLIS_VITERBI(k, L)                                                                   \
static float trellis_viterbi_##k##_##L(const float * x, const float * dc, uint16_t * states) {  \
    float32x4_t dcv[1 << ((L) - 2)];                                                            \
    float32x4_t T[16];                                                                          \
    float       hist[QK_TRELLIS][TRELLIS_NODES];                                                \
    trellis_spread(dc, 1 << (k), 1 << (L), dcv);                                                \
    for (int i = 0; i < 16; ++i) {                                                              \
        T[i] = vdupq_n_f32(0.0f);                                                               \
        vst1q_f32(hist[0] + 4*i, T[i]);                                                         \
    }                                                                                           \
    for (int t = 0; t < QK_TRELLIS - 1; ++t) {                                                  \
        trellis_step(vdupq_n_f32(x[t]), dcv, 1 << (k), T, hist[t + 1]);                         \
    }                                                                                           \
    return trellis_last(x, dc, k, dcv, T, hist[0], states);                                     \
}

TRELLIS_VITERBI(2, 8)
TRELLIS_VITERBI(3, 9)

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
// decoding: a block's 64 values as int8 codes c(s_t), four vectors of 16 in value order
//
// Value t's state is the L bits from bit p = 10 + k t, within bytes p >> 3 and the next. A
// tbl puts those two bytes in a 16-bit lane, and a left shift by 16 - L - (p & 7) moves the
// window to the lane's top L bits (the bits above it fall off). A group of 8 values starts
// at a byte multiple of k, so p & 7, and the shift, depend on t mod 8 only. The tbl's 32
// source bytes are the block's first 16 and its last 16, so nothing outside the block is
// read: byte i is source byte i below 16, else i + 32 - size; turbo2t's last window names
// byte 18, which does not exist, as its high byte: index 32, out of range, reads 0.

#define TRELLIS_BYTE(size, i)    ((i) < 16 ? (i) : (i) + 32 - (size))
#define TRELLIS_WIN(k, size, t)  TRELLIS_BYTE(size, (TRELLIS_SCALE_BITS + (k)*(t)) >> 3), \
                                 TRELLIS_BYTE(size, ((TRELLIS_SCALE_BITS + (k)*(t)) >> 3) + 1)
#define TRELLIS_WIN8(k, size, q) TRELLIS_WIN(k, size, 8*(q)),     TRELLIS_WIN(k, size, 8*(q) + 1), \
                                 TRELLIS_WIN(k, size, 8*(q) + 2), TRELLIS_WIN(k, size, 8*(q) + 3), \
                                 TRELLIS_WIN(k, size, 8*(q) + 4), TRELLIS_WIN(k, size, 8*(q) + 5), \
                                 TRELLIS_WIN(k, size, 8*(q) + 6), TRELLIS_WIN(k, size, 8*(q) + 7)
#define TRELLIS_IDX(k, size)     { TRELLIS_WIN8(k, size, 0), TRELLIS_WIN8(k, size, 1), TRELLIS_WIN8(k, size, 2), TRELLIS_WIN8(k, size, 3), \
                                   TRELLIS_WIN8(k, size, 4), TRELLIS_WIN8(k, size, 5), TRELLIS_WIN8(k, size, 6), TRELLIS_WIN8(k, size, 7) }
#define TRELLIS_SHIFT(k, L, u)   (16 - (L) - ((TRELLIS_SCALE_BITS + (k)*(u)) & 7))
#define TRELLIS_SHIFTS(k, L)     { TRELLIS_SHIFT(k, L, 0), TRELLIS_SHIFT(k, L, 1), TRELLIS_SHIFT(k, L, 2), TRELLIS_SHIFT(k, L, 3), \
                                   TRELLIS_SHIFT(k, L, 4), TRELLIS_SHIFT(k, L, 5), TRELLIS_SHIFT(k, L, 6), TRELLIS_SHIFT(k, L, 7) }

static const uint8_t trellis2_idx[2*QK_TRELLIS] = TRELLIS_IDX(TURBO2T_K, sizeof(block_turbo2t));
static const uint8_t trellis3_idx[2*QK_TRELLIS] = TRELLIS_IDX(TURBO3T_K, sizeof(block_turbo3t));
static const int16_t trellis2_shift[8]          = TRELLIS_SHIFTS(TURBO2T_K, TURBO2T_L);
static const int16_t trellis3_shift[8]          = TRELLIS_SHIFTS(TURBO3T_K, TURBO3T_L);

// the windows of values 16 i .. 16 i + 15, each at the top of a 16-bit lane: two vectors of 8
static inline uint8x16x2_t trellis_windows(uint8x16x2_t src, const uint8_t * idx, int16x8_t shift, int i) {
    const uint8x16x2_t w = { {
        vreinterpretq_u8_u16(vshlq_u16(vreinterpretq_u16_u8(vqtbl2q_u8(src, vld1q_u8(idx + 32*i))),      shift)),
        vreinterpretq_u8_u16(vshlq_u16(vreinterpretq_u16_u8(vqtbl2q_u8(src, vld1q_u8(idx + 32*i + 16))), shift)),
    } };
    return w;
}

static inline void trellis_load_table(const int8_t * table, int8x16x4_t * t) {
    for (int i = 0; i < 4; ++i) {
        t[i] = vld1q_s8_x4(table + 64*i);
    }
}

// table[s] for 16 indices: tbl reads 0 and tbx keeps its input where the index is out of
// range, and s ^ 64 q is in range exactly for the indices of quarter q, so each 64-entry
// quarter fills its own lanes
static inline int8x16_t trellis_lookup(const int8x16x4_t * t, uint8x16_t s) {
    int8x16_t r = vqtbl4q_s8(t[0], s);
    r = vqtbx4q_s8(r, t[1], veorq_u8(s, vdupq_n_u8(0x40)));
    r = vqtbx4q_s8(r, t[2], veorq_u8(s, vdupq_n_u8(0x80)));
    return vqtbx4q_s8(r, t[3], veorq_u8(s, vdupq_n_u8(0xc0)));
}

static inline float trellis_scale(const uint8_t * b) {
    return trellis_k_to_d((b[0] | b[1] << 8) & TRELLIS_KMAX);
}

// turbo2t (18 bytes): the state is the window's high byte
static inline float trellis2_codes(const uint8_t * GGML_RESTRICT b, const int8x16x4_t * t, int8x16_t * GGML_RESTRICT w) {
    const uint8x16x2_t src   = { { vld1q_u8(b), vld1q_u8(b + sizeof(block_turbo2t) - 16) } };
    const int16x8_t    shift = vld1q_s16(trellis2_shift);
    for (int i = 0; i < 4; ++i) {
        const uint8x16x2_t win = trellis_windows(src, trellis2_idx, shift, i);
        w[i] = trellis_lookup(t, vuzp2q_u8(win.val[0], win.val[1]));
    }
    return trellis_scale(b);
}

// turbo3t (26 bytes): the window's high byte is s >> 1, the table index, and bit 7 of its
// low byte is s & 1, the sign (an arithmetic shift makes it 0 or -1: w ^ -1 - -1 = -w)
static inline float trellis3_codes(const uint8_t * GGML_RESTRICT b, const int8x16x4_t * t, int8x16_t * GGML_RESTRICT w) {
    const uint8x16x2_t src   = { { vld1q_u8(b), vld1q_u8(b + sizeof(block_turbo3t) - 16) } };
    const int16x8_t    shift = vld1q_s16(trellis3_shift);
    for (int i = 0; i < 4; ++i) {
        const uint8x16x2_t win = trellis_windows(src, trellis3_idx, shift, i);
        const int8x16_t    c   = trellis_lookup(t, vuzp2q_u8(win.val[0], win.val[1]));
        const int8x16_t    neg = vshrq_n_s8(vreinterpretq_s8_u8(vuzp1q_u8(win.val[0], win.val[1])), 7);
        w[i] = vsubq_s8(veorq_s8(c, neg), neg);
    }
    return trellis_scale(b);
}

// acc + the sums of 4 products of a and b in each lane (exact: |a b| <= 127 128)
static inline int32x4_t trellis_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

// sumf + a block's two terms d d_q sumi (for the q8_0 halves j = 0, 1), as the generic code
// rounds and adds them
static inline float trellis_dot64(float sumf, const int8x16_t * w, const block_q8_0 * GGML_RESTRICT y, float d) {
    const int32x4_t p0 = trellis_dot16(trellis_dot16(vdupq_n_s32(0), w[0], vld1q_s8(y[0].qs)), w[1], vld1q_s8(y[0].qs + 16));
    const int32x4_t p1 = trellis_dot16(trellis_dot16(vdupq_n_s32(0), w[2], vld1q_s8(y[1].qs)), w[3], vld1q_s8(y[1].qs + 16));
    const int32x4_t h  = vpaddq_s32(p0, p1);
    const float32x2_t sumi = vcvt_f32_s32(vget_low_s32(vpaddq_s32(h, h))); // sumi_0, sumi_1
    const float32x2_t dq   = { GGML_CPU_FP16_TO_FP32(y[0].d), GGML_CPU_FP16_TO_FP32(y[1].d) };
    const float32x2_t p    = vmul_f32(vmul_f32(vdup_n_f32(d), dq), sumi);
    sumf += vget_lane_f32(p, 0);
    sumf += vget_lane_f32(p, 1);
    return sumf;
}

// y[0..16) += vd * w (16 int8), a multiply then an add per value, as the generic code does
static inline void trellis_mad16(float * GGML_RESTRICT y, int8x16_t w, float32x4_t vd) {
    const int16x8_t h[2] = { vmovl_s8(vget_low_s8(w)), vmovl_high_s8(w) };
    for (int i = 0; i < 2; ++i) {
        const float32x4_t f0 = vcvtq_f32_s32(vmovl_s16(vget_low_s16(h[i])));
        const float32x4_t f1 = vcvtq_f32_s32(vmovl_high_s16(h[i]));
        vst1q_f32(y + 8*i,     vaddq_f32(vld1q_f32(y + 8*i),     vmulq_f32(vd, f0)));
        vst1q_f32(y + 8*i + 4, vaddq_f32(vld1q_f32(y + 8*i + 4), vmulq_f32(vd, f1)));
    }
}

#define TRELLIS_KERNELS(name, codes)                                                             \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_q8_0) {                                              \
    assert(nrc == 1 && n % QK_TRELLIS == 0);                                                     \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                         \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                            \
    const block_q8_0   * GGML_RESTRICT y = (const block_q8_0 *) vy;                              \
    int8x16x4_t table[4];                                                                        \
    trellis_load_table(trellis_table_##name, table);                                             \
    float sumf = 0.0f;                                                                           \
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib) {                                                  \
        int8x16_t w[4];                                                                          \
        const float d = codes((const uint8_t *) (x + ib), table, w);                             \
        sumf = trellis_dot64(sumf, w, y + 2*ib, d);                                              \
    }                                                                                            \
    *s = sumf;                                                                                   \
}                                                                                                \
                                                                                                 \
GGML_TURBO_VEC_MAD_FN(ggml_vec_mad_##name) {                                                     \
    assert(n % QK_TRELLIS == 0);                                                                 \
    const block_##name * GGML_RESTRICT x = (const block_##name *) vx;                            \
    int8x16x4_t table[4];                                                                        \
    trellis_load_table(trellis_table_##name, table);                                             \
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib) {                                                  \
        int8x16_t w[4];                                                                          \
        const float32x4_t vd = vdupq_n_f32(v*codes((const uint8_t *) (x + ib), table, w));     \
        for (int i = 0; i < 4; ++i) {                                                            \
            trellis_mad16(y + QK_TRELLIS*ib + 16*i, w[i], vd);                                   \
        }                                                                                        \
    }                                                                                            \
}

TRELLIS_KERNELS(turbo2t, trellis2_codes)
TRELLIS_KERNELS(turbo3t, trellis3_codes)

#endif // defined(__ARM_NEON) && defined(__aarch64__)
