// The trellis CUDA device code (ggml-cuda/trellis.cuh, trellis-warp.cuh) run on the CPU: the
// headers compile as plain C++ against tests/cuda/shim (a warp = 32 fibers, see
// shim/common.cuh and warp_runtime.h), so that tests/test_cuda_warp.py can compare what the
// kernels compute with the NumPy reference on a machine without a GPU.
//
// usage: trellis_warp_emu TYPE MODE [D SCALE] < input > output      (TYPE: turbo2t, turbo3t)
//   q:    float32 values (a multiple of 64) in, blocks out: trellis_cuda_quantize_block_warp,
//         the body of the SET_ROWS and CPY kernels, one warp per block, its shared-memory
//         scratch a plain struct filled with 0xFF bytes (NaN errors, back pointers 255)
//         before every block, so that a read of scratch nobody wrote shows in the bytes
//   d:    blocks in, float32 values out: dequantize_trellis (the converters', get_rows' and
//         cpy's dequantize_kernel_t), for iqs = 0..31 of every block
//   v2, v4: blocks in, float32 values out: dequantize_V_trellis, 2 or 4 values per call (the
//         flash-attention vec kernel's V)
//   dot D SCALE: a query of D float32 values, then K rows of D values as blocks, in; one
//         float32 K . (SCALE q) per row out, as the flash-attention vec kernel computes it:
//         the query as q8_1 per 32 values (the rule of fattn-common.cuh's
//         quantize_q8_1_to_shared), then vec_dot_fattn_vec_KQ_trellis on every lane and the
//         sum over the lanes of a row
// TURBO_EMU_LANES=reverse runs the lanes of the warp in the other order (warp_runtime.h).

#include "trellis-warp.cuh"

#include "warp_runtime.h"

namespace {

template <ggml_type type>
void quantize(const std::vector<char> & in) {
    typedef trellis_cuda_block<type> block;
    const size_t nblocks = in.size() / (QK_TRELLIS*sizeof(float));
    std::vector<block> out(nblocks);
    trellis_cuda_scratch<type> scratch; // one warp's shared memory
    for (size_t ib = 0; ib < nblocks; ++ib) {
        const float * x = (const float *) in.data() + ib*QK_TRELLIS;
        std::memset((void *) &scratch, 0xFF, sizeof(scratch));
        std::memset((void *) &out[ib], 0xA5, sizeof(block)); // every byte must be written
        run_warp([&] { trellis_cuda_quantize_block_warp<type>(x, &out[ib], &scratch); });
    }
    write_all(out.data(), out.size()*sizeof(block));
}

template <ggml_type type>
void dequantize(const std::vector<char> & in) {
    typedef trellis_cuda_block<type> block;
    const size_t nblocks = in.size() / sizeof(block);
    std::vector<float> out(nblocks*QK_TRELLIS);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        // each block alone in a buffer of its size: a read past it is a fault under ASan and
        // garbage otherwise, never a neighbour's byte
        std::vector<char> one(in.begin() + ib*sizeof(block), in.begin() + (ib + 1)*sizeof(block));
        float * y = out.data() + ib*QK_TRELLIS;
        for (int iqs = 0; iqs < QK_TRELLIS/2; ++iqs) {
            float2 v;
            dequantize_trellis<type>(one.data(), 0, iqs, v);
            y[iqs]                = v.x;
            y[iqs + QK_TRELLIS/2] = v.y;
        }
    }
    write_all(out.data(), out.size()*sizeof(float));
}

template <ggml_type type, int ne>
void dequantize_V(const std::vector<char> & in) {
    typedef trellis_cuda_block<type> block;
    const size_t nblocks = in.size() / sizeof(block);
    std::vector<float> out(nblocks*QK_TRELLIS);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        std::vector<char> one(in.begin() + ib*sizeof(block), in.begin() + (ib + 1)*sizeof(block));
        for (int i0 = 0; i0 < QK_TRELLIS; i0 += ne) {
            dequantize_V_trellis<type, float, ne>(one.data(), out.data() + ib*QK_TRELLIS + i0, (int64_t) i0);
        }
    }
    write_all(out.data(), out.size()*sizeof(float));
}

template <ggml_type type, int D>
void dot(const std::vector<char> & in, const float scale) {
    constexpr int nthreads_KQ = D/4 < WARP_SIZE ? D/4 : WARP_SIZE; // fattn-vec.cuh's, quantized K
    constexpr int nwords      = D/(int) sizeof(int)/nthreads_KQ;    // 32-bit words per lane
    const size_t  row_bytes   = D/QK_TRELLIS*sizeof(trellis_cuda_block<type>);
    if (in.size() < D*sizeof(float) || (in.size() - D*sizeof(float)) % row_bytes != 0) {
        emu_fail("dot: input is not a query of D floats and whole K rows");
    }
    const float * q     = (const float *) in.data();
    const char  * K     = in.data() + D*sizeof(float);
    const size_t  nrows = (in.size() - D*sizeof(float)) / row_bytes;

    std::vector<float> partial(nrows*WARP_SIZE);
    run_warp([&] {
        const int t = threadIdx.x % nthreads_KQ;
        int    Q_i32[nwords];
        float2 Q_ds[nwords];
        for (int w = 0; w < nwords; ++w) { // the q8_1 block of word k is values 32 (k/8) ..
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
        for (size_t r = 0; r < nrows; ++r) {
            partial[r*WARP_SIZE + threadIdx.x] =
                vec_dot_fattn_vec_KQ_trellis<type, D, nthreads_KQ>(K + r*row_bytes, nullptr, Q_i32, Q_ds);
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
    } else if (mode == "v2") {
        dequantize_V<type, 2>(in);
    } else if (mode == "v4") {
        dequantize_V<type, 4>(in);
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
    if (type == "turbo2t") return run<GGML_TYPE_TURBO2T>(mode, argc, argv);
    if (type == "turbo3t") return run<GGML_TYPE_TURBO3T>(mode, argc, argv);
    std::fprintf(stderr, "unknown type %s\n", type.c_str());
    return 2;
}
