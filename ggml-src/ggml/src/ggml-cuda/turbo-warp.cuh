// tqllama: a warp per turbo block of 64 values, bit-exact with ggml-turbo-quants.c, the C
// reference of docs/FORMAT.md and docs/FORMAT-QJL.md:
//   - lane l holds values l and l + 32; amax is a warp max (exact in any order);
//   - the scale search gives each lane one candidate scale, and that lane sums the squared
//     errors of the sub-block sequentially in index order, as the reference does; so does
//     every lane for a _qjl block's residual norm;
//   - the reference is compiled without fused multiply-add: here every step is an _rn
//     intrinsic, which nvcc never fuses and which stays IEEE under -use_fast_math
//     (ggml-cuda's flag); 1/d, amax/CBMAX and the norm's square root are correctly rounded
//     (__frcp_rn, __fdiv_rn, __fsqrt_rn) like C's.
// Tolerance against the CPU: none (the same bytes), except on float32 subnormals, which
// -use_fast_math flushes to zero; no KV activation is that small.
//
// Every function here is a warp collective: all 32 lanes call it, converged.
#pragma once

#include "turbo.cuh"

// ------------------------------------------------------------------------------------------
// the quantization rule, FORMAT.md steps 0-6: a change of the rule is an edit in this section
// ------------------------------------------------------------------------------------------

// steps 0 and 2 (sanitizing, k_ref), 5 (the scale field) and the scale decoding are the
// scalar functions of ggml-turbo-common.h, which C and Metal run too

// idx = #{t : y > thresh[t]}
template <int bits>
static __device__ __forceinline__ int turbo_cuda_nearest(const float y) {
    const float * thresh = turbo_cuda_cb<bits>::thresh();
    int idx = 0;
#pragma unroll
    for (int t = 0; t < turbo_cuda_cb<bits>::n - 1; ++t) {
        idx += y > thresh[t];
    }
    return idx;
}

// step 3 for one candidate code k: the squared error of sub-block j, whose value i lane i
// holds (x0 for sub-block 0, x1 for 1), accumulated in index order (the values travel by
// shuffles)
template <int bits>
static __device__ float turbo_cuda_sub_error(const float x0, const float x1, const int j, const int k) {
    const int8_t * values = turbo_cuda_cb<bits>::values();
    const float d   = turbo_k_to_d(k);
    const float inv = __frcp_rn(d);
    float err = 0.0f;
#pragma unroll 8
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float a = __shfl_sync(TURBO_FULL_MASK, x0, i);
        const float b = __shfl_sync(TURBO_FULL_MASK, x1, i);
        const float x = j ? b : a;
        const int   idx = turbo_cuda_nearest<bits>(__fmul_rn(x, inv));
        const float r   = __fsub_rn(x, __fmul_rn(d, (float) values[idx]));
        err = __fadd_rn(err, __fmul_rn(r, r));
    }
    return err;
}

// step 3: the best code of each sub-block. Lanes 0-15 try sub-block 0's candidates k_ref0 +
// lo .. k_ref0 + hi, lanes 16-31 sub-block 1's, 16 at a time; the smallest error wins, the
// first candidate among equal errors (the reference's strict `<`). Returns the best code of
// the lane's own sub-block.
template <int bits>
static __device__ int turbo_cuda_search(const float x0, const float x1, const int k_ref0, const int k_ref1) {
    constexpr int lo    = turbo_cuda_cb<bits>::lo;
    constexpr int ncand = turbo_cuda_cb<bits>::hi - lo + 1;
    static_assert(ncand >= 1, "empty scale search");

    const int lane  = threadIdx.x % WARP_SIZE;
    const int j     = lane / 16;
    const int k_ref = j ? k_ref1 : k_ref0;

    float best_err = INFINITY;
    int   best_c   = 0;
#pragma unroll
    for (int c0 = 0; c0 < ncand; c0 += 16) {
        int c = c0 + lane % 16;
        // lanes past the last candidate repeat it (all lanes take part in the shuffles)
        float err = turbo_cuda_sub_error<bits>(x0, x1, j, turbo_clamp_k(k_ref + lo + min(c, ncand - 1)));
        if (c >= ncand) {
            err = INFINITY;
        }
#pragma unroll
        for (int offset = 8; offset > 0; offset >>= 1) { // within each half-warp
            const float err_o = __shfl_xor_sync(TURBO_FULL_MASK, err, offset);
            const int   c_o   = __shfl_xor_sync(TURBO_FULL_MASK, c,   offset);
            if (err_o < err || (err_o == err && c_o < c)) {
                err = err_o;
                c   = c_o;
            }
        }
        if (err < best_err) { // an earlier group keeps a tie
            best_err = err;
            best_c   = c;
        }
    }
    return turbo_clamp_k(k_ref + lo + best_c);
}

// the high bit of idx[i] (turbo3's third, turbo5's fifth) = bit i of the little-endian word
// qh[4j .. 4j+3]; lane l's h0, h1: the bits of values l and l + 32
static __device__ __forceinline__ void turbo_cuda_pack_high_bit(uint8_t * __restrict__ qh, const int h0, const int h1) {
    const int      lane = threadIdx.x % WARP_SIZE;
    const uint32_t b0   = __ballot_sync(TURBO_FULL_MASK, h0);
    const uint32_t b1   = __ballot_sync(TURBO_FULL_MASK, h1);
    if (lane < 4) {
        qh[lane]     = (uint8_t) (b0 >> 8*lane);
        qh[4 + lane] = (uint8_t) (b1 >> 8*lane);
    }
}

// steps 1-6 for one block whose sanitized values l, l + 32 lane l holds (x0, x1); the lane's
// dequantized values come back in m0, m1 (FORMAT.md dequantization: d_j * value, 0 * value
// for a zero sub-block), which a _qjl block's residual starts from
template <int bits>
static __device__ void turbo_cuda_quantize_stage_warp(const float x0, const float x1,
        turbo_cuda_stage_block<bits> * __restrict__ y, float & m0, float & m1) {
    const int lane = threadIdx.x % WARP_SIZE;

    // step 1: a zero sub-block gets code 0 and index 0 everywhere
    const float amax0 = warp_reduce_max(fabsf(x0));
    const float amax1 = warp_reduce_max(fabsf(x1));

    // steps 2-3 (a zero sub-block searches too, the warp stays converged, and is dropped)
    constexpr float cbmax = (float) turbo_cuda_cb<bits>::cbmax;
    const int k_lane = turbo_cuda_search<bits>(x0, x1,
        amax0 == 0.0f ? 1 : turbo_k_ref(amax0, cbmax), amax1 == 0.0f ? 1 : turbo_k_ref(amax1, cbmax));
    const int k0 = amax0 == 0.0f ? 0 : __shfl_sync(TURBO_FULL_MASK, k_lane, 0);
    const int k1 = amax1 == 0.0f ? 0 : __shfl_sync(TURBO_FULL_MASK, k_lane, 16);

    // step 5: the smallest shared exponent that fits the larger code
    const uint16_t s = turbo_scale_field(k0, k1);

    // step 6: the indices with the final scales (0 for a zero sub-block)
    const float d0   = turbo_scale(s, 0);
    const float d1   = turbo_scale(s, 1);
    const int   idx0 = d0 == 0.0f ? 0 : turbo_cuda_nearest<bits>(__fmul_rn(x0, __frcp_rn(d0)));
    const int   idx1 = d1 == 0.0f ? 0 : turbo_cuda_nearest<bits>(__fmul_rn(x1, __frcp_rn(d1)));
    m0 = __fmul_rn(d0, (float) turbo_cuda_cb<bits>::values()[idx0]);
    m1 = __fmul_rn(d1, (float) turbo_cuda_cb<bits>::values()[idx1]);

    // packing (FORMAT.md "Index packing", FORMAT-QJL.md "turbo1")
    if (lane == 0) {
        y->s = s;
    }
    if constexpr (bits >= 4) {
        // qs[16j + l] = idx[l] | idx[l + 16] << 4 (the low four bits)
        const int a0  = idx0 & 15;
        const int a1  = idx1 & 15;
        const int hi0 = __shfl_down_sync(TURBO_FULL_MASK, a0, 16);
        const int hi1 = __shfl_down_sync(TURBO_FULL_MASK, a1, 16);
        if (lane < 16) {
            y->qs[lane]      = (uint8_t) (a0 | hi0 << 4);
            y->qs[16 + lane] = (uint8_t) (a1 | hi1 << 4);
        }
        if constexpr (bits == 5) {
            turbo_cuda_pack_high_bit(y->qh, idx0 >> 4, idx1 >> 4);
        }
    } else if constexpr (bits == 1) {
        // idx[i] = bit i of the little-endian word qs[4j .. 4j+3]
        const uint32_t b0 = __ballot_sync(TURBO_FULL_MASK, idx0);
        const uint32_t b1 = __ballot_sync(TURBO_FULL_MASK, idx1);
        if (lane < 4) {
            y->qs[lane]     = (uint8_t) (b0 >> 8*lane);
            y->qs[4 + lane] = (uint8_t) (b1 >> 8*lane);
        }
    } else {
        // 2-bit plane: qs[8j + l] = idx[l] | idx[l+8] << 2 | idx[l+16] << 4 | idx[l+24] << 6
        const int a0 = idx0 & 3;
        const int a1 = idx1 & 3;
        const int q0 = a0 | __shfl_down_sync(TURBO_FULL_MASK, a0, 8) << 2 |
            __shfl_down_sync(TURBO_FULL_MASK, a0, 16) << 4 | __shfl_down_sync(TURBO_FULL_MASK, a0, 24) << 6;
        const int q1 = a1 | __shfl_down_sync(TURBO_FULL_MASK, a1, 8) << 2 |
            __shfl_down_sync(TURBO_FULL_MASK, a1, 16) << 4 | __shfl_down_sync(TURBO_FULL_MASK, a1, 24) << 6;
        if (lane < 8) {
            y->qs[lane]     = (uint8_t) q0;
            y->qs[8 + lane] = (uint8_t) q1;
        }
        if constexpr (bits == 3) {
            turbo_cuda_pack_high_bit(y->qh, idx0 >> 2, idx1 >> 2);
        }
    }
}

// FORMAT-QJL.md steps 2-4: the residual r = x - x_mse of the block, its norm and its signs
static __device__ void turbo_cuda_qjl_residual_warp(const float x0, const float x1, const float m0, const float m1,
        uint16_t * __restrict__ rn, uint8_t * __restrict__ qr) {
    const int lane = threadIdx.x % WARP_SIZE;

    float r0 = __fsub_rn(x0, m0);
    float r1 = __fsub_rn(x1, m1);

    // the norm, summed in index order by every lane (value i is lane i % 32's r0 or r1)
    float acc = 0.0f;
#pragma unroll 8
    for (int i = 0; i < QK_TURBO; ++i) {
        const float r = __shfl_sync(TURBO_FULL_MASK, i < WARP_SIZE ? r0 : r1, i % WARP_SIZE);
        acc = __fadd_rn(acc, __fmul_rn(r, r));
    }

    turbo_cuda_qjl_project(r0, r1);
    const uint32_t neg0 = __ballot_sync(TURBO_FULL_MASK, r0 < 0.0f);
    const uint32_t neg1 = __ballot_sync(TURBO_FULL_MASK, r1 < 0.0f);

    if (lane == 0) {
        *rn = __half_as_ushort(__float2half_rn(fminf(__fsqrt_rn(acc), 65504.0f)));
    }
    if (lane < 4) {
        qr[lane]     = (uint8_t) (neg0 >> 8*lane);
        qr[4 + lane] = (uint8_t) (neg1 >> 8*lane);
    }
}

// the block of 64 floats at x (contiguous) into y
template <ggml_type type>
static __device__ void turbo_cuda_quantize_block_warp(const float * __restrict__ x, turbo_cuda_block<type> * __restrict__ y) {
    constexpr int bits = turbo_cuda_traits<type>::bits;
    const int lane = threadIdx.x % WARP_SIZE;

    const float x0 = turbo_sanitize(x[lane]);
    const float x1 = turbo_sanitize(x[lane + QK_TURBO_SUB]);

    float m0, m1;
    if constexpr (turbo_cuda_traits<type>::qjl) {
        turbo_cuda_quantize_stage_warp<bits>(x0, x1, &y->mse, m0, m1);
        turbo_cuda_qjl_residual_warp(x0, x1, m0, m1, &y->rn, y->qr);
    } else {
        turbo_cuda_quantize_stage_warp<bits>(x0, x1, y, m0, m1);
    }
}

// ------------------------------------------------------------------------------------------
// dequantization of a _qjl block (FORMAT-QJL.md): lane l gets values l (y0) and l + 32 (y1)
// ------------------------------------------------------------------------------------------

template <ggml_type type>
static __device__ void turbo_cuda_dequantize_qjl_warp(const turbo_cuda_block<type> * __restrict__ x, float & y0, float & y1) {
    static_assert(turbo_cuda_traits<type>::qjl, "a plain turbo value has dequantize_turbo");
    constexpr int bits = turbo_cuda_traits<type>::bits;
    const int lane = threadIdx.x % WARP_SIZE;

    const float m0 = turbo_cuda_value<bits>(&x->mse, 0, lane);
    const float m1 = turbo_cuda_value<bits>(&x->mse, 1, lane);

    // w = D2 Hu D3 Hu s: the transpose of the projection, exact on +-1 inputs
    float w0 = turbo_bit(x->qr, lane)             ? -1.0f : 1.0f;
    float w1 = turbo_bit(x->qr, lane + WARP_SIZE) ? -1.0f : 1.0f;
    turbo_cuda_hu64(w0, w1);
    w0 *= (float) turbo_qjl_signs[QK_TURBO + lane];
    w1 *= (float) turbo_qjl_signs[QK_TURBO + lane + WARP_SIZE];
    turbo_cuda_hu64(w0, w1);

    const float g = __fmul_rn(__half2float(__ushort_as_half(x->rn)), TURBO_QJL_SCALE);
    y0 = __fadd_rn(m0, __fmul_rn(g, __fmul_rn(w0, (float) turbo_qjl_signs[lane])));
    y1 = __fadd_rn(m1, __fmul_rn(g, __fmul_rn(w1, (float) turbo_qjl_signs[lane + WARP_SIZE])));
}
