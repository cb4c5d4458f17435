// tqllama: a warp per trellis block of 64 values, bit-exact with ggml-trellis-quants.c, the C
// reference of docs/FORMAT-TRELLIS.md (steps 0-5):
//   - lane l holds values l and l + 32; amax is a warp max (exact in any order); the sum of
//     squares of step 2 is taken by every lane sequentially in index order, as the reference
//     does, and step 2's scalar tail is ggml-trellis-common.h's (frexp and ldexp on the bits);
//   - the Viterbi search: lane l owns the states 32 i + l (i = 0 .. 2^L/32 - 1: 8 for turbo2t,
//     16 for turbo3t), whose trellis nodes (the low L - k bits) are l and l + 32, so that
//     lane l also computes the best predecessor of nodes l and l + 32. At each step the path
//     errors go through shared memory (double-buffered: one __syncwarp per step), each lane
//     reads the 2^k predecessors of its two nodes (consecutive states) and scans them in
//     order with a strict `<` (the first of equal minima, as the reference); the back
//     pointers are kept in shared memory and every lane traces the path back;
//   - the final minimum over the states is a warp reduction on (error, state), the smallest
//     state winning ties: exact in any order; the three scale candidates run in turn, the
//     first of equal errors winning (strict `<`);
//   - the reference is compiled without fused multiply-add: here every step is an _rn
//     intrinsic, which nvcc never fuses and which stays IEEE under -use_fast_math
//     (ggml-cuda's flag); the square root is __fsqrt_rn (TURBO_SQRT), like C's sqrtf.
// Tolerance against the CPU: none (the same bytes), except where float32 subnormals occur,
// which -use_fast_math flushes to zero: blocks holding subnormal values, and blocks whose
// largest value is below about 1e-12 (the squared error of a near-exact reconstruction can
// then fall below 2^-126); no KV activation is that small. (The CPU emulation of tqllama's
// tests keeps subnormals, as the reference does.)
//
// Every function here is a warp collective: all 32 lanes call it, converged.
#pragma once

#include "trellis.cuh"

// One warp's shared-memory scratch (trellis.cu gives each warp of a CUDA block one; the
// emulator of tqllama's tests a plain array)
template <ggml_type type>
struct __align__(16) trellis_cuda_scratch {
    static constexpr int S = 1 << trellis_cuda_traits<type>::L;                              // states
    static constexpr int M = 1 << (trellis_cuda_traits<type>::L - trellis_cuda_traits<type>::k); // trellis nodes
    float   D[2][S];            // the path errors of the previous step, double-buffered
    float   x[QK_TRELLIS];      // the sanitized block
    uint8_t back[QK_TRELLIS][M]; // back[t][m]: the best predecessor a of node m at step t (t >= 1)
};

// step 4 for one scale candidate d: the minimum-error path of the block in sm->x. Returns its
// error (every lane the same); lane l gets the path's states s_l (s_lo) and s_{l+32} (s_hi).
template <ggml_type type>
static __device__ float trellis_cuda_viterbi_warp(const float d, trellis_cuda_scratch<type> * sm, int & s_lo, int & s_hi) {
    typedef trellis_cuda_traits<type> tt;
    constexpr int k  = tt::k;
    constexpr int K  = 1 << k;                       // predecessors of a node
    constexpr int M  = trellis_cuda_scratch<type>::M;
    constexpr int NS = trellis_cuda_scratch<type>::S / WARP_SIZE; // states per lane
    static_assert(M == 2*WARP_SIZE, "a lane owns two trellis nodes");
    static_assert(K == 4 || K == 8, "the predecessors are read 16 bytes at a time");
    const int lane = threadIdx.x % WARP_SIZE;

    // dc[i] = d * c(32 i + lane); D[i]: the error of the best path ending in that state
    float dc[NS];
    float D[NS];
    {
        const float x0 = sm->x[0];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            dc[i] = __fmul_rn(d, (float) trellis_cuda_code<type>(WARP_SIZE*i + lane));
            const float e = __fsub_rn(x0, dc[i]);
            D[i] = __fmul_rn(e, e); // any start state: the prefix bits are stored
        }
    }

#pragma unroll 1
    for (int t = 1; t < QK_TRELLIS; ++t) {
        float * Dt = sm->D[t & 1];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            Dt[WARP_SIZE*i + lane] = D[i];
        }
        __syncwarp();

        // node m = lane + 32 h: its predecessors are the states m K + a, a = 0..K-1
        float best[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = lane + WARP_SIZE*h;
            __align__(16) float p[K];
#pragma unroll
            for (int a0 = 0; a0 < K; a0 += 4) {
                ggml_cuda_memcpy_1<4*sizeof(float)>(p + a0, Dt + m*K + a0);
            }
            float bv = p[0];
            int   ba = 0;
#pragma unroll
            for (int a = 1; a < K; ++a) {
                if (p[a] < bv) {
                    bv = p[a];
                    ba = a;
                }
            }
            best[h] = bv;
            sm->back[t][m] = (uint8_t) ba;
        }

        // state 32 i + lane continues node lane + 32 (i & 1)
        const float xt = sm->x[t];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            const float e = __fsub_rn(xt, dc[i]);
            D[i] = __fadd_rn(best[i & 1], __fmul_rn(e, e));
        }
    }

    // the smallest error, the smallest state among equal ones (the lane's states ascend in i)
    float err = D[0];
    int   s   = lane;
#pragma unroll
    for (int i = 1; i < NS; ++i) {
        if (D[i] < err) {
            err = D[i];
            s   = WARP_SIZE*i + lane;
        }
    }
#pragma unroll
    for (int offset = WARP_SIZE/2; offset > 0; offset >>= 1) {
        const float err_o = __shfl_xor_sync(0xFFFFFFFF, err, offset);
        const int   s_o   = __shfl_xor_sync(0xFFFFFFFF, s,   offset);
        if (err_o < err || (err_o == err && s_o < s)) {
            err = err_o;
            s   = s_o;
        }
    }
    __syncwarp(); // every lane's back pointers written

    // trace back (every lane the same path): s_{t-1} = (s_t mod M) K + back[t][s_t mod M]
    s_lo = 0;
    s_hi = s; // s_63, lane 31's
#pragma unroll 1
    for (int t = QK_TRELLIS - 1; t > 0; --t) {
        const int m = s & (M - 1);
        s = m << k | sm->back[t][m];
        s_lo = t - 1 == lane             ? s : s_lo;
        s_hi = t - 1 == lane + WARP_SIZE ? s : s_hi;
    }
    __syncwarp(); // the next candidate's writes come after every lane's reads
    return err;
}

// steps 0-5 for the block of 64 floats at x (contiguous) into y
template <ggml_type type>
static __device__ void trellis_cuda_quantize_block_warp(const float * __restrict__ x, trellis_cuda_block<type> * __restrict__ y,
        trellis_cuda_scratch<type> * __restrict__ sm) {
    typedef trellis_cuda_traits<type> tt;
    constexpr int k  = tt::k;
    constexpr int pb = tt::L - tt::k; // prefix bits
    static_assert(sizeof(trellis_cuda_block<type>) <= WARP_SIZE, "a lane per byte of the block");
    static_assert(sizeof(y->qs) == k*QK_TRELLIS/8, "k bits per value");
    const int lane = threadIdx.x % WARP_SIZE;
    uint8_t * out = (uint8_t *) y;

    // steps 0-1
    const float x0 = turbo_sanitize(x[lane]);
    const float x1 = turbo_sanitize(x[lane + WARP_SIZE]);
    const float amax = warp_reduce_max(fmaxf(fabsf(x0), fabsf(x1)));
    if (amax == 0.0f) { // the whole warp: a zero block is every byte 0
        if (lane < (int) sizeof(*y)) {
            out[lane] = 0;
        }
        return;
    }
    sm->x[lane]             = x0;
    sm->x[lane + WARP_SIZE] = x1;
    __syncwarp();

    // step 2: every lane sums the squares in index order
    int ea;
    const float am = turbo_frexp(amax, &ea);
    float ss = 0.0f;
#pragma unroll 8
    for (int i = 0; i < QK_TRELLIS; ++i) {
        const float v = trellis_ldexp(sm->x[i], -ea);
        ss = __fadd_rn(ss, __fmul_rn(v, v));
    }
    const int k_ref = trellis_k_ref_ss(am, ea, ss);

    // steps 3-4: the candidates in order, the first of equal errors wins
    float err_best = INFINITY;
    int   kc_best  = 0;
    int   s_lo     = 0;
    int   s_hi     = 0;
#pragma unroll 1
    for (int c = 0; c < TRELLIS_N_SEARCH; ++c) {
        const int kc = trellis_clamp_k(k_ref + tt::search()[c]);
        int lo, hi;
        const float err = trellis_cuda_viterbi_warp<type>(trellis_k_to_d(kc), sm, lo, hi);
        if (err < err_best) {
            err_best = err;
            kc_best  = kc;
            s_lo     = lo;
            s_hi     = hi;
        }
    }

    // step 5: the scale code and the prefix (s_0's low L - k bits), then the k new bits of
    // each value (its state's high bits) at bits 16 + k t: byte j of qs gathers the bits
    // 8j .. 8j+7 of the payload from one ballot per bit plane and half of the block
    const int v_lo = s_lo >> pb;
    const int v_hi = s_hi >> pb;
    uint32_t plane[2][k];
#pragma unroll
    for (int b = 0; b < k; ++b) {
        plane[0][b] = __ballot_sync(0xFFFFFFFF, (v_lo >> b) & 1);
        plane[1][b] = __ballot_sync(0xFFFFFFFF, (v_hi >> b) & 1);
    }
    const int s0 = __shfl_sync(0xFFFFFFFF, s_lo, 0);
    if (lane == 0) {
        y->s = (uint16_t) (kc_best | (s0 & ((1 << pb) - 1)) << TRELLIS_SCALE_BITS);
    }
    if (lane < (int) sizeof(y->qs)) {
        int byte = 0;
#pragma unroll
        for (int b = 0; b < k; ++b) { // the planes by constant index: registers
#pragma unroll
            for (int r = 0; r < 8; ++r) {
                const int q = 8*lane + r; // payload bit: bit q % k of value q / k
                const int t = q / k;
                const uint32_t word = t < WARP_SIZE ? plane[0][b] : plane[1][b];
                byte |= q % k == b ? ((word >> (t % WARP_SIZE)) & 1) << r : 0;
            }
        }
        y->qs[lane] = (uint8_t) byte;
    }
}
