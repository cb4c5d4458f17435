// tqllama: reference quantization of the turbo KV-cache types (docs/FORMAT.md of tqllama).
//
// Bit-exact with tqllama/quant/turbo.py: float32 arithmetic, sums in index order, and this
// file is compiled with -ffp-contract=off so that no multiply-add is fused.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-turbo-quants.h"
#include "ggml-turbo.h"
#include "ggml-impl.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const turbo_codebook turbo_cb4 = { kvalues_turbo4, kthresh_turbo4, 16, TURBO4_CBMAX, TURBO4_SEARCH_LO, TURBO4_SEARCH_HI };
static const turbo_codebook turbo_cb3 = { kvalues_turbo3, kthresh_turbo3,  8, TURBO3_CBMAX, TURBO3_SEARCH_LO, TURBO3_SEARCH_HI };
static const turbo_codebook turbo_cb2 = { kvalues_turbo2, kthresh_turbo2,  4, TURBO2_CBMAX, TURBO2_SEARCH_LO, TURBO2_SEARCH_HI };
static const turbo_codebook turbo_cb1 = { kvalues_turbo1, kthresh_turbo1,  2, TURBO1_CBMAX, TURBO1_SEARCH_LO, TURBO1_SEARCH_HI };

// idx = #{t : y > thresh[t]}; the thresholds ascend, so a binary search counts them
// (4 comparisons for 16 entries instead of 15: this runs 9 times per value on every token)
static inline int turbo_nearest(float y, const turbo_codebook * cb) {
    int lo = 0;
    int hi = cb->n - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (y > cb->thresh[mid]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// the smallest code whose scale maps amax inside the codebook (FORMAT.md step 2)
static int turbo_k_ref(float amax, const turbo_codebook * cb) {
    const float t = amax/cb->cbmax;
    if (t == 0.0f) {
        return 1; // a denormal amax that underflowed: the smallest scale
    }
    int e;
    const float u = 2.0f*frexpf(t, &e);
    int i = 0;
    while (i < 16 && turbo_scale_mant[i] < u) {
        ++i;
    }
    // i == 16 means u > M[15]: the next octave's M[0] = 2 covers it
    const int64_t k = 16*((int64_t) e - 1 + TURBO_EXP_BIAS) + i;
    return k < 1 ? 1 : k > TURBO_KMAX ? TURBO_KMAX : (int) k;
}

// squared error of a sub-block quantized with scale d, accumulated in index order
static float turbo_sub_error(const float * x, float d, const turbo_codebook * cb) {
    const float inv = 1.0f/d;
    float err = 0.0f;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const int   idx = turbo_nearest(x[i]*inv, cb);
        const float r   = x[i] - d*(float) cb->values[idx];
        err = err + r*r;
    }
    return err;
}

// FORMAT.md step 3, scalar: every candidate in increasing order, the first best wins
static int turbo_best_code_ref(const float * xs, int k_ref, const turbo_codebook * cb) {
    float best   = INFINITY;
    int   best_k = k_ref;
    for (int delta = cb->lo; delta <= cb->hi; ++delta) {
        const int   kc  = turbo_clamp_k(k_ref + delta);
        const float err = turbo_sub_error(xs, turbo_k_to_d(kc), cb);
        if (err < best) {
            best   = err;
            best_k = kc;
        }
    }
    return best_k;
}

// FORMAT.md step 6, scalar
static void turbo_indices_ref(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        idx[i] = (uint8_t) turbo_nearest(xs[i]*inv, cb);
    }
}

static const turbo_search turbo_search_ref = { turbo_best_code_ref, turbo_indices_ref };

// FORMAT.md step 0: NaN -> 0, everything else clamped to f16's range
static void turbo_sanitize(const float * GGML_RESTRICT xin, float * GGML_RESTRICT x) {
    for (int i = 0; i < QK_TURBO; ++i) {
        const float v = xin[i];
        x[i] = v != v ? 0.0f : v > TURBO_XMAX ? TURBO_XMAX : v < -TURBO_XMAX ? -TURBO_XMAX : v;
    }
}

// FORMAT.md steps 0-6 for one block: the scale field and the 64 indices
static uint16_t turbo_quantize_block(const float * GGML_RESTRICT xin, uint8_t * GGML_RESTRICT idx,
                                     const turbo_codebook * cb, const turbo_search * search) {
    float x[QK_TURBO];
    turbo_sanitize(xin, x);

    int k[2];
    for (int j = 0; j < 2; ++j) {
        const float * xs = x + j*QK_TURBO_SUB;
        float amax = 0.0f;
        for (int i = 0; i < QK_TURBO_SUB; ++i) {
            amax = fmaxf(amax, fabsf(xs[i]));
        }
        if (amax == 0.0f) {
            k[j] = 0;
            continue;
        }
        k[j] = search->best_code(xs, turbo_k_ref(amax, cb), cb);
    }

    // shared exponent: the smallest E that fits the larger code (FORMAT.md step 5)
    const int k_hi = k[0] > k[1] ? k[0] : k[1];
    const int E = k_hi > 31 ? (k_hi - 24) >> 3 : 0;
    int f[2];
    for (int j = 0; j < 2; ++j) {
        f[j] = k[j] == 0 ? 0 : (k[j] - 8*E < 1 ? 1 : k[j] - 8*E);
    }
    const uint16_t s = (uint16_t) (f[0] | f[1] << 5 | E << 10);

    for (int j = 0; j < 2; ++j) {
        uint8_t * is = idx + j*QK_TURBO_SUB;
        if (f[j] == 0) {
            memset(is, 0, QK_TURBO_SUB);
            continue;
        }
        search->indices(x + j*QK_TURBO_SUB, 1.0f/turbo_k_to_d(8*E + f[j]), cb, is);
    }
    return s;
}

// 2-bit plane of a sub-block: byte l holds indices l, l+8, l+16, l+24
static void turbo_pack2(const uint8_t * idx, uint8_t * qs) {
    for (int l = 0; l < 8; ++l) {
        qs[l] = (uint8_t) ((idx[l] & 3) | (idx[l + 8] & 3) << 2 | (idx[l + 16] & 3) << 4 | (idx[l + 24] & 3) << 6);
    }
}

static inline int turbo_unpack2(const uint8_t * qs, int i) {
    return (qs[i & 7] >> (2*(i >> 3))) & 3;
}

// bit b of each of the 64 indices -> 8 bytes: bit i of the 32-bit little-endian word of each
// sub-block, which is bit i & 7 of byte i >> 3 (turbo3's qh, turbo1's qs, the QJL signs)
static void turbo_pack_bit(const uint8_t * idx, int b, uint8_t * out) {
    memset(out, 0, QK_TURBO/8);
    for (int i = 0; i < QK_TURBO; ++i) {
        out[i >> 3] |= (uint8_t) (((idx[i] >> b) & 1) << (i & 7));
    }
}

static inline int turbo_bit(const uint8_t * q, int i) {
    return (q[i >> 3] >> (i & 7)) & 1;
}

void quantize_row_turbo4_ref(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k) {
    quantize_row_turbo4_with(x, y, k, &turbo_search_ref);
}

void quantize_row_turbo4_with(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k, const turbo_search * search) {
    assert(k % QK_TURBO == 0);
    uint8_t idx[QK_TURBO];
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {
        y[ib].s = turbo_quantize_block(x + ib*QK_TURBO, idx, &turbo_cb4, search);
        for (int j = 0; j < 2; ++j) {
            for (int l = 0; l < 16; ++l) {
                y[ib].qs[16*j + l] = (uint8_t) (idx[32*j + l] | idx[32*j + l + 16] << 4);
            }
        }
    }
}

void quantize_row_turbo3_ref(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k) {
    quantize_row_turbo3_with(x, y, k, &turbo_search_ref);
}

void quantize_row_turbo3_with(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k, const turbo_search * search) {
    assert(k % QK_TURBO == 0);
    uint8_t idx[QK_TURBO];
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {
        y[ib].s = turbo_quantize_block(x + ib*QK_TURBO, idx, &turbo_cb3, search);
        for (int j = 0; j < 2; ++j) {
            turbo_pack2(idx + 32*j, y[ib].qs + 8*j);
        }
        turbo_pack_bit(idx, 2, y[ib].qh);
    }
}

void quantize_row_turbo2_ref(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k) {
    quantize_row_turbo2_with(x, y, k, &turbo_search_ref);
}

void quantize_row_turbo2_with(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k, const turbo_search * search) {
    assert(k % QK_TURBO == 0);
    uint8_t idx[QK_TURBO];
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {
        y[ib].s = turbo_quantize_block(x + ib*QK_TURBO, idx, &turbo_cb2, search);
        for (int j = 0; j < 2; ++j) {
            turbo_pack2(idx + 32*j, y[ib].qs + 8*j);
        }
    }
}

void dequantize_row_turbo4(const block_turbo4 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_TURBO == 0);
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {
        for (int j = 0; j < 2; ++j) {
            const float     d  = turbo_scale(x[ib].s, j);
            const uint8_t * qs = x[ib].qs + 16*j;
            for (int l = 0; l < 16; ++l) {
                y[32*j + l]      = d*(float) kvalues_turbo4[qs[l] & 15];
                y[32*j + l + 16] = d*(float) kvalues_turbo4[qs[l] >> 4];
            }
        }
    }
}

void dequantize_row_turbo3(const block_turbo3 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_TURBO == 0);
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {
        for (int j = 0; j < 2; ++j) {
            const float     d  = turbo_scale(x[ib].s, j);
            const uint8_t * qs = x[ib].qs + 8*j;
            for (int i = 0; i < QK_TURBO_SUB; ++i) {
                const int hi = turbo_bit(x[ib].qh, 32*j + i);
                y[32*j + i] = d*(float) kvalues_turbo3[turbo_unpack2(qs, i) | hi << 2];
            }
        }
    }
}

void dequantize_row_turbo2(const block_turbo2 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_TURBO == 0);
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {
        for (int j = 0; j < 2; ++j) {
            const float     d  = turbo_scale(x[ib].s, j);
            const uint8_t * qs = x[ib].qs + 8*j;
            for (int i = 0; i < QK_TURBO_SUB; ++i) {
                y[32*j + i] = d*(float) kvalues_turbo2[turbo_unpack2(qs, i)];
            }
        }
    }
}

// turbo1: stage 1 of turbo2_qjl, never a cache type of its own
static void quantize_row_turbo1_with(const float * GGML_RESTRICT x, block_turbo1 * GGML_RESTRICT y, int64_t k, const turbo_search * search) {
    assert(k % QK_TURBO == 0);
    uint8_t idx[QK_TURBO];
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {
        y[ib].s = turbo_quantize_block(x + ib*QK_TURBO, idx, &turbo_cb1, search);
        turbo_pack_bit(idx, 0, y[ib].qs);
    }
}

static void dequantize_row_turbo1(const block_turbo1 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {
    assert(k % QK_TURBO == 0);
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {
        for (int j = 0; j < 2; ++j) {
            const float d = turbo_scale(x[ib].s, j);
            for (int i = 0; i < QK_TURBO_SUB; ++i) {
                y[32*j + i] = d*(float) kvalues_turbo1[turbo_bit(x[ib].qs, 32*j + i)];
            }
        }
    }
}

// FORMAT-QJL.md steps 2-4 for one block: x sanitized, x_mse its stage-1 values
static void turbo_qjl_residual(const float * GGML_RESTRICT x, const float * GGML_RESTRICT x_mse,
                               uint16_t * GGML_RESTRICT rn, uint8_t * GGML_RESTRICT qr) {
    float r[QK_TURBO];
    float acc = 0.0f;
    for (int i = 0; i < QK_TURBO; ++i) {
        r[i] = x[i] - x_mse[i];
        acc  = acc + r[i]*r[i];
    }
    *rn = GGML_FP32_TO_FP16(fminf(sqrtf(acc), 65504.0f));

    turbo_qjl_project(r);
    uint8_t neg[QK_TURBO];
    for (int i = 0; i < QK_TURBO; ++i) {
        neg[i] = r[i] < 0.0f;
    }
    turbo_pack_bit(neg, 0, qr);
}

// y[0..63] += |r| * TURBO_QJL_SCALE * D2 Hu D3 Hu s: the unbiased residual of a block
static void turbo_qjl_add_residual(uint16_t rn, const uint8_t * GGML_RESTRICT qr, float * GGML_RESTRICT y) {
    float w[QK_TURBO];
    for (int i = 0; i < QK_TURBO; ++i) {
        w[i] = turbo_bit(qr, i) ? -1.0f : 1.0f;
    }
    // D2 Hu D3 Hu: the transpose of turbo_qjl_project, exact on +-1 inputs
    turbo_hu64(w);
    for (int i = 0; i < QK_TURBO; ++i) {
        w[i] *= (float) turbo_qjl_signs[QK_TURBO + i];
    }
    turbo_hu64(w);
    const float g = GGML_FP16_TO_FP32(rn)*TURBO_QJL_SCALE;
    for (int i = 0; i < QK_TURBO; ++i) {
        y[i] = y[i] + g*(w[i]*(float) turbo_qjl_signs[i]);
    }
}

#define TURBO_QJL_ROW(name, stage)                                                                \
void quantize_row_##name##_with(const float * GGML_RESTRICT x, block_##name * GGML_RESTRICT y,    \
                                int64_t k, const turbo_search * search) {                         \
    assert(k % QK_TURBO == 0);                                                                    \
    float xs[QK_TURBO], x_mse[QK_TURBO];                                                          \
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {                                                 \
        turbo_sanitize(x + ib*QK_TURBO, xs);                                                      \
        quantize_row_##stage##_with(xs, &y[ib].mse, QK_TURBO, search);                            \
        dequantize_row_##stage(&y[ib].mse, x_mse, QK_TURBO);                                      \
        turbo_qjl_residual(xs, x_mse, &y[ib].rn, y[ib].qr);                                       \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void quantize_row_##name##_ref(const float * GGML_RESTRICT x, block_##name * GGML_RESTRICT y, int64_t k) { \
    quantize_row_##name##_with(x, y, k, &turbo_search_ref);                                       \
}                                                                                                 \
                                                                                                  \
void dequantize_row_##name(const block_##name * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    assert(k % QK_TURBO == 0);                                                                    \
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {                                  \
        dequantize_row_##stage(&x[ib].mse, y, QK_TURBO);                                          \
        turbo_qjl_add_residual(x[ib].rn, x[ib].qr, y);                                            \
    }                                                                                             \
}

TURBO_QJL_ROW(turbo2_qjl, turbo1)
TURBO_QJL_ROW(turbo3_qjl, turbo2)
TURBO_QJL_ROW(turbo4_qjl, turbo3)

bool turbo_qjl_validate_row(enum ggml_type type, const void * data, size_t nblocks) {
    const size_t bs = ggml_type_size(type);
    const size_t rn = type == GGML_TYPE_TURBO2_QJL ? offsetof(block_turbo2_qjl, rn) :
                      type == GGML_TYPE_TURBO3_QJL ? offsetof(block_turbo3_qjl, rn) :
                                                     offsetof(block_turbo4_qjl, rn);
    for (size_t i = 0; i < nblocks; ++i) {
        uint16_t h;
        memcpy(&h, (const char *) data + i*bs + rn, sizeof(h));
        // sign bit clear, exponent not all ones: finite and non-negative
        if ((h & 0x8000) != 0 || (h & 0x7c00) == 0x7c00) {
            fprintf(stderr, "%s: %s block %zu has residual norm 0x%04x, not a finite non-negative fp16\n",
                    __func__, ggml_type_name(type), i, h);
            return false;
        }
    }
    return true;
}

// ggml_quantize_chunk entry points: rows are independent, the imatrix is not used
#define TURBO_QUANTIZE_CHUNK(name, block)                                                         \
size_t quantize_##name(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, \
                       int64_t n_per_row, const float * imatrix) {                               \
    GGML_UNUSED(imatrix);                                                                        \
    const size_t row_size = ggml_row_size(GGML_TYPE_##block, n_per_row);                         \
    for (int64_t r = 0; r < nrows; ++r) {                                                        \
        quantize_row_##name##_ref(src + r*n_per_row, (void *) ((char *) dst + r*row_size), n_per_row); \
    }                                                                                            \
    return nrows*row_size;                                                                       \
}

TURBO_QUANTIZE_CHUNK(turbo2, TURBO2)
TURBO_QUANTIZE_CHUNK(turbo3, TURBO3)
TURBO_QUANTIZE_CHUNK(turbo4, TURBO4)
TURBO_QUANTIZE_CHUNK(turbo2_qjl, TURBO2_QJL)
TURBO_QUANTIZE_CHUNK(turbo3_qjl, TURBO3_QJL)
TURBO_QUANTIZE_CHUNK(turbo4_qjl, TURBO4_QJL)

bool ggml_is_turbo(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2:
        case GGML_TYPE_TURBO3:
        case GGML_TYPE_TURBO4:
        case GGML_TYPE_TURBO2_QJL:
        case GGML_TYPE_TURBO3_QJL:
        case GGML_TYPE_TURBO4_QJL:
            return true;
        default:
            return false;
    }
}

void ggml_turbo_signs(int n, float * dst) {
    GGML_ASSERT(n > 0 && n <= (int) (sizeof(turbo_signs)/sizeof(turbo_signs[0])));
    for (int i = 0; i < n; ++i) {
        dst[i] = (float) turbo_signs[i];
    }
}
