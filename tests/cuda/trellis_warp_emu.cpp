// The trellis CUDA device code (ggml-cuda/trellis.cuh, trellis-warp.cuh) run on the CPU: the
// headers compile as plain C++ against tests/cuda/shim (a warp = 32 fibers, see
// shim/common.cuh and warp_runtime.h), so that tests/test_cuda_warp.py can compare what the
// kernels compute with the NumPy reference on a machine without a GPU.
//
// usage: trellis_warp_emu TYPE MODE [D SCALE] < input > output      (TYPE: turbo2t, turbo3t)
// with the modes of warp_emu.h:
//   q:    trellis_cuda_quantize_block_warp, its shared-memory scratch a plain struct filled
//         with 0xFF bytes (NaN errors, back pointers 255) before every block, so that a read
//         of scratch nobody wrote shows in the bytes
//   d:    dequantize_trellis (the converters', get_rows' and cpy's dequantize_kernel_t)
//   v2, v4: dequantize_V_trellis
//   dot D SCALE: vec_dot_fattn_vec_KQ_trellis
// d and v2, v4 read each block alone in a buffer of its size: a read past it is a fault under
// ASan and garbage otherwise, never a neighbour's byte.

#include "trellis-warp.cuh"

#include "warp_emu.h"

namespace {

template <ggml_type type>
struct trellis_emu {
    typedef trellis_cuda_block<type> block;

    static std::vector<char> alone(const char * vx, const int64_t ib) {
        return std::vector<char>(vx + ib*sizeof(block), vx + (ib + 1)*sizeof(block));
    }

    static void quantize(const std::vector<char> & in) {
        trellis_cuda_scratch<type> scratch; // one warp's shared memory
        emu_quantize<block, QK_TRELLIS>(in, [&](const float * x, block * y) {
            std::memset((void *) &scratch, 0xFF, sizeof(scratch));
            run_warp([&] { trellis_cuda_quantize_block_warp<type>(x, y, &scratch); });
        });
    }

    static void dequantize(const std::vector<char> & in) {
        emu_dequantize<block, QK_TRELLIS>(in, [](const char * vx, const int64_t ib, float * y) {
            emu_dequantize_kernel<QK_TRELLIS>(dequantize_trellis<type>, alone(vx, ib).data(), 0, y);
        });
    }

    template <int ne>
    static void dequantize_V(const std::vector<char> & in) {
        emu_dequantize<block, QK_TRELLIS>(in, [](const char * vx, const int64_t ib, float * y) {
            const std::vector<char> one = alone(vx, ib);
            for (int i0 = 0; i0 < QK_TRELLIS; i0 += ne) {
                dequantize_V_trellis<type, float, ne>(one.data(), y + i0, i0);
            }
        });
    }

    template <int D>
    static void dot(const std::vector<char> & in, const float scale) {
        emu_dot<D>(in, scale, D/QK_TRELLIS*sizeof(block), vec_dot_fattn_vec_KQ_trellis<type, D, emu_nthreads_KQ<D>>);
    }
};

} // namespace

int main(int argc, char ** argv) {
    return emu_main(argc, argv, {
        {"turbo2t", emu_run<trellis_emu<GGML_TYPE_TURBO2T>>},
        {"turbo3t", emu_run<trellis_emu<GGML_TYPE_TURBO3T>>},
    });
}
