// Stand-in for ggml-cuda/common.cuh when tests/cuda/turbo_warp_emu.cpp and
// trellis_warp_emu.cpp compile the turbo and trellis device code (turbo.cuh, turbo-warp.cuh,
// trellis.cuh, trellis-warp.cuh) as plain C++ for the CPU.
//
// A warp is 32 cooperative fibers (ucontext) in one OS thread, run lane 0..31 in turn (or
// 31..0: tests/cuda/warp_runtime.h); every warp-wide operation (shuffles, ballot,
// __syncthreads, __syncwarp) is a rendezvous: each lane
// deposits its operand and yields, and when all 32 have arrived the results are computed
// for every lane at once, then the lanes resume. A lane that reaches a different warp-wide
// operation than the others, or returns while others wait, is a divergence, which CUDA's
// *_sync operations with a full mask forbid: the emulator aborts and says where.
//
// Arithmetic follows the intrinsics' documented semantics: __f*_rn are IEEE float32
// operations with round-to-nearest (the harness compiles with -ffp-contract=off, so none
// is fused), __byte_perm uses the low 3 bits of each selector nibble, dp4a sums the four
// signed byte products. Half precision is the compiler's _Float16 (IEEE binary16, RNE).
#pragma once

#include "ggml.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))

#define WARP_SIZE 32
#define QK8_1 32

using std::isnan;
using std::max;
using std::min;

// the launchers' declarations in turbo.cuh name these; nothing here calls them
struct ggml_backend_cuda_context;
typedef struct turbo_emu_stream * cudaStream_t;

struct turbo_emu_uint3 { unsigned x, y, z; };
extern turbo_emu_uint3 threadIdx; // the running lane: x = lane, y = 0 (one warp per block)

struct float2 { float x, y; };
static inline float2 make_float2(float x, float y) { return {x, y}; }

typedef _Float16 half;
struct half2 { half x, y; };
static inline float  __half2float(half h) { return (float) h; }
static inline half   __float2half_rn(float f) { return (half) f; }
static inline half   __ushort_as_half(uint16_t u) { half h; std::memcpy(&h, &u, 2); return h; }
static inline uint16_t __half_as_ushort(half h) { uint16_t u; std::memcpy(&u, &h, 2); return u; }
static inline float2 __half22float2(half2 h) { return {(float) h.x, (float) h.y}; }

static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(uint32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t i; std::memcpy(&i, &f, 4); return i; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }

static inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t in = (uint64_t) y << 32 | x;
    uint32_t r = 0;
    for (int n = 0; n < 4; ++n) {
        r |= (uint32_t) ((in >> 8*((s >> 4*n) & 7)) & 0xFF) << 8*n;
    }
    return r;
}

static inline int ggml_cuda_dp4a(const int a, const int b, int c) {
    for (int n = 0; n < 4; ++n) {
        c += (int8_t) (a >> 8*n) * (int8_t) (b >> 8*n);
    }
    return c;
}

template <int nbytes, int alignment = 0>
static inline void ggml_cuda_memcpy_1(void * dst, const void * src) {
    std::memcpy(dst, src, nbytes);
}

// ---- warp-wide operations ----------------------------------------------------------------

enum turbo_emu_op { TURBO_EMU_SHFL, TURBO_EMU_XOR, TURBO_EMU_DOWN, TURBO_EMU_BALLOT, TURBO_EMU_SYNC };

// deposits this lane's operand (4 bytes) and argument, waits for the warp; returns the result
uint32_t turbo_emu_collective(turbo_emu_op op, uint32_t value, int arg, const char * what);

template <typename T>
static inline T turbo_emu_exchange(turbo_emu_op op, T v, int arg, const char * what) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = turbo_emu_collective(op, u, arg, what);
    std::memcpy(&v, &u, 4);
    return v;
}

// the turbo code shuffles over the whole warp only
static inline void turbo_emu_full_width(int width) {
    if (width != WARP_SIZE) {
        std::fprintf(stderr, "emulated warp: shuffle width %d (only %d is modelled)\n", width, WARP_SIZE);
        std::abort();
    }
}

template <typename T>
static inline T __shfl_sync(unsigned, T v, int src, int width = WARP_SIZE) {
    turbo_emu_full_width(width);
    return turbo_emu_exchange(TURBO_EMU_SHFL, v, src, "__shfl_sync");
}
template <typename T>
static inline T __shfl_xor_sync(unsigned, T v, int mask, int width = WARP_SIZE) {
    turbo_emu_full_width(width);
    return turbo_emu_exchange(TURBO_EMU_XOR, v, mask, "__shfl_xor_sync");
}
template <typename T>
static inline T __shfl_down_sync(unsigned, T v, int delta, int width = WARP_SIZE) {
    turbo_emu_full_width(width);
    return turbo_emu_exchange(TURBO_EMU_DOWN, v, delta, "__shfl_down_sync");
}
static inline uint32_t __ballot_sync(unsigned, int pred) {
    return turbo_emu_collective(TURBO_EMU_BALLOT, pred != 0, 0, "__ballot_sync");
}
static inline void __syncthreads() {
    turbo_emu_collective(TURBO_EMU_SYNC, 0, 0, "__syncthreads");
}
static inline void __syncwarp(unsigned = 0xffffffff) {
    turbo_emu_collective(TURBO_EMU_SYNC, 0, 0, "__syncwarp");
}

template <int width = WARP_SIZE>
static inline float warp_reduce_max(float x) {
    for (int offset = width/2; offset > 0; offset >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset, width));
    }
    return x;
}
