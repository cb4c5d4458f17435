// What the emulators tests/cuda/turbo_warp_emu.cpp and trellis_warp_emu.cpp share: the
// command line and the parts of the modes that do not depend on the family of types. A
// family is a struct template over the type, `fam<type>`, with the modes as static members:
//
// usage: EMULATOR TYPE MODE [D SCALE] < input > output
//   q:    float32 values (a multiple of 64) in, blocks out: fam<type>::quantize(in), each
//         block by emu_quantize; the body of the SET_ROWS and CPY kernels, one warp per block
//   d:    blocks in, float32 values out: fam<type>::dequantize(in), each block by
//         emu_dequantize (the converters', get_rows' and cpy's dequantization)
//   v2, v4: blocks in, float32 values out: fam<type>::dequantize_V<2 or 4>(in), the
//         flash-attention vec kernel's V, 2 or 4 values per call
//   dot D SCALE: a query of D float32 values, then K rows of D values as blocks, in; one
//         float32 K . (SCALE q) per row out, as the flash-attention vec kernel computes it:
//         fam<type>::dot<D>(in, SCALE), by emu_dot
// TURBO_EMU_LANES=reverse runs the lanes of the warp in the other order (warp_runtime.h).
//
// Included once, by the emulator's main file, after the device headers.
#pragma once

#include "warp_runtime.h"

#include <utility>

namespace {

// mode q: the blocks of qk floats of `in`, each by quantize(x, y), which runs the warp. Every
// byte of y starts as 0xA5: a byte the warp does not write shows.
template <typename block, int qk, typename F>
void emu_quantize(const std::vector<char> & in, F && quantize) {
    const size_t nblocks = in.size() / (qk*sizeof(float));
    std::vector<block> out(nblocks);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        std::memset((void *) &out[ib], 0xA5, sizeof(block));
        quantize((const float *) in.data() + ib*qk, &out[ib]);
    }
    write_all(out.data(), out.size()*sizeof(block));
}

// modes d, v2, v4: the qk values y of each block ib of the blocks vx = in.data(), by
// dequantize(vx, ib, y)
template <typename block, int qk, typename F>
void emu_dequantize(const std::vector<char> & in, F && dequantize) {
    const size_t nblocks = in.size() / sizeof(block);
    std::vector<float> out(nblocks*qk);
    for (size_t ib = 0; ib < nblocks; ++ib) {
        dequantize(in.data(), (int64_t) ib, out.data() + ib*qk);
    }
    write_all(out.data(), out.size()*sizeof(float));
}

// the qk values of block ib by a dequantize_kernel_t of qr == 2 (iqs = 0 .. qk/2 - 1 yields
// values iqs and iqs + qk/2)
template <int qk, typename K>
void emu_dequantize_kernel(K dequantize_kernel, const void * vx, const int64_t ib, float * y) {
    for (int iqs = 0; iqs < qk/2; ++iqs) {
        float2 v;
        dequantize_kernel(vx, ib, iqs, v);
        y[iqs]        = v.x;
        y[iqs + qk/2] = v.y;
    }
}

// fattn-vec.cuh's threads per K row for a quantized K of head size D
template <int D>
constexpr int emu_nthreads_KQ = D/4 < WARP_SIZE ? D/4 : WARP_SIZE;

// the vec kernel's K . Q of one row (a vec_dot_fattn_vec_KQ_*), on one lane
typedef float (*emu_vec_dot_KQ_t)(const char * K, const void * Q_v, const int * Q_q8, const void * Q_ds);

// the vec kernel's query registers of one column: unused by quantized K, but for the query's
// projection of the _qjl keys
template <int D>
using emu_Q_reg = float2[1][(D/2)/emu_nthreads_KQ<D>];

struct emu_no_projection {
    template <typename Q_reg_t>
    void operator()(const float *, float *, Q_reg_t &) const {}
};

// mode dot, the query scaled and as q8_1 per 32 values (the rule of fattn-common.cuh's
// quantize_q8_1_to_shared), then on every lane project(q, KQ, Q_reg) (the family's query
// projection, through the vec kernel's shared memory KQ) and vec_dot on each row (of
// row_bytes bytes), and the sum over the lanes of a row
template <int D, typename P = emu_no_projection>
void emu_dot(const std::vector<char> & in, const float scale, const size_t row_bytes, const emu_vec_dot_KQ_t vec_dot,
             const P & project = P()) {
    constexpr int nthreads_KQ = emu_nthreads_KQ<D>;
    constexpr int nwords      = D/(int) sizeof(int)/nthreads_KQ; // 32-bit words per lane
    if (in.size() < D*sizeof(float) || (in.size() - D*sizeof(float)) % row_bytes != 0) {
        emu_fail("dot: input is not a query of D floats and whole K rows");
    }
    const float * q     = (const float *) in.data();
    const char  * K     = in.data() + D*sizeof(float);
    const size_t  nrows = (in.size() - D*sizeof(float)) / row_bytes;

    std::vector<float> partial(nrows*WARP_SIZE);
    float KQ[D]; // the vec kernel's shared memory
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
        emu_Q_reg<D> Q_reg;
        project(q, KQ, Q_reg);
        for (size_t r = 0; r < nrows; ++r) {
            partial[r*WARP_SIZE + threadIdx.x] = vec_dot(K + r*row_bytes, Q_reg[0], Q_i32, Q_ds);
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

template <typename fam>
int emu_run(const std::string & mode, int argc, char ** argv) {
    const std::vector<char> in = read_all();
    if (mode == "q") {
        fam::quantize(in);
    } else if (mode == "d") {
        fam::dequantize(in);
    } else if (mode == "v2") {
        fam::template dequantize_V<2>(in);
    } else if (mode == "v4") {
        fam::template dequantize_V<4>(in);
    } else if (mode == "dot" && argc == 5) {
        const int   D     = std::atoi(argv[3]);
        const float scale = std::strtof(argv[4], nullptr);
        switch (D) {
            case  64: fam::template dot< 64>(in, scale); break;
            case 128: fam::template dot<128>(in, scale); break;
            case 256: fam::template dot<256>(in, scale); break;
            default: emu_fail("dot: head size " + std::to_string(D) + " (64, 128 or 256)");
        }
    } else {
        emu_fail("unknown mode " + mode);
    }
    return 0;
}

// the emulator's main: `types` names the family's types, fam<type> as emu_run<fam<type>>
int emu_main(int argc, char ** argv,
             const std::vector<std::pair<std::string, int (*)(const std::string &, int, char **)>> & types) {
    if (argc != 3 && argc != 5) {
        std::fprintf(stderr, "usage: %s TYPE q|d|v2|v4|dot [D SCALE] < input > output\n", argv[0]);
        return 2;
    }
    const std::string type = argv[1];
    const std::string mode = argv[2];
    for (const auto & [name, run] : types) {
        if (name == type) {
            return run(mode, argc, argv);
        }
    }
    std::fprintf(stderr, "unknown type %s\n", type.c_str());
    return 2;
}

} // namespace
