// tqllama: the trellis-coded turbo KV-cache types (turbo2t, turbo3t) on Metal.
//
// The blocks, the window decode, the scale and the scalar pieces of the quantization rule
// (steps 0-2: trellis_k_ref) are ggml-trellis-common.h's, which C and CUDA share; the
// contract is docs/FORMAT-TRELLIS.md of tqllama. This file gives the kernels
//   - trellis_dequantize: n values of a block from value i0 on, each value's state read from
//     the block's own bytes (trellis_state: never a byte past the block), and the two forms
//     the kernel templates take (16 values: get_rows, cpy, flash attention, its f16
//     conversion; 4 values: the flash-attention vec kernel);
//   - trellis_quantize_block_simd: steps 0-5 for one block of 64 by one SIMD group of 32
//     threads (SET_ROWS and CPY F32 -> trellis, kernels/quantize.metal), bit-exact with
//     ggml-trellis-quants.c: every lane runs steps 0-2 itself (trellis_k_ref: the same
//     sequential sum as the reference); in the Viterbi search of step 4, lane l owns the
//     states 32 i + l (8 for turbo2t, 16 for turbo3t), whose trellis nodes (the low L - k = 6
//     bits) are l and l + 32, so lane l also picks the best predecessor of nodes l and
//     l + 32: the path errors go through threadgroup memory (double-buffered, one barrier
//     per step), the predecessors are scanned in order with a strict `<` (the first of equal
//     minima), the back pointers stay in threadgroup memory; the final minimum is a lane
//     minimum then a scan of the 32 lane minima on (error, state), the smallest state
//     winning ties; every lane traces the path back and keeps the block byte it writes. All
//     float arithmetic is TURBO_ADD/_SUB/_MUL under TURBO_EXACT_MATH (no contraction).
//
// It compiles as Metal Shading Language (kernels include it) and as plain C++: the C++
// includer (tests/metal/trellis_helpers.cpp, which compares the bytes with the NumPy
// reference) defines what the encoder takes from MSL besides the common subset: the
// `threadgroup` address space, threadgroup_barrier and mem_flags::mem_threadgroup (there: 32
// fibers, one per lane). The encoder's threadgroup is one SIMD group, so a threadgroup barrier
// orders the lanes' threadgroup-memory accesses.
#pragma once

#include "turbo.h"
#include "ggml-trellis-common.h"

#if defined(__METAL_VERSION__)
#define TRELLIS_UNROLL _Pragma("clang loop unroll(full)")
#else
#define TRELLIS_UNROLL
#endif

#define TRELLIS_SIMD 32 // lanes of the SIMD group that quantizes a block

// A trellis type: its block, k bits per value, L-bit states, the block size in bytes, and its
// table: c(s) = table[s], or with `sign` table[s >> 1] negated for odd s (bit 0 of the state,
// the oldest bit of the window; an integer negation: a zero entry stays +0)
template <typename block_t> struct trellis_metal;

#define TRELLIS_METAL_TRAITS(name, NAME)                                                        \
template <> struct trellis_metal<block_##name> {                                               \
    enum { k = NAME##_K, L = NAME##_L, sign = NAME##_SIGNED, size = sizeof(block_##name) };    \
    static int code(int s) {                                                                   \
        const int c = trellis_table_##name[s >> sign];                                         \
        return sign && (s & 1) ? -c : c;                                                       \
    }                                                                                          \
    static int search(int c) { return trellis_search_##name[c]; }                             \
};
TRELLIS_METAL_TRAITS(turbo2t, TURBO2T)
TRELLIS_METAL_TRAITS(turbo3t, TURBO3T)
#undef TRELLIS_METAL_TRAITS

// ------------------------------------------------------------------------------------------
// decoding (FORMAT-TRELLIS.md "The state of value t", "The scale", "Reconstruction")
// ------------------------------------------------------------------------------------------

// values i0 .. i0 + n - 1 (within the block's 64) to y: d * c(s_t); a zero block gives 0 * c
template <typename block_t>
TURBO_FN void trellis_dequantize(TURBO_DEVICE const block_t * b, int i0, int n, TURBO_THREAD float * y) {
    TURBO_EXACT_MATH
    typedef trellis_metal<block_t> tt;
    const float d = trellis_k_to_d(b->s & TRELLIS_KMAX);
    for (int i = 0; i < n; ++i) {
        const int s = trellis_state((TURBO_DEVICE const uint8_t *) b, tt::size, tt::k, tt::L, i0 + i);
        y[i] = TURBO_MUL(d, (float) tt::code(s));
    }
}

// ------------------------------------------------------------------------------------------
// the quantizer: one SIMD group per block (FORMAT-TRELLIS.md steps 0-5)
// ------------------------------------------------------------------------------------------

// The SIMD group's threadgroup scratch (6.5 KB for turbo2t, 8.5 KB for turbo3t)
template <typename block_t>
struct trellis_scratch {
    float   D[2][1 << trellis_metal<block_t>::L];   // the path errors of a step, double-buffered
    float   x[QK_TRELLIS];                          // the sanitized block
    float   err[TRELLIS_SIMD];                      // each lane's smallest final error ...
    int     state[TRELLIS_SIMD];                    // ... and its state
    uint8_t back[QK_TRELLIS][1 << (trellis_metal<block_t>::L - trellis_metal<block_t>::k)]; // back[t][m]: node m's best predecessor a at step t
};

// Steps 0-5 for the block of 64 floats at x into the block at out, by the 32 lanes of one
// SIMD group (lane = thread_index_in_simdgroup), all of which call it with the same x, out
// and scratch sm. Lane l < sizeof(block) writes byte l of the block.
template <typename block_t>
TURBO_FN void trellis_quantize_block_simd(TURBO_DEVICE const float * x, TURBO_DEVICE uint8_t * out,
                                          threadgroup trellis_scratch<block_t> * sm, const int lane) {
    TURBO_EXACT_MATH
    typedef trellis_metal<block_t> tt;
    constexpr int k  = tt::k;
    constexpr int K  = 1 << k;                     // predecessors of a node
    constexpr int M  = 1 << (tt::L - tt::k);       // trellis nodes
    constexpr int NS = (1 << tt::L)/TRELLIS_SIMD;  // states per lane
    constexpr int pb = tt::L - tt::k;              // prefix bits
    static_assert(M == 2*TRELLIS_SIMD, "a lane owns two trellis nodes");
    static_assert(tt::size <= TRELLIS_SIMD, "a lane per byte of the block");

    // steps 0-2, every lane alike (the reference's own code): xs <- the sanitized values
    float xs[QK_TRELLIS];
    const int k_ref = trellis_k_ref(x, xs);
    if (k_ref == 0) { // the whole SIMD group: a zero block is every byte 0
        if (lane < tt::size) {
            out[lane] = 0;
        }
        return;
    }
    sm->x[lane]                = xs[lane];
    sm->x[lane + TRELLIS_SIMD] = xs[lane + TRELLIS_SIMD];
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // steps 3-4: the candidates in order, the first of equal errors wins (strict <; the
    // reference starts from +inf, here the first candidate is taken as such: the same, as
    // every path error is finite, and no infinity meets Metal's fast-math defaults)
    float err_best  = 0.0f;
    int   kc_best   = 0;
    int   s0_best   = 0;
    int   byte_best = 0;
    for (int c = 0; c < TRELLIS_N_SEARCH; ++c) {
        const int   kc = trellis_clamp_k(k_ref + tt::search(c));
        const float d  = trellis_k_to_d(kc);

        // dc[i] = d c(32 i + lane); D[i]: the error of the best path ending in that state
        float dc[NS];
        float D[NS];
        const float x0 = sm->x[0];
        TRELLIS_UNROLL
        for (int i = 0; i < NS; ++i) {
            dc[i] = TURBO_MUL(d, (float) tt::code(TRELLIS_SIMD*i + lane));
            const float e = TURBO_SUB(x0, dc[i]);
            D[i] = TURBO_MUL(e, e); // any start state: the prefix bits are stored
        }

        for (int t = 1; t < QK_TRELLIS; ++t) {
            threadgroup float * Dt = sm->D[t & 1];
            TRELLIS_UNROLL
            for (int i = 0; i < NS; ++i) {
                Dt[TRELLIS_SIMD*i + lane] = D[i];
            }
            threadgroup_barrier(mem_flags::mem_threadgroup);

            // node m = lane + 32 h: its predecessors are the states m K + a, a = 0..K-1
            float best[2];
            TRELLIS_UNROLL
            for (int h = 0; h < 2; ++h) {
                const int m = lane + TRELLIS_SIMD*h;
                float bv = Dt[m*K];
                int   ba = 0;
                TRELLIS_UNROLL
                for (int a = 1; a < K; ++a) {
                    const float v = Dt[m*K + a];
                    if (v < bv) {
                        bv = v;
                        ba = a;
                    }
                }
                best[h] = bv;
                sm->back[t][m] = (uint8_t) ba;
            }

            // state 32 i + lane continues node lane + 32 (i & 1)
            const float xt = sm->x[t];
            TRELLIS_UNROLL
            for (int i = 0; i < NS; ++i) {
                const float e = TURBO_SUB(xt, dc[i]);
                D[i] = TURBO_ADD(best[i & 1], TURBO_MUL(e, e));
            }
        }

        // the smallest error, the smallest state among equal ones (the reference's scan in
        // state order: no error is NaN): the lane's (its states ascend in i), then over the
        // lanes on (error, state)
        float err = D[0];
        int   s   = lane;
        TRELLIS_UNROLL
        for (int i = 1; i < NS; ++i) {
            if (D[i] < err) {
                err = D[i];
                s   = TRELLIS_SIMD*i + lane;
            }
        }
        sm->err[lane]   = err;
        sm->state[lane] = s;
        threadgroup_barrier(mem_flags::mem_threadgroup); // also: every lane's back pointers written
        err = sm->err[0];
        s   = sm->state[0];
        for (int j = 1; j < TRELLIS_SIMD; ++j) {
            const float ej = sm->err[j];
            const int   sj = sm->state[j];
            if (ej < err || (ej == err && sj < s)) {
                err = ej;
                s   = sj;
            }
        }

        // trace back (every lane the same path): s_{t-1} = (s_t mod M) K + back[t][s_t mod M];
        // value t's k bits (its state's high bits) go to bits 16 + k t of the block, and the
        // lane keeps those of its byte
        int byte = 0;
        for (int t = QK_TRELLIS - 1; ; --t) {
            const int p = TRELLIS_SCALE_BITS + pb + k*t;
            const int w = (s >> pb) << (p & 7);
            byte |= (p >> 3)     == lane ? (w & 0xFF) : 0;
            byte |= (p >> 3) + 1 == lane ? (w >> 8)   : 0;
            if (t == 0) {
                break;
            }
            const int m = s & (M - 1);
            s = m << k | sm->back[t][m];
        }
        threadgroup_barrier(mem_flags::mem_threadgroup); // the next candidate writes after every lane's reads

        if (c == 0 || err < err_best) {
            err_best  = err;
            kc_best   = kc;
            s0_best   = s; // s_0
            byte_best = byte;
        }
    }

    // step 5: the scale code and the prefix (s_0's low L - k bits) fill bytes 0 and 1
    const int field = kc_best | (s0_best & ((1 << pb) - 1)) << TRELLIS_SCALE_BITS;
    if (lane < tt::size) {
        out[lane] = (uint8_t) (lane == 0 ? field & 0xFF : lane == 1 ? field >> 8 : byte_best);
    }
}

#if defined(__METAL_VERSION__)
// the two forms the kernel templates take: 16 values (il = 0..3: get_rows, cpy, flash
// attention and its f16 conversion) and 4 values (il = 0..15: the flash-attention vec
// kernel), in the order of the row
#define TRELLIS_DEQUANTIZE(name)                                                                  \
template <typename type4x4>                                                                       \
void dequantize_##name(device const block_##name * xb, short il, thread type4x4 & reg) {          \
    float4x4 reg_f;                                                                               \
    trellis_dequantize(xb, 16*il, 16, (thread float *) &reg_f);                                   \
    reg = (type4x4) reg_f;                                                                        \
}                                                                                                 \
template <typename type4>                                                                         \
void dequantize_##name##_t4(device const block_##name * xb, short il, thread type4 & reg) {       \
    float4 reg_f;                                                                                 \
    trellis_dequantize(xb, 4*il, 4, (thread float *) &reg_f);                                     \
    reg = (type4) reg_f;                                                                          \
}
TRELLIS_DEQUANTIZE(turbo2t)
TRELLIS_DEQUANTIZE(turbo3t)
#undef TRELLIS_DEQUANTIZE
#endif
