// tqllama: the trellis-coded turbo blocks (turbo2t, turbo3t) and the scalar pieces of their
// rule, in ggml-turbo-common.h's common subset (included first: the language section, the
// exact-arithmetic macros and the scale mantissas are its). The contract is
// docs/FORMAT-TRELLIS.md of tqllama; the tables are the generated ggml-trellis-tables.h.
//
// A block is one little-endian bit string: bits 0..9 the scale code, bits 10..15 the start
// prefix (the L - k bits before value 0), then k bits per value. Value t decodes from the L
// bits that start at bit 10 + k t (its trellis state); the encoder picks the whole string
// with a Viterbi search (ggml-trellis-quants.c).
#pragma once

#include "ggml-turbo-common.h"
#include "ggml-trellis-tables.h"

#if defined(GGML_TURBO_DECL_C) || defined(GGML_TURBO_DECL_CPP)
#include <math.h>
#endif

#define QK_TRELLIS 64

typedef struct {
    uint16_t s;                  // scale code (bits 0..9), start prefix (bits 10..15)
    uint8_t  qs[QK_TRELLIS/4];   // 2 bits per value, value 0 first
} block_turbo2t;

typedef struct {
    uint16_t s;
    uint8_t  qs[3*QK_TRELLIS/8]; // 3 bits per value
} block_turbo3t;

TURBO_STATIC_ASSERT(sizeof(block_turbo2t) == 18, "wrong turbo2t block size");
TURBO_STATIC_ASSERT(sizeof(block_turbo3t) == 26, "wrong turbo3t block size");
TURBO_STATIC_ASSERT(TRELLIS_SCALE_BITS + TURBO2T_L - TURBO2T_K == 16, "turbo2t: the prefix must end the scale word");
TURBO_STATIC_ASSERT(TRELLIS_SCALE_BITS + TURBO3T_L - TURBO3T_K == 16, "turbo3t: the prefix must end the scale word");

// d(kc) = M[kc & 15] * 2^((kc >> 4) - TRELLIS_SCALE_BIAS), 0 for the zero block's code 0;
// the power of two is built from its bits (every code's exponent is a normal float's)
TURBO_FN float trellis_k_to_d(int kc) {
    return kc == 0 ? 0.0f :
        TURBO_MUL(turbo_scale_mant[kc & 15], turbo_as_float((uint32_t) ((kc >> 4) - TRELLIS_SCALE_BIAS + 127) << 23));
}

TURBO_FN int trellis_clamp_k(int kc) {
    return kc < 1 ? 1 : kc > TRELLIS_KMAX ? TRELLIS_KMAX : kc;
}

// The state of value t of a block of `size` bytes: the L bits from bit 10 + k t. A window
// spans at most two bytes; the second is read only inside the block (turbo2t's last window
// ends at its last bit, in byte 17 alone).
TURBO_FN int trellis_state(TURBO_DEVICE const uint8_t * b, int size, int k, int L, int t) {
    const int p  = TRELLIS_SCALE_BITS + k*t;
    const int i  = p >> 3;
    const int lo = b[i];
    const int hi = i + 1 < size ? b[i + 1] : 0;
    return ((lo | hi << 8) >> (p & 7)) & ((1 << L) - 1);
}

// ldexpf(x, n) for n in -126..253: multiplications by powers of two built from their bits,
// the first exact (n > 127 scales a value below 2^-127 up), the last rounded once
TURBO_FN float trellis_ldexp(float x, int n) {
    TURBO_EXACT_MATH
    if (n > 127) {
        x  = TURBO_MUL(x, turbo_as_float(254u << 23)); // 2^127
        n -= 127;
    }
    return TURBO_MUL(x, turbo_as_float((uint32_t) (n + 127) << 23));
}

// Step 2 from amax > 0 and the block's sum of squares: am, ea = frexp(amax), ss = the sum of
// y_i * y_i in index order, y_i = ldexp(x_i, -ea) (trellis_ldexp). Returns k_ref.
TURBO_FN int trellis_k_ref_ss(float am, int ea, float ss) {
    TURBO_EXACT_MATH
    float r = TURBO_SQRT(TURBO_DIV(ss, (float) QK_TRELLIS));
    const float floor = TURBO_MUL(am, TRELLIS_AMAX_FLOOR);
    r = r > floor ? r : floor;
    int er;
    const float u = TURBO_MUL(turbo_frexp(r, &er), 2.0f);
    int i = 0;
    while (i < 16 && turbo_scale_mant[i] < u) {
        ++i;
    }
    // i == 16: u > M[15], and the next octave's M[0] = 2 covers it
    return trellis_clamp_k(16*(er + ea - 1 - TRELLIS_UNIT_LOG2 + TRELLIS_SCALE_BIAS) + i);
}

// Steps 0-2 for a block of 64: xs <- the sanitized values, returns the reference scale code
// (the smallest whose d is at least max(RMS, amax * 5/16) / 2^UNIT_LOG2), or 0 for a zero
// block. The RMS is taken of the block scaled by 2^-e_a (amax -> [0.5, 1)): exact, and
// nothing under- or overflows (turbo_frexp normalizes a subnormal amax).
TURBO_FN int trellis_k_ref(TURBO_DEVICE const float * x, TURBO_THREAD float * xs) {
    TURBO_EXACT_MATH
    float amax = 0.0f;
    for (int i = 0; i < QK_TRELLIS; ++i) {
        const float v = turbo_sanitize(x[i]);
        const float a = v < 0.0f ? -v : v;
        xs[i] = v;
        amax  = a > amax ? a : amax;
    }
    if (amax == 0.0f) {
        return 0;
    }
    int ea;
    const float am = turbo_frexp(amax, &ea);
    float ss = 0.0f;
    for (int i = 0; i < QK_TRELLIS; ++i) {
        const float y = trellis_ldexp(xs[i], -ea);
        ss = TURBO_ADD(ss, TURBO_MUL(y, y));
    }
    return trellis_k_ref_ss(am, ea, ss);
}
