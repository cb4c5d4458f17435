// Checks the turbo and trellis CPU kernels against the reference: the quantizer byte for
// byte, the dot product and the V accumulation against the reference dequantizer; for the
// _qjl types the quantizer, the query conversion and the two-stage dot product.
//
// The kernel files (ggml-cpu/{turbo,trellis}-cpu.c and ggml-cpu/arch/<arch>/*-cpu.c) are compiled
// into this program, so one set of sources gives one program per code path: built with AVX2
// (or for AArch64) it checks the SIMD path, built with -mno-avx2 (or -mgeneral-regs-only)
// the generic fallback. tests/test_kernels.py builds and runs both against the patched tree
// and libggml-base; tests/test_neon.py the AArch64 ones (with and without the dot product),
// cross-built with zig and emulated (tqlab/aarch64.py).
#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-turbo-quants.h"
#include "ggml-cpu/turbo-cpu.h"
#include "ggml-cpu/trellis-cpu.h"

#include "ggml-cpu.h"
#include "ggml-quants.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static float gauss(void) {
    return (float) (sqrt(-2.0*log(uniform())) * cos(6.283185307179586*uniform()));
}

// K . Q of a _qjl row against what it estimates, <x_mse, q8_0(q)> + <x - x_mse, q> with x the
// reference dequantization: the kernel's stage 1 reads the q8_0 query, its sign term S q
// in fp16 (error bound: 2^-11 of each |S q|_i, times 64 g)
static int check_qjl_dot(enum ggml_type type, int n, const float * q, const char * xq, const float * xd, double * got, double * want) {
    const struct ggml_type_traits * tt = ggml_get_type_traits(type);
    const size_t bs = tt->type_size;
    const size_t rn = bs - 10; // the norm sits before the 8 sign bytes
    char nonorm[512/64*36];
    memcpy(nonorm, xq, ggml_row_size(type, n));
    for (int ib = 0; ib < n/64; ++ib) {
        memset(nonorm + ib*bs + rn, 0, 2);
    }
    float x_mse[512];
    tt->to_float(nonorm, x_mse, n); // g = 0: stage 1 alone

    block_turbo_qjl_q qq[512/64];
    quantize_row_turbo_qjl_q(q, qq, n);
    double ref = 0.0, mag = 0.0, tol = 0.0;
    for (int i = 0; i < n; ++i) {
        const block_turbo_qjl_q * b = &qq[i/64];
        const double qd = (double) GGML_CPU_FP16_TO_FP32(b->q[(i % 64)/32].d)*b->q[(i % 64)/32].qs[i % 32];
        ref += (double) x_mse[i]*qd + ((double) xd[i] - x_mse[i])*q[i];
        mag += fabs((double) x_mse[i]*qd) + fabs(((double) xd[i] - x_mse[i])*q[i]);
        uint16_t h;
        memcpy(&h, xq + (i/64)*bs + rn, 2);
        tol += 64.0*GGML_CPU_FP16_TO_FP32(h)*TURBO_QJL_SCALE*fabs(GGML_CPU_FP16_TO_FP32(b->p[i % 64]))/2048.0;
    }
    float s = 0.0f;
    ggml_get_type_traits_cpu(type)->vec_dot(n, &s, 0, xq, 0, qq, 0, 1);
    *got = s;
    *want = ref;
    return fabs(s - ref) <= 1e-5*mag + tol + 1e-30;
}

int main(void) {
    ggml_cpu_init(); // fills the fp16 -> fp32 table that the x86 kernels read
    const enum ggml_type types[] = { GGML_TYPE_TURBO2, GGML_TYPE_TURBO3, GGML_TYPE_TURBO4, GGML_TYPE_TURBO5,
                                     GGML_TYPE_TURBO2_QJL, GGML_TYPE_TURBO3_QJL, GGML_TYPE_TURBO4_QJL,
                                     GGML_TYPE_TURBO2T, GGML_TYPE_TURBO3T };
    int passed = 0, failed = 0;

    for (size_t it = 0; it < sizeof(types)/sizeof(types[0]); ++it) {
        const enum ggml_type type = types[it];
        const struct ggml_type_traits * tt = ggml_get_type_traits(type);
        for (int trial = 0; trial < 300; ++trial) {
            const int n = 64*(1 + trial % 8);
            // rows with one scale per sub-block spread over many octaves, zero sub-blocks now and then
            float x[512], q[512], xd[512], qd[512], y[512], y0[512];
            for (int i = 0; i < n; ++i) {
                const int sub = i / 32;
                const float scale = (trial + sub) % 7 == 3 ? 0.0f : powf(2.0f, (float) ((trial*7 + sub*3) % 41 - 20));
                x[i] = scale*gauss();
                // every fifth row: small integers times a power of two, which land exactly on
                // codebook values and thresholds and tie scale candidates
                if (trial % 5 == 4) {
                    x[i] = ldexpf((float) ((i*7 + trial) % 255 - 127), trial % 30 - 15);
                }
                q[i] = gauss();
                y[i] = y0[i] = gauss();
            }
            if (trial % 25 == 24) { // what a cache row must survive: NaN, infinities, denormals, f16's max
                x[0] = NAN; x[1] = INFINITY; x[2] = -INFINITY; x[3] = 1e-45f; x[4] = -65504.0f; x[5] = 7e4f;
            }
            char xq[512/64*64], xc[512/64*64], qq[512/32*34];
            ggml_quantize_chunk(type, x, xq, 0, 1, n, NULL); // the reference quantizer of ggml-base
            switch (type) {                                   // this file's from_float
                case GGML_TYPE_TURBO2:     quantize_row_turbo2(x, xc, n); break;
                case GGML_TYPE_TURBO3:     quantize_row_turbo3(x, xc, n); break;
                case GGML_TYPE_TURBO4:     quantize_row_turbo4(x, xc, n); break;
                case GGML_TYPE_TURBO5:     quantize_row_turbo5(x, xc, n); break;
                case GGML_TYPE_TURBO2_QJL: quantize_row_turbo2_qjl(x, xc, n); break;
                case GGML_TYPE_TURBO3_QJL: quantize_row_turbo3_qjl(x, xc, n); break;
                case GGML_TYPE_TURBO2T:    quantize_row_turbo2t(x, xc, n); break;
                case GGML_TYPE_TURBO3T:    quantize_row_turbo3t(x, xc, n); break;
                default:                   quantize_row_turbo4_qjl(x, xc, n); break;
            }
            const int quant_ok = memcmp(xq, xc, ggml_row_size(type, n)) == 0;
            if (ggml_turbo_get_vec_mad(type) == NULL) { // a _qjl key: no fused V path
                tt->to_float(xq, xd, n);
                double got, want;
                const int dot_ok = check_qjl_dot(type, n, q, xq, xd, &got, &want);
                if (quant_ok && dot_ok) {
                    ++passed;
                } else {
                    ++failed;
                    fprintf(stderr, "%s n=%d trial=%d: quantize %s, dot %s (%g vs %g)\n", ggml_type_name(type), n, trial,
                            quant_ok ? "ok" : "FAILED", dot_ok ? "ok" : "FAILED", got, want);
                }
                continue;
            }
            quantize_row_q8_0_ref(q, (block_q8_0 *) qq, n);
            tt->to_float(xq, xd, n);
            dequantize_row_q8_0((const block_q8_0 *) qq, qd, n);

            double ref = 0.0, mag = 0.0;
            for (int i = 0; i < n; ++i) {
                ref += (double) xd[i]*qd[i];
                mag += fabs((double) xd[i]*qd[i]);
            }
            float s = 0.0f;
            switch (type) {
                case GGML_TYPE_TURBO2: ggml_vec_dot_turbo2_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
                case GGML_TYPE_TURBO3: ggml_vec_dot_turbo3_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
                case GGML_TYPE_TURBO5: ggml_vec_dot_turbo5_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
                case GGML_TYPE_TURBO2T: ggml_vec_dot_turbo2t_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
                case GGML_TYPE_TURBO3T: ggml_vec_dot_turbo3t_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
                default:               ggml_vec_dot_turbo4_q8_0(n, &s, 0, xq, 0, qq, 0, 1); break;
            }
            const int dot_ok = fabs(s - ref) <= 1e-5*mag + 1e-30;

            const float v = (float) (uniform() - 0.5);
            ggml_turbo_get_vec_mad(type)(n, y, xq, v);
            int mad_ok = 1;
            for (int i = 0; i < n; ++i) {
                const double want = (double) y0[i] + (double) v*xd[i];
                mad_ok &= fabs(y[i] - want) <= 1e-5*(fabs(y0[i]) + fabs(v*xd[i])) + 1e-30;
            }

            if (quant_ok && dot_ok && mad_ok) {
                ++passed;
            } else {
                ++failed;
                fprintf(stderr, "%s n=%d trial=%d: quantize %s, dot %s (%g vs %g), mad %s\n", ggml_type_name(type), n, trial,
                        quant_ok ? "ok" : "FAILED", dot_ok ? "ok" : "FAILED", s, ref, mad_ok ? "ok" : "FAILED");
            }
        }
    }
#if defined(__AVX2__)
    printf("turbo kernels (avx2): ");
#elif defined(__ARM_NEON) && defined(__aarch64__)
    printf("turbo kernels (neon): ");
#else
    printf("turbo kernels (scalar): ");
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
