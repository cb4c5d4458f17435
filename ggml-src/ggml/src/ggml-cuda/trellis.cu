// tqllama: the trellis warp kernels on CUDA: quantization (SET_ROWS, CPY F32 -> turbo2t /
// turbo3t) with the row kernels of turbo-rows.cuh. One warp per block of 64 values, with its
// scratch in shared memory; the per-block work and its bit-exactness argument are in
// trellis-warp.cuh.
#include "trellis-warp.cuh"
#include "turbo-rows.cuh"

#define CUDA_TRELLIS_BLOCK_SIZE 128 // 4 warps; each handles one block of 64 values
#define CUDA_TRELLIS_WARPS (CUDA_TRELLIS_BLOCK_SIZE/WARP_SIZE)

// the trellis types for turbo-rows.cuh: the Viterbi search of a warp keeps its path errors and
// back pointers in shared memory, a scratch per warp of the CUDA block
struct trellis_family {
    static constexpr int qk         = QK_TRELLIS;
    static constexpr int block_size = CUDA_TRELLIS_BLOCK_SIZE;
    typedef turbo_rows_types<GGML_TYPE_TURBO2T, GGML_TYPE_TURBO3T> types;

    template <ggml_type type> using block = trellis_cuda_block<type>;

    template <ggml_type type>
    static __device__ __forceinline__ void quantize_block(const float * __restrict__ x, block<type> * __restrict__ y) {
        __shared__ trellis_cuda_scratch<type> scratch[CUDA_TRELLIS_WARPS];
        trellis_cuda_quantize_block_warp<type>(x, y, &scratch[threadIdx.x / WARP_SIZE]);
    }
};

void ggml_cuda_trellis_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    turbo_rows_set_rows<trellis_family>(ctx, dst, __func__);
}

void ggml_cuda_trellis_cpy_f32(ggml_type type, TURBO_ROWS_CPY_PARAMS, cudaStream_t stream) {
    turbo_rows_cpy_f32<trellis_family>(type, TURBO_ROWS_CPY_ARGS, stream, __func__);
}
