// The turbo CUDA device code (ggml-cuda/turbo.cuh, turbo-warp.cuh) run on the CPU: the
// headers compile as plain C++ against tests/cuda/shim (a warp = 32 fibers, see
// shim/common.cuh), so that tests/test_cuda_warp.py can compare what the kernels compute
// with the NumPy reference on a machine without a GPU.
//
// usage: turbo_warp_emu TYPE MODE [D SCALE] < input > output      (TYPE: turbo4, turbo3_qjl, ...)
// with the modes of warp_emu.h:
//   q:    turbo_cuda_quantize_block_warp
//   d:    dequantize_turbo (plain types, the converters', get_rows' and cpy's) or
//         turbo_cuda_dequantize_qjl_warp (_qjl types)
//   v2, v4: dequantize_V_turbo, plain types
//   dot D SCALE: turbo_cuda_project_Q for _qjl keys, then vec_dot_fattn_vec_KQ_turbo

#include "turbo-warp.cuh"

#include "warp_emu.h"

namespace {

template <ggml_type type>
struct turbo_emu {
    typedef turbo_cuda_block<type> block;
    static constexpr bool qjl = turbo_cuda_traits<type>::qjl;

    static void quantize(const std::vector<char> & in) {
        emu_quantize<block, QK_TURBO>(in, [](const float * x, block * y) {
            run_warp([&] { turbo_cuda_quantize_block_warp<type>(x, y); });
        });
    }

    static void dequantize(const std::vector<char> & in) {
        emu_dequantize<block, QK_TURBO>(in, [](const char * vx, const int64_t ib, float * y) {
            if constexpr (qjl) {
                run_warp([&] {
                    const int lane = threadIdx.x;
                    turbo_cuda_dequantize_qjl_warp<type>((const block *) vx + ib, y[lane], y[lane + WARP_SIZE]);
                });
            } else {
                emu_dequantize_kernel<QK_TURBO>(dequantize_turbo<type>, vx, ib, y);
            }
        });
    }

    template <int ne>
    static void dequantize_V(const std::vector<char> & in) {
        if constexpr (qjl) {
            emu_fail("a _qjl type has no dequantize_V");
        } else {
            emu_dequantize<block, QK_TURBO>(in, [](const char * vx, const int64_t ib, float * y) {
                for (int i = 0; i < QK_TURBO; i += ne) {
                    dequantize_V_turbo<type, float, ne>(vx, y + i, ib*QK_TURBO + i);
                }
            });
        }
    }

    template <int D>
    static void dot(const std::vector<char> & in, const float scale) {
        constexpr int nthreads_KQ = emu_nthreads_KQ<D>;
        emu_dot<D>(in, scale, D/QK_TURBO*sizeof(block), vec_dot_fattn_vec_KQ_turbo<type, D, nthreads_KQ>,
                   [&](const float * q, float * KQ, emu_Q_reg<D> & Q_reg) {
            if constexpr (qjl) {
                turbo_cuda_project_Q<D, 1, nthreads_KQ, 1, float>((const char *) q, D*sizeof(float), 0, 1, scale, KQ, Q_reg);
            }
        });
    }
};

} // namespace

int main(int argc, char ** argv) {
    return emu_main(argc, argv, {
        {"turbo2",     emu_run<turbo_emu<GGML_TYPE_TURBO2>>},
        {"turbo3",     emu_run<turbo_emu<GGML_TYPE_TURBO3>>},
        {"turbo4",     emu_run<turbo_emu<GGML_TYPE_TURBO4>>},
        {"turbo5",     emu_run<turbo_emu<GGML_TYPE_TURBO5>>},
        {"turbo2_qjl", emu_run<turbo_emu<GGML_TYPE_TURBO2_QJL>>},
        {"turbo3_qjl", emu_run<turbo_emu<GGML_TYPE_TURBO3_QJL>>},
        {"turbo4_qjl", emu_run<turbo_emu<GGML_TYPE_TURBO4_QJL>>},
    });
}
