// tqllama: the turbo warp kernels on CUDA: quantization (SET_ROWS, CPY F32 -> turbo) of every
// turbo type and dequantization of the _qjl types (convert.cu's converters, CPY -> F32).
// One warp per block of 64 values; the per-block work and its bit-exactness argument are in
// turbo-warp.cuh.
#include "turbo-warp.cuh"

#define CUDA_TURBO_BLOCK_SIZE 128 // 4 warps; each handles one block of 64 values

// ------------------------------------------------------------------------------------------
// kernels: a warp per block
// ------------------------------------------------------------------------------------------

template <ggml_type type, typename idx_t>
static __global__ void k_set_rows_turbo(
        const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nblocks_row, const int64_t ne01, const int64_t ne02,
        const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03,
        const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    const int64_t ib = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return; // the whole warp
    }

    int64_t tmp = ib / nblocks_row;
    const int64_t i00 = (ib % nblocks_row) * QK_TURBO;
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
    turbo_cuda_block<type> * y = (turbo_cuda_block<type> *) (dst + dst_row*nb1 + i02*nb2 + i03*nb3) + i00/QK_TURBO;

    turbo_cuda_quantize_block_warp<type>(x, y);
}

// cpy.cu's index arithmetic (cpy_f32_q, cpy_q_f32) with one warp per block: the offsets of
// the block that starts at element i, in the float tensor (f) and in the turbo tensor (q)
struct turbo_cpy_offsets {
    int64_t f, q;
};

static __device__ __forceinline__ turbo_cpy_offsets turbo_cpy_offsets_of(const int64_t i, const bool src_is_turbo,
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

    if (src_is_turbo) {
        return { i10*nb10 + i11*nb11 + i12*nb12 + i13*nb13, (i00/QK_TURBO)*nb00 + i01*nb01 + i02*nb02 + i03*nb03 };
    }
    return { i00*nb00 + i01*nb01 + i02*nb02 + i03*nb03, (i10/QK_TURBO)*nb10 + i11*nb11 + i12*nb12 + i13*nb13 };
}

#define TURBO_CPY_PARAMS                                                                                                     \
    const char * cx, char * cdst, const int64_t ne,                                                                         \
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02, \
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11, \
    const int64_t nb12, const int64_t nb13
#define TURBO_CPY_ARGS cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13

// F32 -> turbo (any turbo type), or _qjl -> F32 (the destination's block of 64 floats
// contiguous, as cpy_q_f32 writes it)
template <ggml_type type, bool to_turbo>
static __global__ void k_cpy_turbo(TURBO_CPY_PARAMS) {
    const int64_t i = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE * QK_TURBO;
    if (i >= ne) {
        return; // the whole warp
    }
    const turbo_cpy_offsets o = turbo_cpy_offsets_of(i, !to_turbo,
        ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);

    ggml_cuda_pdl_sync();
    if constexpr (to_turbo) {
        turbo_cuda_quantize_block_warp<type>((const float *) (cx + o.f), (turbo_cuda_block<type> *) (cdst + o.q));
    } else {
        float y0, y1;
        turbo_cuda_dequantize_qjl_warp<type>((const turbo_cuda_block<type> *) (cx + o.q), y0, y1);
        float * y = (float *) (cdst + o.f);
        const int lane = threadIdx.x % WARP_SIZE;
        y[lane]             = y0;
        y[lane + WARP_SIZE] = y1;
    }
}

// _qjl -> dst_t, a (ne00, ne01, ne02, ne03) source with row strides s01, s02, s03 in blocks,
// into a contiguous destination (convert.cu's dequantize_block contract)
template <ggml_type type, typename dst_t>
static __global__ void k_dequantize_turbo_qjl(const void * __restrict__ vx, dst_t * __restrict__ y,
        const int64_t nblocks, const int64_t nblocks_row, const int64_t ne01, const int64_t ne02,
        const int64_t s01, const int64_t s02, const int64_t s03) {
    const int64_t ib = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return; // the whole warp
    }

    int64_t tmp = ib / nblocks_row;
    const int64_t i00 = ib % nblocks_row;
    const int64_t i01 = tmp % ne01;
    tmp /= ne01;
    const int64_t i02 = tmp % ne02;
    const int64_t i03 = tmp / ne02;

    ggml_cuda_pdl_sync();
    float y0, y1;
    turbo_cuda_dequantize_qjl_warp<type>((const turbo_cuda_block<type> *) vx + i03*s03 + i02*s02 + i01*s01 + i00, y0, y1);
    const int lane = threadIdx.x % WARP_SIZE;
    y[ib*QK_TURBO + lane]             = ggml_cuda_cast<dst_t>(y0);
    y[ib*QK_TURBO + lane + WARP_SIZE] = ggml_cuda_cast<dst_t>(y1);
}

// ------------------------------------------------------------------------------------------
// launchers
// ------------------------------------------------------------------------------------------

static dim3 turbo_grid(const int64_t nblocks) {
    const int64_t warps_per_cuda_block = CUDA_TURBO_BLOCK_SIZE / WARP_SIZE;
    const int64_t grid = (nblocks + warps_per_cuda_block - 1) / warps_per_cuda_block;
    GGML_ASSERT(grid <= INT_MAX);
    return dim3((unsigned int) grid);
}

// f(std::integral_constant<ggml_type, T>{}) for the turbo type T == type
template <typename F>
static void turbo_dispatch(const ggml_type type, const char * what, F && f) {
    switch (type) {
        case GGML_TYPE_TURBO2:     f(std::integral_constant<ggml_type, GGML_TYPE_TURBO2>{});     break;
        case GGML_TYPE_TURBO3:     f(std::integral_constant<ggml_type, GGML_TYPE_TURBO3>{});     break;
        case GGML_TYPE_TURBO4:     f(std::integral_constant<ggml_type, GGML_TYPE_TURBO4>{});     break;
        case GGML_TYPE_TURBO2_QJL: f(std::integral_constant<ggml_type, GGML_TYPE_TURBO2_QJL>{}); break;
        case GGML_TYPE_TURBO3_QJL: f(std::integral_constant<ggml_type, GGML_TYPE_TURBO3_QJL>{}); break;
        case GGML_TYPE_TURBO4_QJL: f(std::integral_constant<ggml_type, GGML_TYPE_TURBO4_QJL>{}); break;
        default: GGML_ABORT("%s: not a turbo type: %s", what, ggml_type_name(type));
    }
}

template <ggml_type type, typename idx_t>
static void set_rows_turbo_cuda(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_TENSOR_BINARY_OP_LOCALS

    GGML_ASSERT(ne00 % QK_TURBO == 0);
    GGML_ASSERT(nb00 == sizeof(float));
    const int64_t nblocks = ne00/QK_TURBO * ne01 * ne02 * ne03;
    if (nblocks == 0 || ne11 == 0 || ne12 == 0) {
        return;
    }

    k_set_rows_turbo<type, idx_t><<<turbo_grid(nblocks), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data,
        nblocks, ne00/QK_TURBO, ne01, ne02, ne11, ne12,
        nb01/sizeof(float), nb02/sizeof(float), nb03/sizeof(float),
        nb10/sizeof(idx_t), nb11/sizeof(idx_t), nb12/sizeof(idx_t),
        nb1, nb2, nb3);
    CUDA_CHECK(cudaGetLastError());
}

void ggml_cuda_turbo_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * src0 = dst->src[0];
    const ggml_tensor * src1 = dst->src[1];

    GGML_ASSERT(src0->type == GGML_TYPE_F32);
    GGML_ASSERT(src1->type == GGML_TYPE_I64 || src1->type == GGML_TYPE_I32);
    turbo_dispatch(dst->type, __func__, [&](auto t) {
        if (src1->type == GGML_TYPE_I64) {
            set_rows_turbo_cuda<decltype(t)::value, int64_t>(src0, src1, dst, ctx.stream());
        } else {
            set_rows_turbo_cuda<decltype(t)::value, int32_t>(src0, src1, dst, ctx.stream());
        }
    });
}

void ggml_cuda_turbo_cpy_f32(ggml_type type, TURBO_CPY_PARAMS, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_TURBO == 0);
    if (ne == 0) {
        return;
    }
    turbo_dispatch(type, __func__, [&](auto t) {
        k_cpy_turbo<decltype(t)::value, true><<<turbo_grid(ne/QK_TURBO), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(TURBO_CPY_ARGS);
    });
    CUDA_CHECK(cudaGetLastError());
}

void ggml_cuda_turbo_qjl_cpy_to_f32(ggml_type type, TURBO_CPY_PARAMS, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_TURBO == 0);
    GGML_ASSERT(ggml_cuda_type_is_turbo_qjl(type));
    if (ne == 0) {
        return;
    }
    turbo_dispatch(type, __func__, [&](auto t) {
        if constexpr (turbo_cuda_traits<decltype(t)::value>::qjl) {
            k_cpy_turbo<decltype(t)::value, false><<<turbo_grid(ne/QK_TURBO), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(TURBO_CPY_ARGS);
        }
    });
    CUDA_CHECK(cudaGetLastError());
}

template <ggml_type type, typename dst_t>
void ggml_cuda_turbo_qjl_convert_nc(const void * x, dst_t * y, int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne03,
                                    int64_t s01, int64_t s02, int64_t s03, cudaStream_t stream) {
    GGML_ASSERT(ne00 % QK_TURBO == 0);
    const int64_t nblocks = ne00/QK_TURBO * ne01 * ne02 * ne03;
    if (nblocks == 0) {
        return;
    }
    k_dequantize_turbo_qjl<type, dst_t><<<turbo_grid(nblocks), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(
        x, y, nblocks, ne00/QK_TURBO, ne01, ne02, s01, s02, s03);
    CUDA_CHECK(cudaGetLastError());
}

template <ggml_type type, typename dst_t>
void ggml_cuda_turbo_qjl_convert(const void * x, dst_t * y, int64_t k, cudaStream_t stream) {
    GGML_ASSERT(k % QK_TURBO == 0);
    ggml_cuda_turbo_qjl_convert_nc<type, dst_t>(x, y, k, 1, 1, 1, k/QK_TURBO, k/QK_TURBO, k/QK_TURBO, stream);
}

#define TURBO_QJL_CONVERT_INSTANCES(type)                                                                   \
    template void ggml_cuda_turbo_qjl_convert<type, half>(const void *, half *, int64_t, cudaStream_t);    \
    template void ggml_cuda_turbo_qjl_convert<type, float>(const void *, float *, int64_t, cudaStream_t);  \
    template void ggml_cuda_turbo_qjl_convert<type, nv_bfloat16>(const void *, nv_bfloat16 *, int64_t, cudaStream_t); \
    template void ggml_cuda_turbo_qjl_convert_nc<type, half>(const void *, half *,                         \
        int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                      \
    template void ggml_cuda_turbo_qjl_convert_nc<type, float>(const void *, float *,                       \
        int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);                      \
    template void ggml_cuda_turbo_qjl_convert_nc<type, nv_bfloat16>(const void *, nv_bfloat16 *,           \
        int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);

TURBO_QJL_CONVERT_INSTANCES(GGML_TYPE_TURBO2_QJL)
TURBO_QJL_CONVERT_INSTANCES(GGML_TYPE_TURBO3_QJL)
TURBO_QJL_CONVERT_INSTANCES(GGML_TYPE_TURBO4_QJL)
