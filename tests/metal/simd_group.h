// An emulated Metal SIMD group for tests/metal/trellis_helpers.cpp: what kernels/trellis.h
// takes from the Metal Shading Language besides the common subset of ggml-turbo-common.h,
// with MSL's documented semantics, so that its quantizer runs as plain C++ on the CPU.
//
//   threadgroup            the address space: one scratch that the lanes share (empty here)
//   mem_flags              MSL's flags; threadgroup_barrier takes mem_threadgroup only
//   threadgroup_barrier    every thread of the threadgroup (here: the 32 lanes of the one SIMD
//                          group) waits until all have reached it; threadgroup-memory writes
//                          before it are visible to every lane after it
//
// run_simdgroup(body, reverse) runs body(lane) for lane = 0..31 on the lanes of
// tests/emu/lane_fibers.h: each lane runs to its next barrier, in lane order (reverse:
// 31..0), then the next round starts. A read of another lane's threadgroup write without a
// barrier between them therefore reads stale data in one of the two orders; a lane that
// returns while others wait at a barrier (the barrier in divergent control flow, undefined
// in MSL) aborts.
// Included once, by the emulator's main file, before kernels/trellis.h.
#pragma once

#include "lane_fibers.h"

#include <cstdio>
#include <cstdlib>
#include <functional>

#define threadgroup

enum class mem_flags { mem_none, mem_device, mem_threadgroup, mem_texture };

namespace simd_emu {

[[noreturn]] void fail(const char * msg) {
    std::fprintf(stderr, "emulated SIMD group: %s\n", msg);
    std::exit(3);
}

} // namespace simd_emu

void threadgroup_barrier(mem_flags flags) {
    if (flags != mem_flags::mem_threadgroup) {
        simd_emu::fail("threadgroup_barrier: the emulation orders threadgroup memory only");
    }
    if (lane_fibers::current() < 0) {
        simd_emu::fail("threadgroup_barrier outside run_simdgroup");
    }
    lane_fibers::wait();
}

// body(lane) on the 32 lanes of one SIMD group (the whole threadgroup), to completion
void run_simdgroup(const std::function<void(int)> & body, bool reverse) {
    // at a barrier the lanes exchange nothing: their threadgroup writes are in the one memory
    lane_fibers::run(body, reverse, [] {}, [](int) {
        simd_emu::fail("diverged: some lanes returned while others wait at a threadgroup_barrier");
    });
}
