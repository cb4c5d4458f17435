// tqllama: the warp-per-block row kernels that the turbo types (turbo.cu) and the trellis
// types (trellis.cu) share: SET_ROWS and CPY F32 -> quant, one warp quantizing each block,
// with set-rows.cu's and cpy.cu's index arithmetic, and their launchers. Included by those
// two .cu files only.
//
// A family `fam` is what differs between them (turbo.cu's turbo_family, trellis.cu's
// trellis_family):
//   fam::qk                      values per block, a warp's worth
//   fam::block_size              threads per CUDA block (a multiple of WARP_SIZE)
//   fam::types                   its types, a turbo_rows_types<...>
//   fam::block<type>             the block of a type
//   fam::quantize_block<type>(x, y)
//                                the warp collective that quantizes the qk floats at x into y;
//                                it owns any shared-memory scratch, one per warp of the CUDA
//                                block
#pragma once

#include "common.cuh"

#include <type_traits>

// a list of types, for turbo_rows_dispatch
template <ggml_type... types> struct turbo_rows_types {};

#define TURBO_ROWS_CPY_PARAMS                                                                                                \
    const char * cx, char * cdst, const int64_t ne,                                                                         \
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02, \
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11, \
    const int64_t nb12, const int64_t nb13
#define TURBO_ROWS_CPY_ARGS cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13

// ------------------------------------------------------------------------------------------
// kernels: a warp per block
// ------------------------------------------------------------------------------------------

template <typename fam, ggml_type type, typename idx_t>
static __global__ void k_set_rows_warp(
        const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nblocks_row, const int64_t ne01, const int64_t ne02,
        const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03,
        const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    typedef typename fam::template block<type> block;

    const int64_t ib = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return; // the whole warp
    }

    int64_t tmp = ib / nblocks_row;
    const int64_t i00 = (ib % nblocks_row) * fam::qk;
    const int64_t i01 = tmp % ne01;
    tmp /= ne01;
    const int64_t i02 = tmp % ne02;
    const int64_t i03 = tmp / ne02;

    // src1 broadcasts over dims 2 and 3
    const int64_t i10 = i01;
    const int64_t i11 = i02 % ne11;
    const int64_t i12 = i03 % ne12;

    ggml_cuda_pdl_sync();
    const int64_t dst_row = src1[i10*s10 + i11*s11 + i12*s12];

    const float * x = src0 + i01*s01 + i02*s02 + i03*s03 + i00;
    block * y = (block *) (dst + dst_row*nb1 + i02*nb2 + i03*nb3) + i00/fam::qk;

    fam::template quantize_block<type>(x, y);
}

// cpy.cu's index arithmetic (cpy_f32_q, cpy_q_f32) with one warp per block: the offsets of
// the block of qk values that starts at element i, in the float tensor (f) and in the
// quantized tensor (q)
struct turbo_rows_cpy_offsets {
    int64_t f, q;
};

template <int qk>
static __device__ __forceinline__ turbo_rows_cpy_offsets turbo_rows_cpy_offsets_of(const int64_t i, const bool src_is_quant,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13) {
    const int64_t i03 = i/(ne00 * ne01 * ne02);
    const int64_t i02 = (i - i03*ne00*ne01*ne02 )/ (ne00*ne01);
    const int64_t i01 = (i - i03*ne00*ne01*ne02  -  i02*ne01*ne00) / ne00;
    const int64_t i00 = i - i03*ne00*ne01*ne02 - i02*ne01*ne00 - i01*ne00;

    const int64_t i13 = i/(ne10 * ne11 * ne12);
    const int64_t i12 = (i - i13*ne10*ne11*ne12) / (ne10*ne11);
    const int64_t i11 = (i - i13*ne10*ne11*ne12 - i12*ne10*ne11) / ne10;
    const int64_t i10 = i - i13*ne10*ne11*ne12 - i12*ne10*ne11 - i11*ne10;

    if (src_is_quant) {
        return { i10*nb10 + i11*nb11 + i12*nb12 + i13*nb13, (i00/qk)*nb00 + i01*nb01 + i02*nb02 + i03*nb03 };
    }
    return { i00*nb00 + i01*nb01 + i02*nb02 + i03*nb03, (i10/qk)*nb10 + i11*nb11 + i12*nb12 + i13*nb13 };
}

// F32 -> a type of the family
template <typename fam, ggml_type type>
static __global__ void k_cpy_f32_warp(TURBO_ROWS_CPY_PARAMS) {
    typedef typename fam::template block<type> block;

    const int64_t i = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE * fam::qk;
    if (i >= ne) {
        return; // the whole warp
    }
    const turbo_rows_cpy_offsets o = turbo_rows_cpy_offsets_of<fam::qk>(i, false,
        ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);

    ggml_cuda_pdl_sync();
    fam::template quantize_block<type>((const float *) (cx + o.f), (block *) (cdst + o.q));
}

// ------------------------------------------------------------------------------------------
// launchers
// ------------------------------------------------------------------------------------------

// a warp per block: the CUDA blocks of fam::block_size threads that cover nblocks blocks
template <typename fam>
static dim3 turbo_rows_grid(const int64_t nblocks) {
    const int64_t warps_per_cuda_block = fam::block_size / WARP_SIZE;
    const int64_t grid = (nblocks + warps_per_cuda_block - 1) / warps_per_cuda_block;
    GGML_ASSERT(grid <= INT_MAX);
    return dim3((unsigned int) grid);
}

// f(std::integral_constant<ggml_type, T>{}) for the T of `types` that is `type`; `what`, the
// caller, names a type that is not there
template <ggml_type... types, typename F>
static void turbo_rows_dispatch(turbo_rows_types<types...>, const ggml_type type, const char * what, F && f) {
    const bool found = ((type == types && (f(std::integral_constant<ggml_type, types>{}), true)) || ...);
    if (!found) {
        GGML_ABORT("%s: unsupported type %s", what, ggml_type_name(type));
    }
}

template <typename fam, ggml_type type, typename idx_t>
static void set_rows_warp_cuda(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_TENSOR_BINARY_OP_LOCALS

    GGML_ASSERT(ne00 % fam::qk == 0);
    GGML_ASSERT(nb00 == sizeof(float));
    const int64_t nblocks = ne00/fam::qk * ne01 * ne02 * ne03;
    if (nblocks == 0 || ne11 == 0 || ne12 == 0) {
        return;
    }

    k_set_rows_warp<fam, type, idx_t><<<turbo_rows_grid<fam>(nblocks), fam::block_size, 0, stream>>>(
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data,
        nblocks, ne00/fam::qk, ne01, ne02, ne11, ne12,
        nb01/sizeof(float), nb02/sizeof(float), nb03/sizeof(float),
        nb10/sizeof(idx_t), nb11/sizeof(idx_t), nb12/sizeof(idx_t),
        nb1, nb2, nb3);
    CUDA_CHECK(cudaGetLastError());
}

// SET_ROWS F32 -> dst's type
template <typename fam>
static void turbo_rows_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst, const char * what) {
    const ggml_tensor * src0 = dst->src[0];
    const ggml_tensor * src1 = dst->src[1];

    GGML_ASSERT(src0->type == GGML_TYPE_F32);
    GGML_ASSERT(src1->type == GGML_TYPE_I64 || src1->type == GGML_TYPE_I32);
    turbo_rows_dispatch(typename fam::types{}, dst->type, what, [&](auto t) {
        if (src1->type == GGML_TYPE_I64) {
            set_rows_warp_cuda<fam, decltype(t)::value, int64_t>(src0, src1, dst, ctx.stream());
        } else {
            set_rows_warp_cuda<fam, decltype(t)::value, int32_t>(src0, src1, dst, ctx.stream());
        }
    });
}

// CPY F32 -> type, cpy.cu's arguments
template <typename fam>
static void turbo_rows_cpy_f32(const ggml_type type, TURBO_ROWS_CPY_PARAMS, cudaStream_t stream, const char * what) {
    GGML_ASSERT(ne % fam::qk == 0);
    if (ne == 0) {
        return;
    }
    turbo_rows_dispatch(typename fam::types{}, type, what, [&](auto t) {
        k_cpy_f32_warp<fam, decltype(t)::value><<<turbo_rows_grid<fam>(ne/fam::qk), fam::block_size, 0, stream>>>(
            TURBO_ROWS_CPY_ARGS);
    });
    CUDA_CHECK(cudaGetLastError());
}
