// tqllama: CUDA support for the turbo KV-cache types (turbo2, turbo3, turbo4).
//
// The block layouts, the scale field and the quantization rule are docs/FORMAT.md of
// tqllama; the C reference is ggml-turbo-quants.c. Constants come from the generated
// ggml-turbo-tables.h, included here with its tables placed in device memory.
//
// What lives here:
//   - decoding: scale field, indices, codebook lookup (layout + tables only),
//   - dequantize_turbo<type>: the dequantize_kernel_t of convert.cu / getrows.cu / cpy.cu,
//   - the flash-attention vec kernel's K dot product and V dequantization,
//   - the quantizer (SET_ROWS and CPY F32 -> turbo), a warp per block, in turbo.cu.
#pragma once

#include "common.cuh"

// Tables in device memory, 16-byte aligned so that a codebook can be read as 32-bit words
// for __byte_perm lookups. This must be the first inclusion of the tables header in the
// translation unit (it has #pragma once); no CUDA source includes it any other way.
#define TURBO_TABLE_BEGIN(type, name, size) static const __device__ __align__(16) type name[size] = {
#define TURBO_TABLE_END() };
// The header's host helpers (turbo_k_to_d, turbo_scale) now read a device table; CUDA code
// never calls them (it has turbo_cuda_k_to_d below), so nvcc's warning about them is moot.
#ifdef __NVCC__
#pragma nv_diag_suppress 20091
#endif
#include "../ggml-turbo-quants.h"
#ifdef __NVCC__
#pragma nv_diag_default 20091
#endif

#include <type_traits>

static_assert(QK_TURBO == 2*QK_TURBO_SUB && QK_TURBO_SUB == WARP_SIZE,
              "turbo kernels assume blocks of 64 = two sub-blocks of one warp's width");
static_assert(QK_TURBO_SUB == QK8_1, "turbo K dot products assume one q8_1 block per sub-block");

// dequantize_turbo's iqs is the index within a sub-block; it yields that value of both
// sub-blocks (values iqs and iqs + 32), which is the qr == 2 convention of dequantize_block
#define QR_TURBO 2

static constexpr __host__ __device__ bool ggml_cuda_type_is_turbo(const ggml_type type) {
    return type == GGML_TYPE_TURBO2 || type == GGML_TYPE_TURBO3 || type == GGML_TYPE_TURBO4;
}

template <ggml_type type> struct turbo_cuda_traits;

template <> struct turbo_cuda_traits<GGML_TYPE_TURBO4> {
    typedef block_turbo4 block;
    static constexpr int n      = 16;  // codebook entries
    static constexpr int cbmax  = TURBO4_CBMAX;
    static constexpr int lo     = TURBO4_SEARCH_LO;
    static constexpr int hi     = TURBO4_SEARCH_HI;
    static __device__ __forceinline__ const int8_t * values() { return kvalues_turbo4; }
    static __device__ __forceinline__ const float  * thresh() { return kthresh_turbo4; }
};

template <> struct turbo_cuda_traits<GGML_TYPE_TURBO3> {
    typedef block_turbo3 block;
    static constexpr int n      = 8;
    static constexpr int cbmax  = TURBO3_CBMAX;
    static constexpr int lo     = TURBO3_SEARCH_LO;
    static constexpr int hi     = TURBO3_SEARCH_HI;
    static __device__ __forceinline__ const int8_t * values() { return kvalues_turbo3; }
    static __device__ __forceinline__ const float  * thresh() { return kthresh_turbo3; }
};

template <> struct turbo_cuda_traits<GGML_TYPE_TURBO2> {
    typedef block_turbo2 block;
    static constexpr int n      = 4;
    static constexpr int cbmax  = TURBO2_CBMAX;
    static constexpr int lo     = TURBO2_SEARCH_LO;
    static constexpr int hi     = TURBO2_SEARCH_HI;
    static __device__ __forceinline__ const int8_t * values() { return kvalues_turbo2; }
    static __device__ __forceinline__ const float  * thresh() { return kthresh_turbo2; }
};

// ------------------------------------------------------------------------------------------
// decoding (depends on the layout, the tables and the scale rule of FORMAT.md only)
// ------------------------------------------------------------------------------------------

// d(k) = M[k & 15] * 2^((k >> 4) - TURBO_EXP_BIAS) for k in 1..TURBO_KMAX: the power of two
// is built from its bits, so the product is exact and equal to the CPU's turbo_k_to_d
static __device__ __forceinline__ float turbo_cuda_k_to_d(const int k) {
    return turbo_scale_mant[k & 15] * __int_as_float(((k >> 4) - TURBO_EXP_BIAS + 127) << 23);
}

// scale of sub-block j of a block with scale field s; 0 for a zero sub-block
static __device__ __forceinline__ float turbo_cuda_scale(const uint16_t s, const int j) {
    const int f = (s >> (5*j)) & 31;
    return f == 0 ? 0.0f : turbo_cuda_k_to_d(8*(s >> 10) + f);
}

// index of value i (0..31) of sub-block j
template <ggml_type type>
static __device__ __forceinline__ int turbo_cuda_idx(const typename turbo_cuda_traits<type>::block * x, const int j, const int i) {
    if constexpr (type == GGML_TYPE_TURBO4) {
        return (x->qs[16*j + (i & 15)] >> (4*(i >> 4))) & 15;
    } else {
        const int lo2 = (x->qs[8*j + (i & 7)] >> (2*(i >> 3))) & 3;
        if constexpr (type == GGML_TYPE_TURBO3) {
            return lo2 | ((x->qh[4*j + (i >> 3)] >> (i & 7)) & 1) << 2;
        } else {
            return lo2;
        }
    }
}

// indices of values 4m .. 4m+3 (m = 0..7) of sub-block j, one per byte of the result.
// Blocks are 2-byte aligned (34, 26 and 18 bytes), hence the 2-byte copies.
template <ggml_type type>
static __device__ __forceinline__ uint32_t turbo_cuda_idx4(const typename turbo_cuda_traits<type>::block * x, const int j, const int m) {
    uint32_t q;
    if constexpr (type == GGML_TYPE_TURBO4) {
        ggml_cuda_memcpy_1<sizeof(q), 2>(&q, x->qs + 16*j + 4*(m & 3));
        return (q >> (4*(m >> 2))) & 0x0F0F0F0F;
    } else {
        ggml_cuda_memcpy_1<sizeof(q), 2>(&q, x->qs + 8*j + 4*(m & 1));
        q = (q >> (2*(m >> 1))) & 0x03030303;
        if constexpr (type == GGML_TYPE_TURBO3) {
            uint32_t h;
            ggml_cuda_memcpy_1<sizeof(h), 2>(&h, x->qh + 4*j);
            h >>= 4*m;
            q |= (h & 1) << 2 | (h & 2) << 9 | (h & 4) << 16 | (h & 8) << 23; // bit t -> byte t, bit 2
        }
        return q;
    }
}

// the codebook entries of four byte-wise indices, packed as four int8 (for dp4a)
template <ggml_type type>
static __device__ __forceinline__ int turbo_cuda_lookup4(const uint32_t idx4) {
    const uint32_t * table = (const uint32_t *) turbo_cuda_traits<type>::values();
    // __byte_perm takes one selector nibble per result byte: move byte b's index to nibble b
    const uint32_t x   = idx4 | (idx4 >> 4);
    const uint32_t sel = (x & 0xFF) | ((x >> 8) & 0xFF00);
    if constexpr (turbo_cuda_traits<type>::n == 16) {
        // __byte_perm uses the low 3 bits of each nibble: look up in both halves of the
        // table, then pick the half with the index's fourth bit
        const uint32_t lo = __byte_perm(table[0], table[1], sel);
        const uint32_t hi = __byte_perm(table[2], table[3], sel);
        return (int) __byte_perm(lo, hi, 0x3210 | ((sel & 0x8888) >> 1));
    } else if constexpr (turbo_cuda_traits<type>::n == 8) {
        return (int) __byte_perm(table[0], table[1], sel);
    } else {
        static_assert(turbo_cuda_traits<type>::n == 4, "bad codebook size");
        return (int) __byte_perm(table[0], 0, sel);
    }
}

// dequantize_kernel_t (qk = QK_TURBO, qr = QR_TURBO): v.x, v.y = value iqs of sub-blocks 0, 1
template <ggml_type type>
static __device__ __forceinline__ void dequantize_turbo(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const typename turbo_cuda_traits<type>::block * x = (const typename turbo_cuda_traits<type>::block *) vx + ib;
    const int8_t * values = turbo_cuda_traits<type>::values();
    v.x = turbo_cuda_scale(x->s, 0) * (float) values[turbo_cuda_idx<type>(x, 0, iqs)];
    v.y = turbo_cuda_scale(x->s, 1) * (float) values[turbo_cuda_idx<type>(x, 1, iqs)];
}

// convert.cu: one switch case per turbo type, `fn` being a converter template over
// <qk, qr, dequantize_kernel>
#define GGML_CUDA_TURBO_CONVERT_CASES(fn)                                                    \
    case GGML_TYPE_TURBO2: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO2>>; \
    case GGML_TYPE_TURBO3: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO3>>; \
    case GGML_TYPE_TURBO4: return fn<QK_TURBO, QR_TURBO, dequantize_turbo<GGML_TYPE_TURBO4>>;

// ------------------------------------------------------------------------------------------
// flash attention, vec kernel (fattn-vec.cuh): K dot q8_1 Q, V to half/float
// ------------------------------------------------------------------------------------------

// Same contract as vec_dot_fattn_vec_KQ_q8_0: thread t handles the 32-bit words
// k_KQ = t, t + nthreads, ... of the head; Q_q8 holds those words of Q as q8_1 and Q_ds the
// (d, sum) of their q8_1 block, which is exactly one turbo sub-block.
template <ggml_type type, int D, int nthreads>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_turbo(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8, const void * __restrict__ Q_ds_v) {

    const typename turbo_cuda_traits<type>::block * K = (const typename turbo_cuda_traits<type>::block *) K_c;
    GGML_UNUSED(Q_v);

    float sum = 0.0f;

#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < int(D/sizeof(int)); k_KQ_0 += nthreads) {
        const int k_KQ = k_KQ_0 + (nthreads == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads);

        const int ib = k_KQ / (QK_TURBO/4);
        const int j  = (k_KQ / (QK_TURBO_SUB/4)) % 2;
        const int m  = k_KQ % (QK_TURBO_SUB/4);

        const int v    = turbo_cuda_lookup4<type>(turbo_cuda_idx4<type>(K + ib, j, m));
        const int sumi = ggml_cuda_dp4a(v, Q_q8[k_KQ_0/nthreads], 0);

        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += turbo_cuda_scale(K[ib].s, j) * Q_ds.x * (float) sumi;
    }

    return sum;
}

// values i0 .. i0+ne-1 of a V row (i0 a multiple of ne), as half or float
template <ggml_type type, typename T, int ne>
static __device__ __forceinline__ void dequantize_V_turbo(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    static_assert(ne == 2 || ne == 4, "bad ne");
    const typename turbo_cuda_traits<type>::block * x = (const typename turbo_cuda_traits<type>::block *) vx + i0/QK_TURBO;

    const int j = (i0 % QK_TURBO) / QK_TURBO_SUB;
    const int i = i0 % QK_TURBO_SUB;

    const int   q = turbo_cuda_lookup4<type>(turbo_cuda_idx4<type>(x, j, i/4));
    const int   o = ne == 4 ? 0 : i % 4; // first byte of q wanted (shifts keep q in a register)
    // the products in float: a V scale can be below half's range
    const float d = turbo_cuda_scale(x->s, j);
    float vals[ne];
#pragma unroll
    for (int l = 0; l < ne; ++l) {
        vals[l] = d * (float) (int8_t) (q >> (8*(o + l)));
    }

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

// The K/V pairs with a vec kernel instance (template-instances/fattn-vec-instance-*.cu,
// GGML_CUDA_FA_QUANTS "turbo"): every pair of {turbo2, turbo3, turbo4, q8_0, f16} with a
// turbo type in it. X(K, V) is called with the enum suffixes.
#define GGML_CUDA_TURBO_FA_PAIRS_K(X, K) X(K, TURBO2) X(K, TURBO3) X(K, TURBO4) X(K, Q8_0) X(K, F16)
#define GGML_CUDA_TURBO_FA_PAIRS(X)                                                         \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO2) GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO3)             \
    GGML_CUDA_TURBO_FA_PAIRS_K(X, TURBO4)                                                   \
    X(Q8_0, TURBO2) X(Q8_0, TURBO3) X(Q8_0, TURBO4) X(F16, TURBO2) X(F16, TURBO3) X(F16, TURBO4)

// ------------------------------------------------------------------------------------------
// quantization (turbo.cu): SET_ROWS and CPY F32 -> turbo, bit-exact with the C reference
// ------------------------------------------------------------------------------------------

void ggml_cuda_turbo_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst);

void ggml_cuda_turbo_cpy_f32(
    ggml_type type, const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream);
