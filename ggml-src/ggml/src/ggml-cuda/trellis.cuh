// tqllama: CUDA support for the trellis-coded turbo KV-cache types (turbo2t, turbo3t).
//
// The block layout, the window decode, the scale and the quantization rule (a Viterbi search
// over the 2^L window states for three scale candidates) are docs/FORMAT-TRELLIS.md of
// tqllama; the C reference is ggml-trellis-quants.c. The blocks, the constants and the scalar
// pieces of the rule (window extraction, scale decoding, k_ref) are ggml-trellis-common.h's,
// which C shares; it places the generated tables in device memory.
//
// What lives here:
//   - decoding: a value's state from the block's bytes (never a byte past the block), the
//     table lookup, four consecutive values as packed int8 for dp4a,
//   - dequantize_trellis<type>: the dequantize_kernel_t of convert.cu / getrows.cu / cpy.cu,
//   - the flash-attention vec kernel's K dot product (against the q8_1 query, as the turbo
//     types take it) and V dequantization, which stores its values with turbo.cuh's
//     turbo_cuda_store_V,
//   - the quantizer of SET_ROWS and CPY F32 -> trellis, a warp per block, in
//     trellis-warp.cuh / trellis.cu (the row kernels: turbo-rows.cuh).
#pragma once

#include "common.cuh"
#include "convert.cuh"
#include "turbo.cuh"

#define GGML_TURBO_DECL_CUDA
#include "../ggml-trellis-common.h"

static_assert(QK_TRELLIS == 2*WARP_SIZE, "trellis kernels assume blocks of 64 = two values per lane");
static_assert(QK_TRELLIS == 2*QK8_1, "trellis K dot products assume two q8_1 blocks per block");

// dequantize_trellis's iqs is a value index 0..31; it yields values iqs and iqs + 32 (the
// qr == 2 convention of dequantize_block)
#define QR_TRELLIS 2

static constexpr __host__ __device__ bool ggml_cuda_type_is_trellis(const ggml_type type) {
    return type == GGML_TYPE_TURBO2T || type == GGML_TYPE_TURBO3T;
}

// A trellis type: its block, k bits per value, L-bit states, and its table: c(s) = table[s],
// or with `sign` table[s >> 1] negated for odd s (bit 0, the oldest bit of the window)
template <ggml_type type> struct trellis_cuda_traits;

#define TRELLIS_CUDA_TRAITS(T, name, NAME)                                                           \
    template <> struct trellis_cuda_traits<T> {                                                      \
        typedef block_##name block;                                                                  \
        static constexpr int  k    = NAME##_K;                                                       \
        static constexpr int  L    = NAME##_L;                                                       \
        static constexpr bool sign = NAME##_SIGNED;                                                  \
        static __device__ __forceinline__ const int8_t * table()  { return trellis_table_##name; }   \
        static __device__ __forceinline__ const int    * search() { return trellis_search_##name; }  \
    };
TRELLIS_CUDA_TRAITS(GGML_TYPE_TURBO2T, turbo2t, TURBO2T)
TRELLIS_CUDA_TRAITS(GGML_TYPE_TURBO3T, turbo3t, TURBO3T)
#undef TRELLIS_CUDA_TRAITS

template <ggml_type type> using trellis_cuda_block = typename trellis_cuda_traits<type>::block;

// ------------------------------------------------------------------------------------------
// decoding (FORMAT-TRELLIS.md "The state of value t", "The scale", "Reconstruction")
// ------------------------------------------------------------------------------------------

// c(s) of an L-bit state, in [-127, 127] (an integer negation: a zero entry stays +0)
template <ggml_type type>
static __device__ __forceinline__ int trellis_cuda_code(const int s) {
    typedef trellis_cuda_traits<type> tt;
    if constexpr (tt::sign) {
        const int c = tt::table()[s >> 1];
        return s & 1 ? -c : c;
    } else {
        return tt::table()[s];
    }
}

// the block's scale d (0 for a zero block's code 0)
template <ggml_type type>
static __device__ __forceinline__ float trellis_cuda_scale(const trellis_cuda_block<type> * x) {
    return trellis_k_to_d(x->s & TRELLIS_KMAX);
}

// value t (0..63) of a block whose scale is d: d * c(s_t), s_t read as trellis_state reads it
template <ggml_type type>
static __device__ __forceinline__ float trellis_cuda_value(const trellis_cuda_block<type> * x, const float d, const int t) {
    typedef trellis_cuda_traits<type> tt;
    const int s = trellis_state((const uint8_t *) x, sizeof(*x), tt::k, tt::L, t);
    return __fmul_rn(d, (float) trellis_cuda_code<type>(s));
}

// The codes of values 4w .. 4w+3 (w = 0..15), one int8 per byte of the result (for dp4a).
// Their windows are the bits p .. p + 3k + L - 1 of the block, p = 10 + 4k w: for turbo2t
// p & 7 == 2 and 2 + 14 = 16 bits, bytes p/8 and p/8 + 1 (at most 16 and 17 of 18); for
// turbo3t p & 7 is 2 or 6 and at most 6 + 18 = 24 bits, bytes p/8 .. p/8 + 2 (at most 23..25
// of 26). No byte past the block is read.
template <ggml_type type>
static __device__ __forceinline__ int trellis_cuda_codes4(const trellis_cuda_block<type> * x, const int w) {
    typedef trellis_cuda_traits<type> tt;
    static_assert(tt::k == 2 || tt::k == 3, "trellis_cuda_codes4: the windows above are for k = 2 and 3");
    const uint8_t * b = (const uint8_t *) x;
    const int p = TRELLIS_SCALE_BITS + 4*tt::k*w;
    const int i = p >> 3;
    uint32_t win = b[i] | (uint32_t) b[i + 1] << 8;
    if constexpr (tt::k == 3) {
        win |= (uint32_t) b[i + 2] << 16;
    }
    win >>= p & 7;
    uint32_t r = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int s = (win >> (tt::k*j)) & ((1 << tt::L) - 1);
        r |= (uint32_t) (uint8_t) trellis_cuda_code<type>(s) << (8*j);
    }
    return (int) r;
}

// dequantize_kernel_t (qk = QK_TRELLIS, qr = QR_TRELLIS): v.x, v.y = values iqs, iqs + 32
template <ggml_type type>
static __device__ __forceinline__ void dequantize_trellis(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const trellis_cuda_block<type> * x = (const trellis_cuda_block<type> *) vx + ib;
    const float d = trellis_cuda_scale<type>(x);
    v.x = trellis_cuda_value<type>(x, d, iqs);
    v.y = trellis_cuda_value<type>(x, d, iqs + QK_TRELLIS/2);
}

// convert.cu: one switch case per trellis type, `fn` a converter template over
// <qk, qr, dequantize_kernel>
#define GGML_CUDA_TRELLIS_CONVERT_CASES(fn)                                                                  \
    case GGML_TYPE_TURBO2T: return fn<QK_TRELLIS, QR_TRELLIS, dequantize_trellis<GGML_TYPE_TURBO2T>>;        \
    case GGML_TYPE_TURBO3T: return fn<QK_TRELLIS, QR_TRELLIS, dequantize_trellis<GGML_TYPE_TURBO3T>>;

// ------------------------------------------------------------------------------------------
// flash attention, vec kernel (fattn-vec.cuh): K dot q8_1 Q, V to half/float
// ------------------------------------------------------------------------------------------

// Same contract as vec_dot_fattn_vec_KQ_q8_0: thread t handles the 32-bit words
// k_KQ = t, t + nthreads, ... of the head (values 4 k_KQ .. 4 k_KQ + 3); Q_q8 holds those
// words of Q as q8_1 and Q_ds the (d, sum) of their q8_1 block. The block's one scale d
// multiplies both of its q8_1 halves.
template <ggml_type type, int D, int nthreads>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_trellis(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8, const void * __restrict__ Q_ds_v) {

    const trellis_cuda_block<type> * K = (const trellis_cuda_block<type> *) K_c;
    GGML_UNUSED(Q_v);

    float sum = 0.0f;

#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < int(D/sizeof(int)); k_KQ_0 += nthreads) {
        const int k_KQ = k_KQ_0 + (nthreads == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads);

        const int ib = k_KQ / (QK_TRELLIS/4);
        const int w  = k_KQ % (QK_TRELLIS/4);

        const int    v    = trellis_cuda_codes4<type>(K + ib, w);
        const int    sumi = ggml_cuda_dp4a(v, Q_q8[k_KQ_0/nthreads], 0);
        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];

        sum += trellis_cuda_scale<type>(K + ib) * Q_ds.x * (float) sumi;
    }

    return sum;
}

// values i0 .. i0+ne-1 of a V row (i0 a multiple of ne), as half or float
template <ggml_type type, typename T, int ne>
static __device__ __forceinline__ void dequantize_V_trellis(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    static_assert(ne == 2 || ne == 4, "bad ne");
    const trellis_cuda_block<type> * x = (const trellis_cuda_block<type> *) vx + i0/QK_TRELLIS;

    const int i = i0 % QK_TRELLIS;
    const int q = trellis_cuda_codes4<type>(x, i/4);
    const int o = ne == 4 ? 0 : i % 4; // first byte of q wanted
    // the products in float (a V scale can be below half's range), each one IEEE product
    const float d = trellis_cuda_scale<type>(x);
    float vals[ne];
#pragma unroll
    for (int l = 0; l < ne; ++l) {
        vals[l] = __fmul_rn(d, (float) (int8_t) (q >> (8*(o + l))));
    }
    turbo_cuda_store_V<T, ne>(dst, vals);
}

// The K/V pairs with a vec kernel instance (template-instances/fattn-vec-instance-*.cu, in
// GGML_CUDA_FA_QUANTS "turbo"): each trellis type as K and as V, with itself, the other,
// turbo4 keys and q8_0. Other pairs with a trellis type convert K and V to f16 (fattn.cu's
// fallback, which names the pair in a warning). X(K, V) gets the enum suffixes.
#define GGML_CUDA_TRELLIS_FA_PAIRS(X)                                                 \
    X(TURBO3T, TURBO3T) X(TURBO2T, TURBO2T) X(TURBO3T, TURBO2T)                       \
    X(TURBO4, TURBO3T) X(TURBO4, TURBO2T) X(Q8_0, TURBO3T) X(TURBO3T, Q8_0)

// ------------------------------------------------------------------------------------------
// warp kernels (trellis.cu): quantization for SET_ROWS and CPY F32 -> trellis, bit-exact
// with the C reference
// ------------------------------------------------------------------------------------------

void ggml_cuda_trellis_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst);

void ggml_cuda_trellis_cpy_f32(
    ggml_type type, const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream);
