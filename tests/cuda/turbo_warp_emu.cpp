// The turbo CUDA device code (ggml-cuda/turbo.cuh, turbo-warp.cuh) run on the CPU: the
// headers compile as plain C++ against tests/cuda/shim (a warp = 32 fibers, see
// shim/common.cuh), so that tests/test_cuda_warp.py can compare what the kernels compute
// with the NumPy reference on a machine without a GPU.
//
// usage: turbo_warp_emu TYPE MODE [D SCALE] < input > output      (TYPE: turbo4, turbo3_qjl, ...)
//   q:    float32 values (a multiple of 64) in, blocks out: turbo_cuda_quantize_block_warp,
//         the body of the SET_ROWS and CPY kernels, one warp per block
//   d:    blocks in, float32 values out: dequantize_turbo (plain types, the converters',
//         get_rows' and cpy's) or turbo_cuda_dequantize_qjl_warp (_qjl types)
//   v2, v4: blocks in, float32 values out: dequantize_V_turbo, 2 or 4 values per call (the
//         flash-attention vec kernel's V), plain types
//   dot D SCALE: a query of D float32 values, then K rows of D values as blocks, in; one
//         float32 K . (SCALE q) per row out, as the flash-attention vec kernel computes it:
//         the query as q8_1 per 32 values (the rule of fattn-common.cuh's
//         quantize_q8_1_to_shared), turbo_cuda_project_Q for _qjl keys, then
//         vec_dot_fattn_vec_KQ_turbo on every lane and the sum over the lanes of a row

#include "turbo-warp.cuh"

#include "warp_runtime.h"

// ---- the modes --------------------------------------------------------------------------

namespace {

template <ggml_type type>
void quantize(const std::vector<char> & in) {
    typedef turbo_cuda_block<type> block;
    const size_t nblocks = in.size() / (QK_TURBO*sizeof(float));
    std::vector<block> out(nblocks);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        const float * x = (const float *) in.data() + ib*QK_TURBO;
        run_warp([&] { turbo_cuda_quantize_block_warp<type>(x, &out[ib]); });
    }
    write_all(out.data(), out.size()*sizeof(block));
}

template <ggml_type type>
void dequantize(const std::vector<char> & in) {
    typedef turbo_cuda_block<type> block;
    const size_t nblocks = in.size() / sizeof(block);
    std::vector<float> out(nblocks*QK_TURBO);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        float * y = out.data() + ib*QK_TURBO;
        if constexpr (turbo_cuda_traits<type>::qjl) {
            const block * x = (const block *) in.data() + ib;
            run_warp([&] {
                const int lane = threadIdx.x;
                turbo_cuda_dequantize_qjl_warp<type>(x, y[lane], y[lane + WARP_SIZE]);
            });
        } else {
            for (int iqs = 0; iqs < QK_TURBO_SUB; ++iqs) {
                float2 v;
                dequantize_turbo<type>(in.data(), (int64_t) ib, iqs, v);
                y[iqs]                = v.x;
                y[iqs + QK_TURBO_SUB] = v.y;
            }
        }
    }
    write_all(out.data(), out.size()*sizeof(float));
}

template <ggml_type type, int ne>
void dequantize_V(const std::vector<char> & in) {
    const size_t n = in.size() / sizeof(turbo_cuda_block<type>) * QK_TURBO;
    std::vector<float> out(n);
    for (size_t i0 = 0; i0 < n; i0 += ne) {
        dequantize_V_turbo<type, float, ne>(in.data(), out.data() + i0, (int64_t) i0);
    }
    write_all(out.data(), out.size()*sizeof(float));
}

template <ggml_type type, int D>
void dot(const std::vector<char> & in, const float scale) {
    constexpr int nthreads_KQ = D/4 < WARP_SIZE ? D/4 : WARP_SIZE; // fattn-vec.cuh's, quantized K
    constexpr int nwords      = D/(int) sizeof(int)/nthreads_KQ;    // 32-bit words per lane
    const size_t  row_bytes   = D/QK_TURBO*sizeof(turbo_cuda_block<type>);
    if (in.size() < D*sizeof(float) || (in.size() - D*sizeof(float)) % row_bytes != 0) {
        emu_fail("dot: input is not a query of D floats and whole K rows");
    }
    const float * q     = (const float *) in.data();
    const char  * K     = in.data() + D*sizeof(float);
    const size_t  nrows = (in.size() - D*sizeof(float)) / row_bytes;

    std::vector<float> partial(nrows*WARP_SIZE);
    float KQ[D]; // the shared memory turbo_cuda_project_Q stages through
    run_warp([&] {
        const int t = threadIdx.x % nthreads_KQ;
        int    Q_i32[nwords];
        float2 Q_ds[nwords];
        float2 Q_reg[1][(D/2)/nthreads_KQ];
        for (int w = 0; w < nwords; ++w) { // the q8_1 block of word k is sub-block k/8
            const int k  = w*nthreads_KQ + t;
            const int i0 = (k/(QK8_1/4))*QK8_1;
            float amax = 0.0f;
            for (int i = 0; i < QK8_1; ++i) {
                amax = fmaxf(amax, fabsf(scale*q[i0 + i]));
            }
            const float d = amax / 127;
            int8_t q8[4] = {0, 0, 0, 0};
            if (d != 0.0f) {
                for (int l = 0; l < 4; ++l) {
                    q8[l] = (int8_t) roundf(scale*q[4*k + l] / d);
                }
            }
            std::memcpy(&Q_i32[w], q8, 4);
            Q_ds[w] = make_float2(d, 0.0f);
        }
        if constexpr (turbo_cuda_traits<type>::qjl) {
            turbo_cuda_project_Q<D, 1, nthreads_KQ, 1, float>((const char *) q, D*sizeof(float), 0, 1, scale, KQ, Q_reg);
        }
        for (size_t r = 0; r < nrows; ++r) {
            partial[r*WARP_SIZE + threadIdx.x] =
                vec_dot_fattn_vec_KQ_turbo<type, D, nthreads_KQ>(K + r*row_bytes, Q_reg[0], Q_i32, Q_ds);
        }
    });
    std::vector<float> out(nrows, 0.0f);
    for (size_t r = 0; r < nrows; ++r) {
        for (int l = 0; l < nthreads_KQ; ++l) { // lanes l + nthreads_KQ, ... repeat lane l
            out[r] += partial[r*WARP_SIZE + l];
        }
    }
    write_all(out.data(), out.size()*sizeof(float));
}

template <ggml_type type>
int run(const std::string & mode, int argc, char ** argv) {
    const std::vector<char> in = read_all();
    if (mode == "q") {
        quantize<type>(in);
    } else if (mode == "d") {
        dequantize<type>(in);
    } else if (mode == "v2" || mode == "v4") {
        if constexpr (turbo_cuda_traits<type>::qjl) {
            emu_fail("a _qjl type has no dequantize_V");
        } else if (mode == "v2") {
            dequantize_V<type, 2>(in);
        } else {
            dequantize_V<type, 4>(in);
        }
    } else if (mode == "dot" && argc == 5) {
        const int   D     = std::atoi(argv[3]);
        const float scale = std::strtof(argv[4], nullptr);
        switch (D) {
            case  64: dot<type,  64>(in, scale); break;
            case 128: dot<type, 128>(in, scale); break;
            case 256: dot<type, 256>(in, scale); break;
            default: emu_fail("dot: head size " + std::to_string(D) + " (64, 128 or 256)");
        }
    } else {
        emu_fail("unknown mode " + mode);
    }
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    if (argc != 3 && argc != 5) {
        std::fprintf(stderr, "usage: %s TYPE q|d|v2|v4|dot [D SCALE] < input > output\n", argv[0]);
        return 2;
    }
    const std::string type = argv[1];
    const std::string mode = argv[2];
    if (type == "turbo2")     return run<GGML_TYPE_TURBO2>(mode, argc, argv);
    if (type == "turbo3")     return run<GGML_TYPE_TURBO3>(mode, argc, argv);
    if (type == "turbo4")     return run<GGML_TYPE_TURBO4>(mode, argc, argv);
    if (type == "turbo2_qjl") return run<GGML_TYPE_TURBO2_QJL>(mode, argc, argv);
    if (type == "turbo3_qjl") return run<GGML_TYPE_TURBO3_QJL>(mode, argc, argv);
    if (type == "turbo4_qjl") return run<GGML_TYPE_TURBO4_QJL>(mode, argc, argv);
    std::fprintf(stderr, "unknown type %s\n", type.c_str());
    return 2;
}
