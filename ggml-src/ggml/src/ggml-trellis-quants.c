// tqllama: reference quantization of the trellis-coded turbo types (docs/FORMAT-TRELLIS.md).
//
// Bit-exact with tqllama/quant/trellis.py: float32 arithmetic, sums in index order, and this
// file is compiled with -ffp-contract=off so that no multiply-add is fused.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-trellis-quants.h"
#include "ggml-impl.h"

#include <assert.h>
#include <string.h>

static const trellis_type trellis_turbo2t = {
    TURBO2T_K, TURBO2T_L, sizeof(block_turbo2t), TURBO2T_SIGNED, trellis_table_turbo2t,
};
static const trellis_type trellis_turbo3t = {
    TURBO3T_K, TURBO3T_L, sizeof(block_turbo3t), TURBO3T_SIGNED, trellis_table_turbo3t,
};

const trellis_type * ggml_trellis_type(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2T: return &trellis_turbo2t;
        case GGML_TYPE_TURBO3T: return &trellis_turbo3t;
        default:                return NULL;
    }
}

float trellis_viterbi_ref(const float * x, const float * dc, int k, int L, uint16_t * states) {
    const int S = 1 << L;
    const int K = 1 << k;
    const int M = 1 << (L - k); // trellis nodes: the L - k bits two neighbouring states share
    float   D[TRELLIS_MAX_STATES];
    float   best[TRELLIS_MAX_STATES];
    uint8_t back[QK_TRELLIS][TRELLIS_MAX_STATES];
    for (int s = 0; s < S; ++s) {
        const float e = x[0] - dc[s];
        D[s] = e*e; // any start state: the prefix bits are stored
    }
    for (int t = 1; t < QK_TRELLIS; ++t) {
        // node m's predecessors are the states m K + a: keep the first of equal minima
        for (int m = 0; m < M; ++m) {
            int   a_best = 0;
            float d_best = D[m*K];
            for (int a = 1; a < K; ++a) {
                if (D[m*K + a] < d_best) {
                    d_best = D[m*K + a];
                    a_best = a;
                }
            }
            best[m]    = d_best;
            back[t][m] = (uint8_t) a_best;
        }
        for (int s = 0; s < S; ++s) {
            const float e = x[t] - dc[s];
            D[s] = best[s & (M - 1)] + e*e;
        }
    }
    int s_best = 0;
    for (int s = 1; s < S; ++s) {
        if (D[s] < D[s_best]) {
            s_best = s;
        }
    }
    const float err = D[s_best];
    int s = s_best;
    states[QK_TRELLIS - 1] = (uint16_t) s;
    for (int t = QK_TRELLIS - 1; t > 0; --t) {
        const int m = s & (M - 1);
        s = m << k | back[t][m];
        states[t - 1] = (uint16_t) s;
    }
    return err;
}

// FORMAT-TRELLIS.md steps 0-5 for one block of 64 values
static void trellis_quantize_block(const float * GGML_RESTRICT x, uint8_t * GGML_RESTRICT out,
                                   const trellis_type * tt, const int * search, trellis_viterbi_t viterbi) {
    float xs[QK_TRELLIS];
    memset(out, 0, tt->block_size);
    const int k_ref = trellis_k_ref(x, xs);
    if (k_ref == 0) {
        return; // a zero block: every byte 0
    }
    float    dc[TRELLIS_MAX_STATES];
    uint16_t st[QK_TRELLIS];
    uint16_t st_best[QK_TRELLIS];
    float    err_best = INFINITY;
    int      kc_best  = 0;
    for (int c = 0; c < TRELLIS_N_SEARCH; ++c) {
        const int   kc = trellis_clamp_k(k_ref + search[c]);
        const float d  = trellis_k_to_d(kc);
        for (int s = 0; s < (1 << tt->L); ++s) {
            dc[s] = d*(float) trellis_code(tt, s);
        }
        const float err = viterbi(xs, dc, tt->k, tt->L, st);
        if (err < err_best) { // the first candidate wins ties
            err_best = err;
            kc_best  = kc;
            memcpy(st_best, st, sizeof(st));
        }
    }
    // step 5: the scale code and the prefix (s_0's low L - k bits) fill the first 16 bits,
    // then each value's k new bits (the high bits of its state)
    const int pb = tt->L - tt->k;
    const int s0 = kc_best | (st_best[0] & ((1 << pb) - 1)) << TRELLIS_SCALE_BITS;
    out[0] = (uint8_t) s0;
    out[1] = (uint8_t) (s0 >> 8);
    for (int t = 0; t < QK_TRELLIS; ++t) {
        const int p   = TRELLIS_SCALE_BITS + pb + tt->k*t;
        const int v   = (st_best[t] >> pb) << (p & 7);
        out[p >> 3] |= (uint8_t) v;
        if ((p & 7) + tt->k > 8) {
            out[(p >> 3) + 1] |= (uint8_t) (v >> 8);
        }
    }
}

static void trellis_dequantize_block(const uint8_t * GGML_RESTRICT b, float * GGML_RESTRICT y, const trellis_type * tt) {
    const float d = trellis_k_to_d((b[0] | b[1] << 8) & TRELLIS_KMAX);
    for (int t = 0; t < QK_TRELLIS; ++t) {
        y[t] = d*(float) trellis_code(tt, trellis_state(b, tt->block_size, tt->k, tt->L, t));
    }
}

#define TRELLIS_ROWS(name, NAME)                                                                  \
void quantize_row_##name##_with(const float * GGML_RESTRICT x, block_##name * GGML_RESTRICT y,    \
                                int64_t k, trellis_viterbi_t viterbi) {                           \
    assert(k % QK_TRELLIS == 0);                                                                  \
    const trellis_type * tt = ggml_trellis_type(GGML_TYPE_##NAME);                                \
    for (int64_t ib = 0; ib < k/QK_TRELLIS; ++ib) {                                               \
        trellis_quantize_block(x + ib*QK_TRELLIS, (uint8_t *) (y + ib), tt,                       \
                               trellis_search_##name, viterbi);                                  \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void quantize_row_##name##_ref(const float * GGML_RESTRICT x, block_##name * GGML_RESTRICT y, int64_t k) { \
    quantize_row_##name##_with(x, y, k, trellis_viterbi_ref);                                     \
}                                                                                                 \
                                                                                                  \
void dequantize_row_##name(const block_##name * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    assert(k % QK_TRELLIS == 0);                                                                  \
    const trellis_type * tt = ggml_trellis_type(GGML_TYPE_##NAME);                                \
    for (int64_t ib = 0; ib < k/QK_TRELLIS; ++ib) {                                               \
        trellis_dequantize_block((const uint8_t *) (x + ib), y + ib*QK_TRELLIS, tt);              \
    }                                                                                             \
}

TRELLIS_ROWS(turbo2t, TURBO2T)
TRELLIS_ROWS(turbo3t, TURBO3T)
TURBO_QUANTIZE_CHUNK(turbo2t, TURBO2T)
TURBO_QUANTIZE_CHUNK(turbo3t, TURBO3T)
