// tqllama: the turbo KV-cache types (turbo2, turbo3, turbo4) on Metal.
//
// One header, two languages. The block layouts and the quantize/dequantize helpers below
// compile as Metal Shading Language (the kernels include this file) and as plain C++
// (tests/metal/turbo_helpers.cpp compiles them with g++ and compares their bytes with the
// NumPy reference), so the rule the GPU runs is the rule that is tested. The contract is
// docs/FORMAT.md of tqllama; every constant and codebook comes from the generated
// ggml-turbo-tables.h, so a new rule or codebook is an edit of the steps below, never of
// numbers here.
#pragma once

#if defined(__METAL_VERSION__)
#define TURBO_DEVICE device
#define TURBO_THREAD thread
// FORMAT.md: IEEE float32, one rounding per operation, no fused multiply-add
#define TURBO_EXACT_MATH _Pragma("METAL fp math_mode(safe)") _Pragma("METAL fp contract(off)")
#define TURBO_TABLE_BEGIN(type, name, size) static const constant type name[size] = {
#define TURBO_TABLE_END() };
static inline float    turbo_as_float(uint32_t b) { return as_type<float>(b); }
static inline uint32_t turbo_as_uint(float f)     { return as_type<uint32_t>(f); }
#else
#include <cstdint>
#include <cstring>
#define TURBO_DEVICE
#define TURBO_THREAD
#define TURBO_EXACT_MATH // C++ builds of this header pass -ffp-contract=off
static inline float turbo_as_float(uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof(f));
    return f;
}
static inline uint32_t turbo_as_uint(float f) {
    uint32_t b;
    std::memcpy(&b, &f, sizeof(b));
    return b;
}
#endif

#include "ggml-turbo-tables.h"

#define QK_TURBO     64  // values per block
#define QK_TURBO_SUB 32  // values per sub-block (one scale each)

// the layouts of ggml-turbo-quants.h (FORMAT.md "Blocks"); the bit-exact test compares
// bytes written through these structs with the reference's
typedef struct {
    uint16_t s;              // shared exponent E (6 bits) + fine scale codes f0, f1 (5 bits each)
    uint8_t  qs[QK_TURBO/2]; // 4-bit indices, q4_0 order per sub-block
} block_turbo4;

typedef struct {
    uint16_t s;
    uint8_t  qs[QK_TURBO/4]; // low 2 bits of the 3-bit indices
    uint8_t  qh[QK_TURBO/8]; // high bit: bit i of the 32-bit word of each sub-block
} block_turbo3;

typedef struct {
    uint16_t s;
    uint8_t  qs[QK_TURBO/4]; // 2-bit indices
} block_turbo2;

static_assert(sizeof(block_turbo4) == 34, "wrong turbo4 block size");
static_assert(sizeof(block_turbo3) == 26, "wrong turbo3 block size");
static_assert(sizeof(block_turbo2) == 18, "wrong turbo2 block size");

// a codebook, its midpoints and the window of its scale search (FORMAT.md "Codebooks")
template <int B> struct turbo_cb;

#define TURBO_CB(B)                                                                      \
template <> struct turbo_cb<B> {                                                         \
    static constexpr int n  = 1 << B;                                                    \
    static constexpr int lo = TURBO##B##_SEARCH_LO;                                      \
    static constexpr int hi = TURBO##B##_SEARCH_HI;                                      \
    static float cbmax()        { return (float) TURBO##B##_CBMAX; }                     \
    static float value(int i)   { return (float) kvalues_turbo##B[i]; }                  \
    static float thresh(int t)  { return kthresh_turbo##B[t]; }                          \
};
TURBO_CB(2)
TURBO_CB(3)
TURBO_CB(4)
#undef TURBO_CB

// d(k) = M[k & 15] * 2^((k >> 4) - TURBO_EXP_BIAS), the power of two built from its bits
static inline float turbo_k_to_d(int k) {
    return turbo_scale_mant[k & 15] * turbo_as_float((uint32_t) ((k >> 4) - TURBO_EXP_BIAS + 127) << 23);
}

// scale of sub-block j of a block whose scale field is s; 0 for a zero sub-block
static inline float turbo_scale(uint16_t s, int j) {
    const int f = (s >> (5*j)) & 31;
    return f == 0 ? 0.0f : turbo_k_to_d(8*(s >> 10) + f);
}

static inline int turbo_clamp_k(int k) {
    return k < 1 ? 1 : k > TURBO_KMAX ? TURBO_KMAX : k;
}

// step 0: NaN -> 0, clamp to [-XMAX, XMAX]. NaN is tested on the bits: a fast-math
// compiler may fold v != v to false.
static inline float turbo_sanitize(float v) {
    if ((turbo_as_uint(v) & 0x7fffffffu) > 0x7f800000u) {
        return 0.0f;
    }
    return v > TURBO_XMAX ? TURBO_XMAX : v < -TURBO_XMAX ? -TURBO_XMAX : v;
}

// idx = #{t : y > thresh[t]}: the thresholds ascend, so a binary search counts them
template <int B>
static inline int turbo_nearest(float y) {
    int lo = 0;
    int hi = turbo_cb<B>::n - 1;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (y > turbo_cb<B>::thresh(mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// step 2: the smallest code whose scale maps amax inside the codebook. frexp is read from
// the bits of t (MSL's and C++'s frexp differ in signature; subnormals are normalized).
template <int B>
static inline int turbo_k_ref(float amax) {
    TURBO_EXACT_MATH
    const float t = amax/turbo_cb<B>::cbmax();
    if (t == 0.0f) {
        return 1; // a subnormal amax that underflowed: the smallest scale
    }
    const uint32_t bits = turbo_as_uint(t);
    uint32_t mant = bits & 0x7fffffu;
    int e = (int) (bits >> 23) - 126; // t = (1.mant / 2) * 2^e
    if ((bits >> 23) == 0) {
        e = -125;
        while ((mant & 0x800000u) == 0) {
            mant <<= 1;
            --e;
        }
        mant &= 0x7fffffu;
    }
    const float u = turbo_as_float(mant | 127u << 23); // 2*m, in [1, 2)
    int i = 0;
    while (i < 16 && turbo_scale_mant[i] < u) {
        ++i;
    }
    // i == 16: u > M[15], and the next octave's M[0] = 2 covers it
    return turbo_clamp_k(16*(e - 1 + TURBO_EXP_BIAS) + i);
}

// step 3: squared error of a sub-block quantized with scale d, accumulated in index order
template <int B>
static inline float turbo_sub_error(TURBO_DEVICE const float * x, float d) {
    TURBO_EXACT_MATH
    const float inv = 1.0f/d;
    float err = 0.0f;
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float v = turbo_sanitize(x[i]);
        const float r = v - d*turbo_cb<B>::value(turbo_nearest<B>(v*inv));
        err = err + r*r;
    }
    return err;
}

// FORMAT.md steps 0-6 for one block of 64 floats: the scale field, and the indices in idx
template <int B>
static inline uint16_t turbo_quantize_block(TURBO_DEVICE const float * x, TURBO_THREAD uint8_t * idx) {
    TURBO_EXACT_MATH
    int k[2];
    for (int j = 0; j < 2; ++j) {
        TURBO_DEVICE const float * xs = x + j*QK_TURBO_SUB;
        float amax = 0.0f;
        for (int i = 0; i < QK_TURBO_SUB; ++i) {
            const float v = turbo_sanitize(xs[i]);
            const float a = v < 0.0f ? -v : v;
            amax = a > amax ? a : amax;
        }
        if (amax == 0.0f) {
            k[j] = 0;
            continue;
        }
        const int k_ref = turbo_k_ref<B>(amax);
        float best   = 0.0f;
        int   best_k = 0;
        for (int delta = turbo_cb<B>::lo; delta <= turbo_cb<B>::hi; ++delta) {
            const int   kc  = turbo_clamp_k(k_ref + delta);
            const float err = turbo_sub_error<B>(xs, turbo_k_to_d(kc));
            if (delta == turbo_cb<B>::lo || err < best) { // the first candidate wins ties
                best   = err;
                best_k = kc;
            }
        }
        k[j] = best_k;
    }

    // step 5: the smallest E that fits the larger code; the other code may rise to 1
    const int k_hi = k[0] > k[1] ? k[0] : k[1];
    const int E    = k_hi - 31 + 7 > 0 ? (k_hi - 31 + 7) >> 3 : 0;
    int f[2];
    for (int j = 0; j < 2; ++j) {
        f[j] = k[j] == 0 ? 0 : (k[j] - 8*E < 1 ? 1 : k[j] - 8*E);
    }

    // step 6: the indices with the final scales
    for (int j = 0; j < 2; ++j) {
        TURBO_DEVICE const float * xs = x + j*QK_TURBO_SUB;
        const float inv = f[j] == 0 ? 0.0f : 1.0f/turbo_k_to_d(8*E + f[j]);
        for (int i = 0; i < QK_TURBO_SUB; ++i) {
            idx[j*QK_TURBO_SUB + i] = f[j] == 0 ? 0 : (uint8_t) turbo_nearest<B>(turbo_sanitize(xs[i])*inv);
        }
    }
    return (uint16_t) (f[0] | f[1] << 5 | E << 10);
}

// 2-bit plane of a sub-block: byte l holds indices l, l+8, l+16, l+24
static inline void turbo_pack2(TURBO_THREAD const uint8_t * idx, TURBO_DEVICE uint8_t * qs) {
    for (int l = 0; l < 8; ++l) {
        qs[l] = (uint8_t) ((idx[l] & 3) | (idx[l + 8] & 3) << 2 | (idx[l + 16] & 3) << 4 | (idx[l + 24] & 3) << 6);
    }
}

// one block: the signature of the quantize_func of Metal's set_rows and cpy templates
void quantize_turbo4(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo4 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block<4>(src, idx);
    for (int j = 0; j < 2; ++j) {
        for (int l = 0; l < 16; ++l) {
            dst.qs[16*j + l] = (uint8_t) (idx[32*j + l] | idx[32*j + l + 16] << 4);
        }
    }
}

void quantize_turbo3(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo3 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block<3>(src, idx);
    for (int j = 0; j < 2; ++j) {
        turbo_pack2(idx + 32*j, dst.qs + 8*j);
        uint32_t h = 0;
        for (int i = 0; i < QK_TURBO_SUB; ++i) {
            h |= (uint32_t) (idx[32*j + i] >> 2) << i;
        }
        for (int b = 0; b < 4; ++b) {
            dst.qh[4*j + b] = (uint8_t) (h >> 8*b);
        }
    }
}

void quantize_turbo2(TURBO_DEVICE const float * src, TURBO_DEVICE block_turbo2 & dst) {
    uint8_t idx[QK_TURBO];
    dst.s = turbo_quantize_block<2>(src, idx);
    for (int j = 0; j < 2; ++j) {
        turbo_pack2(idx + 32*j, dst.qs + 8*j);
    }
}

// the codebook index of value i (0..63) of a block (FORMAT.md "Index packing")
static inline int turbo_index(TURBO_DEVICE const block_turbo4 * b, int i) {
    const uint8_t q = b->qs[16*(i >> 5) + (i & 15)];
    return (i & 16) ? q >> 4 : q & 15;
}

static inline int turbo_index(TURBO_DEVICE const block_turbo2 * b, int i) {
    return (b->qs[8*(i >> 5) + (i & 7)] >> (2*((i & 31) >> 3))) & 3;
}

static inline int turbo_index(TURBO_DEVICE const block_turbo3 * b, int i) {
    const int lo = (b->qs[8*(i >> 5) + (i & 7)] >> (2*((i & 31) >> 3))) & 3;
    const int hi = (b->qh[4*(i >> 5) + ((i & 31) >> 3)] >> (i & 7)) & 1;
    return lo | hi << 2;
}

// n values of a block from value i0 on (within one sub-block: n divides 32, i0 % n == 0)
template <int B, typename block_t>
static inline void turbo_dequantize(TURBO_DEVICE const block_t * b, int i0, int n, TURBO_THREAD float * y) {
    TURBO_EXACT_MATH
    const float d = turbo_scale(b->s, i0 >> 5);
    for (int i = 0; i < n; ++i) {
        y[i] = d*turbo_cb<B>::value(turbo_index(b, i0 + i));
    }
}

#if defined(__METAL_VERSION__)
// the two forms the kernel templates take: 16 values (il = 0..3, mul_mm/get_rows/cpy/FA)
// and 4 values (il = 0..15, the FA vec kernel), in the order of the row
#define TURBO_DEQUANTIZE(B)                                                                       \
template <typename type4x4>                                                                       \
void dequantize_turbo##B(device const block_turbo##B * xb, short il, thread type4x4 & reg) {      \
    float4x4 reg_f;                                                                               \
    turbo_dequantize<B>(xb, 16*il, 16, (thread float *) &reg_f);                                  \
    reg = (type4x4) reg_f;                                                                        \
}                                                                                                 \
template <typename type4>                                                                         \
void dequantize_turbo##B##_t4(device const block_turbo##B * xb, short il, thread type4 & reg) {   \
    float4 reg_f;                                                                                 \
    turbo_dequantize<B>(xb, 4*il, 4, (thread float *) &reg_f);                                    \
    reg = (type4) reg_f;                                                                          \
}
TURBO_DEQUANTIZE(2)
TURBO_DEQUANTIZE(3)
TURBO_DEQUANTIZE(4)
#undef TURBO_DEQUANTIZE
#endif
