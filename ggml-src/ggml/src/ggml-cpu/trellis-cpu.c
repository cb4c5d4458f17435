// tqllama: CPU kernels of the trellis-coded turbo types: the generic code and the trait glue.
//
// Split as turbo-cpu.c is: the scalar versions (*_generic) here, the SIMD ones in
// arch/x86/trellis-cpu.c (AVX2) and arch/arm/trellis-cpu.c (NEON, AArch64),
// turbo-arch-fallback.h naming the generic ones where none is compiled. The kernels: the
// Viterbi search of the quantizer (from_float; its cost is the trellis's price, 64 x 2^L
// branch metrics per candidate scale), K dot products against a q8_0 query, and flash
// attention's V accumulation, both decoding each value's state from the block's bit string.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-trellis-quants.h"
#include "trellis-cpu.h"
#include "turbo-arch-fallback.h"

#include <assert.h>

float ggml_trellis_viterbi_generic(const float * x, const float * dc, int k, int L, uint16_t * states) {
    return trellis_viterbi_ref(x, dc, k, L, states);
}

void quantize_row_turbo2t(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    quantize_row_turbo2t_with(x, y, k, ggml_trellis_viterbi);
}

void quantize_row_turbo3t(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {
    quantize_row_turbo3t_with(x, y, k, ggml_trellis_viterbi);
}

// the 64 values of a block as int8 codes c(s_t), and its scale
static inline float trellis_codes(const uint8_t * GGML_RESTRICT b, const trellis_type * tt, int8_t * GGML_RESTRICT w) {
    for (int t = 0; t < QK_TRELLIS; ++t) {
        w[t] = (int8_t) trellis_code(tt, trellis_state(b, tt->block_size, tt->k, tt->L, t));
    }
    return trellis_k_to_d((b[0] | b[1] << 8) & TRELLIS_KMAX);
}

static inline void trellis_vec_dot_q8_0(int n, float * GGML_RESTRICT s, const uint8_t * GGML_RESTRICT x,
                                        const block_q8_0 * GGML_RESTRICT y, const trellis_type * tt) {
    float sumf = 0.0f;
    int8_t w[QK_TRELLIS];
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib, x += tt->block_size) {
        const float d = trellis_codes(x, tt, w);
        for (int j = 0; j < 2; ++j) {
            const int8_t * q = y[2*ib + j].qs;
            int sumi = 0;
            for (int i = 0; i < QK8_0; ++i) {
                sumi += w[QK8_0*j + i]*q[i];
            }
            sumf += d*GGML_CPU_FP16_TO_FP32(y[2*ib + j].d)*(float) sumi;
        }
    }
    *s = sumf;
}

static inline void trellis_vec_mad(int n, float * GGML_RESTRICT y, const uint8_t * GGML_RESTRICT x, float v,
                                   const trellis_type * tt) {
    int8_t w[QK_TRELLIS];
    for (int ib = 0; ib < n/QK_TRELLIS; ++ib, x += tt->block_size, y += QK_TRELLIS) {
        const float vd = v*trellis_codes(x, tt, w);
        for (int t = 0; t < QK_TRELLIS; ++t) {
            y[t] += vd*(float) w[t];
        }
    }
}

#define TRELLIS_KERNELS(name, NAME)                                                               \
GGML_TURBO_VEC_DOT_FN(ggml_vec_dot_##name##_q8_0_generic) {                                       \
    assert(nrc == 1 && n % QK_TRELLIS == 0);                                                      \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                          \
    trellis_vec_dot_q8_0(n, s, vx, vy, ggml_trellis_type(GGML_TYPE_##NAME));                      \
}                                                                                                 \
                                                                                                  \
GGML_TURBO_VEC_MAD_FN(ggml_vec_mad_##name##_generic) {                                            \
    trellis_vec_mad(n, y, vx, v, ggml_trellis_type(GGML_TYPE_##NAME));                            \
}

TRELLIS_KERNELS(turbo2t, TURBO2T)
TRELLIS_KERNELS(turbo3t, TURBO3T)
