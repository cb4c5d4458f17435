// tqllama: CUDA support for the turbo KV-cache types (turbo2, turbo3, turbo4, turbo5) and the
// two-stage keys (turbo2_qjl, turbo3_qjl, turbo4_qjl).
//
// The block layouts, the scale field and the quantization rule are docs/FORMAT.md and
// docs/FORMAT-QJL.md of tqllama; the C reference is ggml-turbo-quants.c. The blocks, the
// constants and the scalar pieces of the rule (scale decoding, index decoding, k_ref, ...)
// are ggml-turbo-common.h's, which C and Metal share; it places the generated tables in
// device memory.
//
// What lives here:
//   - decoding: indices 4 at a time, codebook lookup (layout + tables only),
//   - the QJL projection of the 64 values a warp holds,
//   - dequantize_turbo<type>: the dequantize_kernel_t of convert.cu / getrows.cu / cpy.cu
//     (plain types; a _qjl value needs its whole block, so those have warp kernels),
//   - the flash-attention vec kernel's K dot product (with the query's projection for the
//     _qjl keys, computed once per query) and V dequantization, whose store of the values
//     the trellis types (trellis.cuh) use too,
//   - the quantizer and the _qjl dequantizer, a warp per block, in turbo-warp.cuh / turbo.cu
//     (the row kernels: turbo-rows.cuh).
#pragma once

#include "common.cuh"
#include "convert.cuh"

#define GGML_TURBO_DECL_CUDA
#include "../ggml-turbo-common.h"

#include <type_traits>

static_assert(QK_TURBO == 2*QK_TURBO_SUB && QK_TURBO_SUB == WARP_SIZE,
              "turbo kernels assume blocks of 64 = two sub-blocks of one warp's width");
static_assert(QK_TURBO_SUB == QK8_1, "turbo K dot products assume one q8_1 block per sub-block");

#define TURBO_FULL_MASK 0xFFFFFFFFu

// dequantize_turbo's iqs is the index within a sub-block; it yields that value of both
// sub-blocks (values iqs and iqs + 32), which is the qr == 2 convention of dequantize_block
#define QR_TURBO 2

static constexpr __host__ __device__ bool ggml_cuda_type_is_turbo_qjl(const ggml_type type) {
    return type == GGML_TYPE_TURBO2_QJL || type == GGML_TYPE_TURBO3_QJL || type == GGML_TYPE_TURBO4_QJL;
}

// every turbo cache type, plain or two-stage
static constexpr __host__ __device__ bool ggml_cuda_type_is_turbo(const ggml_type type) {
    return type == GGML_TYPE_TURBO2 || type == GGML_TYPE_TURBO3 || type == GGML_TYPE_TURBO4 ||
        type == GGML_TYPE_TURBO5 || ggml_cuda_type_is_turbo_qjl(type);
}

// A codebook of `bits` bits and the block that holds its indices (index: that of value i,
// 0..63): turbo1 is stage 1 of turbo2_qjl, never a cache type, hence codebooks keyed by bits
// rather than by ggml_type.
template <int bits> struct turbo_cuda_cb;

#define TURBO_CUDA_CB(B)                                                                     \
    template <> struct turbo_cuda_cb<B> {                                                    \
        typedef block_turbo##B block;                                                        \
        static constexpr int n     = 1 << B; /* codebook entries */                          \
        static constexpr int cbmax = TURBO##B##_CBMAX;                                       \
        static constexpr int lo    = TURBO##B##_SEARCH_LO;                                   \
        static constexpr int hi    = TURBO##B##_SEARCH_HI;                                   \
        static __device__ __forceinline__ const int8_t * values() { return kvalues_turbo##B; } \
        static __device__ __forceinline__ const float  * thresh() { return kthresh_turbo##B; } \
        static __device__ __forceinline__ int index(const block * x, int i) { return turbo##B##_index(x, i); } \
    };
TURBO_CUDA_CB(5)
TURBO_CUDA_CB(4)
TURBO_CUDA_CB(3)
TURBO_CUDA_CB(2)
TURBO_CUDA_CB(1)
#undef TURBO_CUDA_CB

// A cache type: its block, and the codebook of its (first) stage. A _qjl block starts with
// the block of its stage 1 (`mse`), one bit below the type's name.
template <ggml_type type> struct turbo_cuda_traits;

#define TURBO_CUDA_TRAITS(T, blk, b, two_stage)                 \
    template <> struct turbo_cuda_traits<T> {                   \
        typedef blk block;                                      \
        static constexpr int  bits = b;                         \
        static constexpr bool qjl  = two_stage;                 \
    };
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO5,     block_turbo5,     5, false)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO4,     block_turbo4,     4, false)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO3,     block_turbo3,     3, false)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO2,     block_turbo2,     2, false)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO4_QJL, block_turbo4_qjl, 3, true)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO3_QJL, block_turbo3_qjl, 2, true)
TURBO_CUDA_TRAITS(GGML_TYPE_TURBO2_QJL, block_turbo2_qjl, 1, true)
#undef TURBO_CUDA_TRAITS

template <ggml_type type> using turbo_cuda_block = typename turbo_cuda_traits<type>::block;
template <int bits>       using turbo_cuda_stage_block = typename turbo_cuda_cb<bits>::block;

// stage 1 of a block (the block itself for a plain type)
template <ggml_type type>
static __device__ __forceinline__ const turbo_cuda_stage_block<turbo_cuda_traits<type>::bits> *
turbo_cuda_stage(const turbo_cuda_block<type> * x) {
    if constexpr (turbo_cuda_traits<type>::qjl) {
        return &x->mse;
    } else {
        return x;
    }
}

// ------------------------------------------------------------------------------------------
// decoding (depends on the layout, the tables and the scale rule of FORMAT.md only)
// ------------------------------------------------------------------------------------------

// index of value i (0..31) of sub-block j
template <int bits>
static __device__ __forceinline__ int turbo_cuda_idx(const turbo_cuda_stage_block<bits> * x, const int j, const int i) {
    return turbo_cuda_cb<bits>::index(x, QK_TURBO_SUB*j + i);
}

// bits 0..3 of h moved to bit 0 of bytes 0..3
static __device__ __forceinline__ uint32_t turbo_cuda_spread4(const uint32_t h) {
    return (h & 1) | (h & 2) << 7 | (h & 4) << 14 | (h & 8) << 21;
}

// the high index bits (turbo3's third, turbo5's fifth) of values 4m .. 4m+3 of sub-block j,
// at bit `pos` of one byte each
static __device__ __forceinline__ uint32_t turbo_cuda_high4(const uint8_t * qh, const int j, const int m, const int pos) {
    uint32_t h;
    ggml_cuda_memcpy_1<sizeof(h), 2>(&h, qh + 4*j);
    return turbo_cuda_spread4(h >> 4*m) << pos;
}

// indices of values 4m .. 4m+3 (m = 0..7) of sub-block j, one per byte of the result.
// Blocks are 2-byte aligned (all sizes are even), hence the 2-byte copies.
template <int bits>
static __device__ __forceinline__ uint32_t turbo_cuda_idx4(const turbo_cuda_stage_block<bits> * x, const int j, const int m) {
    uint32_t q;
    if constexpr (bits >= 4) {
        ggml_cuda_memcpy_1<sizeof(q), 2>(&q, x->qs + 16*j + 4*(m & 3));
        q = (q >> (4*(m >> 2))) & 0x0F0F0F0F;
        if constexpr (bits == 5) {
            q |= turbo_cuda_high4(x->qh, j, m, 4);
        }
        return q;
    } else if constexpr (bits == 1) {
        ggml_cuda_memcpy_1<sizeof(q), 2>(&q, x->qs + 4*j);
        return turbo_cuda_spread4(q >> 4*m);
    } else {
        ggml_cuda_memcpy_1<sizeof(q), 2>(&q, x->qs + 8*j + 4*(m & 1));
        q = (q >> (2*(m >> 1))) & 0x03030303;
        if constexpr (bits == 3) {
            q |= turbo_cuda_high4(x->qh, j, m, 2);
        }
        return q;
    }
}

// the codebook entries of four byte-wise indices, packed as four int8 (for dp4a)
template <int bits>
static __device__ __forceinline__ int turbo_cuda_lookup4(const uint32_t idx4) {
    if constexpr (bits == 1) {
        // two entries: v0 in every byte, flipped to v1 where the index is 1 (no carries:
        // each byte of the product is 0 or v0 ^ v1)
        const uint32_t v0 = (uint8_t) kvalues_turbo1[0];
        const uint32_t v1 = (uint8_t) kvalues_turbo1[1];
        return (int) (v0*0x01010101u ^ (v0 ^ v1)*idx4);
    } else {
        const uint32_t * table = (const uint32_t *) turbo_cuda_cb<bits>::values();
        // __byte_perm takes one selector nibble per result byte: move byte b's index (its low
        // four bits) to nibble b
        const uint32_t lo4 = bits == 5 ? idx4 & 0x0F0F0F0F : idx4;
        const uint32_t x   = lo4 | (lo4 >> 4);
        const uint32_t sel = (x & 0xFF) | ((x >> 8) & 0xFF00);
        if constexpr (bits >= 4) {
            // __byte_perm uses the low 3 bits of each nibble: look up in both halves of a
            // 16-entry table, then pick the half with the index's fourth bit; turbo5 does so
            // in both halves of its 32 entries and picks one with the fifth bit
            const uint32_t pick4 = 0x3210 | ((sel & 0x8888) >> 1);
            const uint32_t lo = __byte_perm(__byte_perm(table[0], table[1], sel),
                                            __byte_perm(table[2], table[3], sel), pick4);
            if constexpr (bits == 4) {
                return (int) lo;
            } else {
                static_assert(bits == 5, "bad codebook");
                const uint32_t hi = __byte_perm(__byte_perm(table[4], table[5], sel),
                                                __byte_perm(table[6], table[7], sel), pick4);
                // bit 4 of byte b -> bit 2 of nibble b
                const uint32_t h5 = (idx4 >> 4) & 0x01010101;
                const uint32_t y5 = h5 | (h5 >> 4);
                return (int) __byte_perm(lo, hi, 0x3210 | ((y5 & 0xFF) | ((y5 >> 8) & 0xFF00)) << 2);
            }
        } else if constexpr (bits == 3) {
            return (int) __byte_perm(table[0], table[1], sel);
        } else {
            static_assert(bits == 2, "bad codebook");
            return (int) __byte_perm(table[0], 0, sel);
        }
    }
}

// value i (0..31) of sub-block j (FORMAT.md dequantization: d_j * codebook entry)
template <int bits>
static __device__ __forceinline__ float turbo_cuda_value(const turbo_cuda_stage_block<bits> * x, const int j, const int i) {
    return __fmul_rn(turbo_scale(x->s, j), (float) turbo_cuda_cb<bits>::values()[turbo_cuda_idx<bits>(x, j, i)]);
}

// dequantize_kernel_t (qk = QK_TURBO, qr = QR_TURBO): v.x, v.y = value iqs of sub-blocks 0, 1
template <ggml_type type>
static __device__ __forceinline__ void dequantize_turbo(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    static_assert(!turbo_cuda_traits<type>::qjl, "a _qjl value needs its whole block: turbo-warp.cuh");
    constexpr int bits = turbo_cuda_traits<type>::bits;
    const turbo_cuda_block<type> * x = (const turbo_cuda_block<type> *) vx + ib;
    v.x = turbo_cuda_value<bits>(x, 0, iqs);
    v.y = turbo_cuda_value<bits>(x, 1, iqs);
}

// convert.cu: one switch case per turbo type, `fn` being a converter template over
// <qk, qr, dequantize_kernel>, `qjl` the _qjl types' converter over <type, dst type>
#define GGML_CUDA_TURBO_CONVERT_CASES(fn, qjl, dst_t)                                        \
    case GGML_TYPE_TURBO2: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO2>>; \
    case GGML_TYPE_TURBO3: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO3>>; \
    case GGML_TYPE_TURBO4: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO4>>; \
    case GGML_TYPE_TURBO5: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO5>>; \
    case GGML_TYPE_TURBO2_QJL: return qjl<GGML_TYPE_TURBO2_QJL, dst_t>;                      \
    case GGML_TYPE_TURBO3_QJL: return qjl<GGML_TYPE_TURBO3_QJL, dst_t>;                      \
    case GGML_TYPE_TURBO4_QJL: return qjl<GGML_TYPE_TURBO4_QJL, dst_t>;

// ------------------------------------------------------------------------------------------
// the QJL projection (FORMAT-QJL.md) of the 64 values of a block that a warp holds, lane l
// holding values l (v0) and l + 32 (v1); every lane of the warp must call these
// ------------------------------------------------------------------------------------------

// v <- Hu v in the butterfly order of FORMAT-QJL.md: stages h = 1..16 across lanes, h = 32
// within each lane; each value gets the reference's one rounding per stage (_rn: no fusing)
static __device__ __forceinline__ void turbo_cuda_hu64(float & v0, float & v1) {
    const int lane = threadIdx.x % WARP_SIZE;
#pragma unroll
    for (int h = 1; h < WARP_SIZE; h <<= 1) {
        const float o0 = __shfl_xor_sync(TURBO_FULL_MASK, v0, h);
        const float o1 = __shfl_xor_sync(TURBO_FULL_MASK, v1, h);
        const bool  lo = (lane & h) == 0; // the pair's first value: a + b, else a - b
        v0 = lo ? __fadd_rn(v0, o0) : __fsub_rn(o0, v0);
        v1 = lo ? __fadd_rn(v1, o1) : __fsub_rn(o1, v1);
    }
    const float a = v0;
    v0 = __fadd_rn(a, v1);
    v1 = __fsub_rn(a, v1);
}

// v <- P(v) = Hu D3 Hu D2 v = 64 S v
static __device__ __forceinline__ void turbo_cuda_qjl_project(float & v0, float & v1) {
    const int lane = threadIdx.x % WARP_SIZE;
    v0 *= (float) turbo_qjl_signs[lane];
    v1 *= (float) turbo_qjl_signs[lane + WARP_SIZE];
    turbo_cuda_hu64(v0, v1);
    v0 *= (float) turbo_qjl_signs[QK_TURBO + lane];
    v1 *= (float) turbo_qjl_signs[QK_TURBO + lane + WARP_SIZE];
    turbo_cuda_hu64(v0, v1);
}

// ------------------------------------------------------------------------------------------
// flash attention, vec kernel (fattn-vec.cuh): K dot q8_1 Q, V to half/float
// ------------------------------------------------------------------------------------------

// The ne V values a dequantize_V_* has computed in float (a V scale can be below half's
// range), stored at dst as T: half (in half2 pairs) or float. Shared by the turbo and the
// trellis V dequantizers.
template <typename T, int ne>
static __device__ __forceinline__ void turbo_cuda_store_V(void * __restrict__ dst, const float (&vals)[ne]) {
#ifdef FP16_AVAILABLE
    if constexpr (std::is_same_v<T, half>) {
#pragma unroll
        for (int l0 = 0; l0 < ne; l0 += 2) {
            ((half2 *) dst)[l0/2] = __floats2half2_rn(vals[l0 + 0], vals[l0 + 1]);
        }
    } else
#endif // FP16_AVAILABLE
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int l = 0; l < ne; ++l) {
            ((float *) dst)[l] = vals[l];
        }
    } else {
        static_assert(std::is_same_v<T, void>, "bad type");
    }
}

// The vec kernel's Q_reg, unused by quantized K, holds a _qjl key's projected query:
// D/nthreads_KQ values per thread, the four values of each of its words as two pairs.
#ifdef V_DOT2_F32_F16_AVAILABLE
typedef half2  turbo_cuda_q_pair;
#else
typedef float2 turbo_cuda_q_pair;
#endif // V_DOT2_F32_F16_AVAILABLE

static __device__ __forceinline__ float2 turbo_cuda_to_float2(const float2 v) { return v; }
static __device__ __forceinline__ float2 turbo_cuda_to_float2(const half2  v) { return __half22float2(v); }

// Q_reg[j] <- P(scale q_j) for _qjl keys: once per query and block of 64, not once per key.
// Called by every thread of the vec kernel right after Q's q8_1 conversion (same column
// and bounds handling); KQ (ncols*D values of type T_KQ, free at this point) is the staging.
template <int D, int ncols, int nthreads_KQ, int nwarps, typename T_KQ>
static __device__ __forceinline__ void turbo_cuda_project_Q(
        const char * __restrict__ Q, const int32_t nb01, const int ic0, const int ne01, const float scale,
        T_KQ * __restrict__ KQ, turbo_cuda_q_pair (&Q_reg)[ncols][(D/2)/nthreads_KQ]) {
    static_assert(sizeof(turbo_cuda_q_pair) == 2*sizeof(T_KQ), "KQ cannot stage the projected query");
    static_assert(D % QK_TURBO == 0, "head size not a multiple of the turbo block");
    const int lane = threadIdx.x % WARP_SIZE;

#pragma unroll
    for (int j0 = 0; j0 < ncols; j0 += nwarps) {
        const int j = j0 + threadIdx.y;

        if (j0 + nwarps > ncols && j >= ncols) {
            break; // the whole warp
        }

        const bool    valid = ncols == 1 || ic0 + j < ne01; // else zeros, as for Q_i32
        const float * Q_f   = (const float *) (Q + j*nb01);
#pragma unroll
        for (int b = 0; b < D/QK_TURBO; ++b) {
            float v0 = valid ? scale*Q_f[QK_TURBO*b + lane]             : 0.0f;
            float v1 = valid ? scale*Q_f[QK_TURBO*b + lane + WARP_SIZE] : 0.0f;
            turbo_cuda_qjl_project(v0, v1);
            KQ[j*D + QK_TURBO*b + lane]             = ggml_cuda_cast<T_KQ>(v0);
            KQ[j*D + QK_TURBO*b + lane + WARP_SIZE] = ggml_cuda_cast<T_KQ>(v1);
        }
    }

    __syncthreads();

#pragma unroll
    for (int j = 0; j < ncols; ++j) {
        const turbo_cuda_q_pair * tmp = (const turbo_cuda_q_pair *) (KQ + j*D);
#pragma unroll
        for (int i0 = 0; i0 < int(D/sizeof(int)); i0 += nthreads_KQ) {
            const int i = i0 + (nthreads_KQ == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads_KQ);

            Q_reg[j][2*(i0/nthreads_KQ) + 0] = tmp[2*i + 0];
            Q_reg[j][2*(i0/nthreads_KQ) + 1] = tmp[2*i + 1];
        }
    }

    __syncthreads();
}

// Same contract as vec_dot_fattn_vec_KQ_q8_0: thread t handles the 32-bit words
// k_KQ = t, t + nthreads, ... of the head; Q_q8 holds those words of Q as q8_1 and Q_ds the
// (d, sum) of their q8_1 block, which is exactly one turbo sub-block. A _qjl key adds
// g * sum_i s_i P(q)_i (FORMAT-QJL.md "Inner products"), P(q) from turbo_cuda_project_Q.
template <ggml_type type, int D, int nthreads>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_turbo(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8, const void * __restrict__ Q_ds_v) {

    constexpr int bits = turbo_cuda_traits<type>::bits;
    const turbo_cuda_block<type> * K = (const turbo_cuda_block<type> *) K_c;
    GGML_UNUSED(Q_v);

    float sum = 0.0f;

#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < int(D/sizeof(int)); k_KQ_0 += nthreads) {
        const int k_KQ = k_KQ_0 + (nthreads == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads);

        const int ib = k_KQ / (QK_TURBO/4);
        const int j  = (k_KQ / (QK_TURBO_SUB/4)) % 2;
        const int m  = k_KQ % (QK_TURBO_SUB/4);

        const auto * x    = turbo_cuda_stage<type>(K + ib);
        const int    v    = turbo_cuda_lookup4<bits>(turbo_cuda_idx4<bits>(x, j, m));
        const int    sumi = ggml_cuda_dp4a(v, Q_q8[k_KQ_0/nthreads], 0);

        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += turbo_scale(x->s, j) * Q_ds.x * (float) sumi;

        if constexpr (turbo_cuda_traits<type>::qjl) {
            // the signs of values 4w .. 4w+3 of the block: bits 4w .. 4w+3 of qr
            const int    w  = k_KQ % (QK_TURBO/4);
            const int    s  = K[ib].qr[w/2] >> (4*(w % 2));
            const float2 p0 = turbo_cuda_to_float2(((const turbo_cuda_q_pair *) Q_v)[2*(k_KQ_0/nthreads) + 0]);
            const float2 p1 = turbo_cuda_to_float2(((const turbo_cuda_q_pair *) Q_v)[2*(k_KQ_0/nthreads) + 1]);
            const float  t  = (s & 1 ? -p0.x : p0.x) + (s & 2 ? -p0.y : p0.y) + (s & 4 ? -p1.x : p1.x) + (s & 8 ? -p1.y : p1.y);
            sum += __half2float(__ushort_as_half(K[ib].rn)) * TURBO_QJL_SCALE * t;
        }
    }

    return sum;
}

// values i0 .. i0+ne-1 of a V row (i0 a multiple of ne), as half or float
template <ggml_type type, typename T, int ne>
static __device__ __forceinline__ void dequantize_V_turbo(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    static_assert(ne == 2 || ne == 4, "bad ne");
    static_assert(!turbo_cuda_traits<type>::qjl, "_qjl V: no vec instance, flash attention converts it to f16");
    constexpr int bits = turbo_cuda_traits<type>::bits;
    const turbo_cuda_block<type> * x = (const turbo_cuda_block<type> *) vx + i0/QK_TURBO;

    const int j = (i0 % QK_TURBO) / QK_TURBO_SUB;
    const int i = i0 % QK_TURBO_SUB;

    const int   q = turbo_cuda_lookup4<bits>(turbo_cuda_idx4<bits>(x, j, i/4));
    const int   o = ne == 4 ? 0 : i % 4; // first byte of q wanted (shifts keep q in a register)
    // the products in float: a V scale can be below half's range
    const float d = turbo_scale(x->s, j);
    float vals[ne];
#pragma unroll
    for (int l = 0; l < ne; ++l) {
        vals[l] = d * (float) (int8_t) (q >> (8*(o + l)));
    }
    turbo_cuda_store_V<T, ne>(dst, vals);
}

// The K/V pairs with a vec kernel instance (template-instances/fattn-vec-instance-*.cu,
// GGML_CUDA_FA_QUANTS "turbo"): every pair of {turbo2, turbo3, turbo4, turbo5, q8_0, f16}
// with a turbo type in it, and each _qjl key with each of those as V (a _qjl V has none: it
// is a key format, and flash attention converts it to f16). X(K, V) gets the enum suffixes.
#define GGML_CUDA_TURBO_FA_PAIRS_K(X, K) X(K, TURBO2) X(K, TURBO3) X(K, TURBO4) X(K, TURBO5) X(K, Q8_0) X(K, F16)
#define GGML_CUDA_TURBO_FA_PAIRS(X)                                                         \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO2) GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO3)             \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO4) GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO5)             \
    X(Q8_0, TURBO2) X(Q8_0, TURBO3) X(Q8_0, TURBO4) X(Q8_0, TURBO5)                          \
    X(F16, TURBO2) X(F16, TURBO3) X(F16, TURBO4) X(F16, TURBO5)                              \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO2_QJL) GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO3_QJL)     \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO4_QJL)

// ------------------------------------------------------------------------------------------
// warp kernels (turbo.cu): quantization for SET_ROWS and CPY F32 -> turbo, bit-exact with
// the C reference; dequantization of the _qjl types for convert.cu and CPY -> F32
// ------------------------------------------------------------------------------------------

void ggml_cuda_turbo_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst);

void ggml_cuda_turbo_cpy_f32(
    ggml_type type, const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream);

// _qjl -> F32 (CPY, the K-shift's cast): cpy.cu's arguments
void ggml_cuda_turbo_qjl_cpy_to_f32(
    ggml_type type, const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream);

// _qjl -> half, float, nv_bfloat16: the to_t_cuda_t (contiguous) and to_t_nc_cuda_t
// converters of convert.cu (instantiated in turbo.cu)
template <ggml_type type, typename dst_t>
void ggml_cuda_turbo_qjl_convert(const void * x, dst_t * y, int64_t k, cudaStream_t stream);

template <ggml_type type, typename dst_t>
void ggml_cuda_turbo_qjl_convert_nc(const void * x, dst_t * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                    int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream);
