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

static const turbo_codebook turbo_cb5 = { TURBO_CODEBOOK(5) };
static const turbo_codebook turbo_cb4 = { TURBO_CODEBOOK(4) };
static const turbo_codebook turbo_cb3 = { TURBO_CODEBOOK(3) };
static const turbo_codebook turbo_cb2 = { TURBO_CODEBOOK(2) };
static const turbo_codebook turbo_cb1 = { TURBO_CODEBOOK(1) };

// the scalar inner loops of the rule (ggml-turbo-common.h)
static int turbo_best_code_ref(const float * xs, int k_ref, const turbo_codebook * cb) {
    return turbo_best_code(xs, k_ref, cb->values, cb->thresh, cb->n, cb->lo, cb->hi);
}

static void turbo_indices_ref(const float * xs, float inv, const turbo_codebook * cb, uint8_t * idx) {
    turbo_indices(xs, inv, cb->thresh, cb->n, idx);
}

static const turbo_search turbo_search_ref = { turbo_best_code_ref, turbo_indices_ref };

// FORMAT.md steps 0-6 for one block with the inner loops of a turbo_search
TURBO_QUANTIZE_BLOCK(turbo_quantize_block_with, cb->cbmax,
                     search->best_code(xs, k_ref, cb), search->indices(xs, inv, cb, is),
                     const turbo_codebook * cb, const turbo_search * search)

// FORMAT.md step 0 for a block, for the _qjl types' residual
static void turbo_sanitize_block(const float * GGML_RESTRICT xin, float * GGML_RESTRICT x) {
    for (int i = 0; i < QK_TURBO; ++i) {
        x[i] = turbo_sanitize(xin[i]);
    }
}

// FORMAT.md steps 0-6 for each block of a row, then `pack`, a statement that packs the
// block's indices idx into y[ib] (FORMAT.md "Index packing")
#define TURBO_QUANTIZE_ROW(B, pack)                                                               \
void quantize_row_turbo##B##_ref(const float * GGML_RESTRICT x, block_turbo##B * GGML_RESTRICT y, int64_t k) { \
    quantize_row_turbo##B##_with(x, y, k, &turbo_search_ref);                                     \
}                                                                                                 \
                                                                                                  \
void quantize_row_turbo##B##_with(const float * GGML_RESTRICT x, block_turbo##B * GGML_RESTRICT y, int64_t k, \
                                  const turbo_search * search) {                                  \
    assert(k % QK_TURBO == 0);                                                                    \
    uint8_t idx[QK_TURBO];                                                                        \
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {                                                 \
        y[ib].s = turbo_quantize_block_with(x + ib*QK_TURBO, idx, &turbo_cb##B, search);          \
        pack;                                                                                     \
    }                                                                                             \
}

TURBO_QUANTIZE_ROW(5, (turbo_pack4(idx, y[ib].qs), turbo_pack_bit(idx, 4, y[ib].qh)))
TURBO_QUANTIZE_ROW(4, turbo_pack4(idx, y[ib].qs))
TURBO_QUANTIZE_ROW(3, (turbo_pack2(idx, y[ib].qs), turbo_pack_bit(idx, 2, y[ib].qh)))
TURBO_QUANTIZE_ROW(2, turbo_pack2(idx, y[ib].qs))

// FORMAT.md dequantization, a sub-block at a time (ggml-turbo-common.h)
#define TURBO_DEQUANTIZE_ROW(storage, B)                                                          \
storage void dequantize_row_turbo##B(const block_turbo##B * GGML_RESTRICT x, float * GGML_RESTRICT y, \
                                     int64_t k) {                                                 \
    assert(k % QK_TURBO == 0);                                                                    \
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib, y += QK_TURBO) {                                  \
        turbo##B##_dequantize(&x[ib], 0, QK_TURBO_SUB, y);                                        \
        turbo##B##_dequantize(&x[ib], QK_TURBO_SUB, QK_TURBO_SUB, y + QK_TURBO_SUB);              \
    }                                                                                             \
}

TURBO_DEQUANTIZE_ROW(, 2)
TURBO_DEQUANTIZE_ROW(, 3)
TURBO_DEQUANTIZE_ROW(, 4)
TURBO_DEQUANTIZE_ROW(, 5)

// turbo1: stage 1 of turbo2_qjl, never a cache type of its own
static void quantize_row_turbo1_with(const float * GGML_RESTRICT x, block_turbo1 * GGML_RESTRICT y, int64_t k, const turbo_search * search) {
    assert(k % QK_TURBO == 0);
    uint8_t idx[QK_TURBO];
    for (int64_t ib = 0; ib < k/QK_TURBO; ++ib) {
        y[ib].s = turbo_quantize_block_with(x + ib*QK_TURBO, idx, &turbo_cb1, search);
        turbo_pack_bit(idx, 0, y[ib].qs);
    }
}

TURBO_DEQUANTIZE_ROW(static, 1)

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
        turbo_sanitize_block(x + ib*QK_TURBO, xs);                                                      \
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

TURBO_QUANTIZE_CHUNK(turbo2, TURBO2)
TURBO_QUANTIZE_CHUNK(turbo3, TURBO3)
TURBO_QUANTIZE_CHUNK(turbo4, TURBO4)
TURBO_QUANTIZE_CHUNK(turbo5, TURBO5)
TURBO_QUANTIZE_CHUNK(turbo2_qjl, TURBO2_QJL)
TURBO_QUANTIZE_CHUNK(turbo3_qjl, TURBO3_QJL)
TURBO_QUANTIZE_CHUNK(turbo4_qjl, TURBO4_QJL)

bool ggml_is_turbo(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2:
        case GGML_TYPE_TURBO3:
        case GGML_TYPE_TURBO4:
        case GGML_TYPE_TURBO5:
        case GGML_TYPE_TURBO2_QJL:
        case GGML_TYPE_TURBO3_QJL:
        case GGML_TYPE_TURBO4_QJL:
        case GGML_TYPE_TURBO2T:
        case GGML_TYPE_TURBO3T:
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
