// tqllama: the trellis warp kernels on CUDA: quantization (SET_ROWS, CPY F32 -> turbo2t /
// turbo3t). One warp per block of 64 values, with its scratch in shared memory; the
// per-block work and its bit-exactness argument are in trellis-warp.cuh.
#include "trellis-warp.cuh"

#define CUDA_TRELLIS_BLOCK_SIZE 128 // 4 warps; each handles one block of 64 values
#define CUDA_TRELLIS_WARPS (CUDA_TRELLIS_BLOCK_SIZE/WARP_SIZE)

// ------------------------------------------------------------------------------------------
// kernels: a warp per block
// ------------------------------------------------------------------------------------------

template <ggml_type type, typename idx_t>
static __global__ void k_set_rows_trellis(
        const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nblocks_row, const int64_t ne01, const int64_t ne02,
        const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03,
        const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    __shared__ trellis_cuda_scratch<type> scratch[CUDA_TRELLIS_WARPS];

    const int64_t ib = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return; // the whole warp
    }

    int64_t tmp = ib / nblocks_row;
    const int64_t i00 = (ib % nblocks_row) * QK_TRELLIS;
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
    trellis_cuda_block<type> * y = (trellis_cuda_block<type> *) (dst + dst_row*nb1 + i02*nb2 + i03*nb3) + i00/QK_TRELLIS;

    trellis_cuda_quantize_block_warp<type>(x, y, &scratch[threadIdx.x / WARP_SIZE]);
}

#define TRELLIS_CPY_PARAMS                                                                                                   \
    const char * cx, char * cdst, const int64_t ne,                                                                         \
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02, \
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11, \
    const int64_t nb12, const int64_t nb13
#define TRELLIS_CPY_ARGS cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13

// F32 -> trellis with cpy.cu's index arithmetic (cpy_f32_q) and one warp per block: the block
// that starts at element i, in the float source and in the trellis destination
template <ggml_type type>
static __global__ void k_cpy_f32_trellis(TRELLIS_CPY_PARAMS) {
    __shared__ trellis_cuda_scratch<type> scratch[CUDA_TRELLIS_WARPS];

    const int64_t i = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE * QK_TRELLIS;
    if (i >= ne) {
        return; // the whole warp
    }

    const int64_t i03 = i/(ne00 * ne01 * ne02);
    const int64_t i02 = (i - i03*ne00*ne01*ne02 )/ (ne00*ne01);
    const int64_t i01 = (i - i03*ne00*ne01*ne02  -  i02*ne01*ne00) / ne00;
    const int64_t i00 = i - i03*ne00*ne01*ne02 - i02*ne01*ne00 - i01*ne00;
    const int64_t x_offset = i00*nb00 + i01*nb01 + i02*nb02 + i03*nb03;

    const int64_t i13 = i/(ne10 * ne11 * ne12);
    const int64_t i12 = (i - i13*ne10*ne11*ne12) / (ne10*ne11);
    const int64_t i11 = (i - i13*ne10*ne11*ne12 - i12*ne10*ne11) / ne10;
    const int64_t i10 = i - i13*ne10*ne11*ne12 - i12*ne10*ne11 - i11*ne10;
    const int64_t dst_offset = (i10/QK_TRELLIS)*nb10 + i11*nb11 + i12*nb12 + i13*nb13;

    ggml_cuda_pdl_sync();
    trellis_cuda_quantize_block_warp<type>((const float *) (cx + x_offset), (trellis_cuda_block<type> *) (cdst + dst_offset),
                                           &scratch[threadIdx.x / WARP_SIZE]);
}

// ------------------------------------------------------------------------------------------
// launchers
// ------------------------------------------------------------------------------------------

static dim3 trellis_grid(const int64_t nblocks) {
    const int64_t grid = (nblocks + CUDA_TRELLIS_WARPS - 1) / CUDA_TRELLIS_WARPS;
    GGML_ASSERT(grid <= INT_MAX);
    return dim3((unsigned int) grid);
}

// f(std::integral_constant<ggml_type, T>{}) for the trellis type T == type
template <typename F>
static void trellis_dispatch(const ggml_type type, const char * what, F && f) {
    switch (type) {
        case GGML_TYPE_TURBO2T: f(std::integral_constant<ggml_type, GGML_TYPE_TURBO2T>{}); break;
        case GGML_TYPE_TURBO3T: f(std::integral_constant<ggml_type, GGML_TYPE_TURBO3T>{}); break;
        default: GGML_ABORT("%s: not a trellis type: %s", what, ggml_type_name(type));
    }
}

template <ggml_type type, typename idx_t>
static void set_rows_trellis_cuda(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_TENSOR_BINARY_OP_LOCALS

    GGML_ASSERT(ne00 % QK_TRELLIS == 0);
    GGML_ASSERT(nb00 == sizeof(float));
    const int64_t nblocks = ne00/QK_TRELLIS * ne01 * ne02 * ne03;
    if (nblocks == 0 || ne11 == 0 || ne12 == 0) {
        return;
    }

    k_set_rows_trellis<type, idx_t><<<trellis_grid(nblocks), CUDA_TRELLIS_BLOCK_SIZE, 0, stream>>>(
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data,
        nblocks, ne00/QK_TRELLIS, ne01, ne02, ne11, ne12,
        nb01/sizeof(float), nb02/sizeof(float), nb03/sizeof(float),
        nb10/sizeof(idx_t), nb11/sizeof(idx_t), nb12/sizeof(idx_t),
        nb1, nb2, nb3);
    CUDA_CHECK(cudaGetLastError());
}

void ggml_cuda_trellis_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * src0 = dst->src[0];
    const ggml_tensor * src1 = dst->src[1];

    GGML_ASSERT(src0->type == GGML_TYPE_F32);
    GGML_ASSERT(src1->type == GGML_TYPE_I64 || src1->type == GGML_TYPE_I32);
    trellis_dispatch(dst->type, __func__, [&](auto t) {
        if (src1->type == GGML_TYPE_I64) {
            set_rows_trellis_cuda<decltype(t)::value, int64_t>(src0, src1, dst, ctx.stream());
        } else {
            set_rows_trellis_cuda<decltype(t)::value, int32_t>(src0, src1, dst, ctx.stream());
        }
    });
}

void ggml_cuda_trellis_cpy_f32(ggml_type type, TRELLIS_CPY_PARAMS, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_TRELLIS == 0);
    if (ne == 0) {
        return;
    }
    trellis_dispatch(type, __func__, [&](auto t) {
        k_cpy_f32_trellis<decltype(t)::value><<<trellis_grid(ne/QK_TRELLIS), CUDA_TRELLIS_BLOCK_SIZE, 0, stream>>>(TRELLIS_CPY_ARGS);
    });
    CUDA_CHECK(cudaGetLastError());
}
