// Stand-in for ggml-cuda/convert.cuh (tests/cuda/turbo_warp_emu.cpp): the one helper the
// turbo device code uses from it.
#pragma once

#include "common.cuh"

template <typename dst_t, typename src_t>
static inline dst_t ggml_cuda_cast(src_t x) {
    return (dst_t) x;
}
