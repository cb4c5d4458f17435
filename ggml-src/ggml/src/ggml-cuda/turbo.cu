// tqllama: the turbo warp kernels on CUDA: quantization (SET_ROWS, CPY F32 -> turbo) of every
// turbo type, with the row kernels of turbo-rows.cuh, and dequantization of the _qjl types
// (convert.cu's converters, CPY -> F32). One warp per block of 64 values; the per-block work
// and its bit-exactness argument are in turbo-warp.cuh.
#include "turbo-warp.cuh"
#include "turbo-rows.cuh"

#define CUDA_TURBO_BLOCK_SIZE 128 // 4 warps; each handles one block of 64 values

// the turbo types for turbo-rows.cuh: a warp quantizes a block in registers, no scratch
struct turbo_family {
    static constexpr int qk         = QK_TURBO;
    static constexpr int block_size = CUDA_TURBO_BLOCK_SIZE;
    typedef turbo_rows_types<GGML_TYPE_TURBO2, GGML_TYPE_TURBO3, GGML_TYPE_TURBO4, GGML_TYPE_TURBO5,
                             GGML_TYPE_TURBO2_QJL, GGML_TYPE_TURBO3_QJL, GGML_TYPE_TURBO4_QJL> types;

    template <ggml_type type> using block = turbo_cuda_block<type>;

    template <ggml_type type>
    static __device__ __forceinline__ void quantize_block(const float * __restrict__ x, block<type> * __restrict__ y) {
        turbo_cuda_quantize_block_warp<type>(x, y);
    }
};

// the types with a warp dequantizer
typedef turbo_rows_types<GGML_TYPE_TURBO2_QJL, GGML_TYPE_TURBO3_QJL, GGML_TYPE_TURBO4_QJL> turbo_qjl_types;

// ------------------------------------------------------------------------------------------
// kernels: a warp per block
// ------------------------------------------------------------------------------------------

// _qjl -> F32 (the destination's block of 64 floats contiguous, as cpy_q_f32 writes it)
template <ggml_type type>
static __global__ void k_cpy_turbo_qjl_f32(TURBO_ROWS_CPY_PARAMS) {
    const int64_t i = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE * QK_TURBO;
    if (i >= ne) {
        return; // the whole warp
    }
    const turbo_rows_cpy_offsets o = turbo_rows_cpy_offsets_of<QK_TURBO>(i, true,
        ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);

    ggml_cuda_pdl_sync();
    float y0, y1;
    turbo_cuda_dequantize_qjl_warp<type>((const turbo_cuda_block<type> *) (cx + o.q), y0, y1);
    float * y = (float *) (cdst + o.f);
    const int lane = threadIdx.x % WARP_SIZE;
    y[lane]             = y0;
    y[lane + WARP_SIZE] = y1;
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

void ggml_cuda_turbo_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    turbo_rows_set_rows<turbo_family>(ctx, dst, __func__);
}

void ggml_cuda_turbo_cpy_f32(ggml_type type, TURBO_ROWS_CPY_PARAMS, cudaStream_t stream) {
    turbo_rows_cpy_f32<turbo_family>(type, TURBO_ROWS_CPY_ARGS, stream, __func__);
}

void ggml_cuda_turbo_qjl_cpy_to_f32(ggml_type type, TURBO_ROWS_CPY_PARAMS, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_TURBO == 0);
    GGML_ASSERT(ggml_cuda_type_is_turbo_qjl(type));
    if (ne == 0) {
        return;
    }
    turbo_rows_dispatch(turbo_qjl_types{}, type, __func__, [&](auto t) {
        k_cpy_turbo_qjl_f32<decltype(t)::value><<<turbo_rows_grid<turbo_family>(ne/QK_TURBO), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(
            TURBO_ROWS_CPY_ARGS);
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
    k_dequantize_turbo_qjl<type, dst_t><<<turbo_rows_grid<turbo_family>(nblocks), CUDA_TURBO_BLOCK_SIZE, 0, stream>>>(
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
