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
// run_simdgroup(body, reverse) runs body(lane) for lane = 0..31 as 32 cooperative fibers
// (ucontext): each lane runs to its next barrier, in lane order (reverse: 31..0), then the
// next round starts. A read of another lane's threadgroup write without a barrier between
// them therefore reads stale data in one of the two orders; a lane that returns while others
// wait at a barrier (the barrier in divergent control flow, undefined in MSL) aborts.
// Included once, by the emulator's main file, before kernels/trellis.h.
#pragma once

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define threadgroup

enum class mem_flags { mem_none, mem_device, mem_threadgroup, mem_texture };

namespace simd_emu {

constexpr int WIDTH = 32;

struct lane_state {
    ucontext_t        ctx;
    std::vector<char> stack;
    bool              done;
};

lane_state                         g_lanes[WIDTH];
ucontext_t                         g_scheduler;
int                                g_current = -1;
const std::function<void(int)> *   g_body    = nullptr;
long                               g_barriers = 0; // rounds run, over all groups (a statistic)

[[noreturn]] void fail(const char * msg) {
    std::fprintf(stderr, "emulated SIMD group: %s\n", msg);
    std::exit(3);
}

void lane_main() {
    (*g_body)(g_current);
    g_lanes[g_current].done = true; // back to the scheduler through uc_link
}

} // namespace simd_emu

void threadgroup_barrier(mem_flags flags) {
    using namespace simd_emu;
    if (flags != mem_flags::mem_threadgroup) {
        fail("threadgroup_barrier: the emulation orders threadgroup memory only");
    }
    if (g_current < 0) {
        fail("threadgroup_barrier outside run_simdgroup");
    }
    swapcontext(&g_lanes[g_current].ctx, &g_scheduler);
}

// body(lane) on the 32 lanes of one SIMD group (the whole threadgroup), to completion
void run_simdgroup(const std::function<void(int)> & body, bool reverse) {
    using namespace simd_emu;
    g_body = &body;
    for (int l = 0; l < WIDTH; ++l) {
        lane_state & lane = g_lanes[l];
        lane.stack.resize(256*1024);
        lane.done = false;
        getcontext(&lane.ctx);
        lane.ctx.uc_stack.ss_sp   = lane.stack.data();
        lane.ctx.uc_stack.ss_size = lane.stack.size();
        lane.ctx.uc_link          = &g_scheduler;
        makecontext(&lane.ctx, lane_main, 0);
    }
    for (;;) {
        for (int n = 0; n < WIDTH; ++n) { // each lane runs to its next barrier (or returns)
            const int l = reverse ? WIDTH - 1 - n : n;
            g_current = l;
            swapcontext(&g_scheduler, &g_lanes[l].ctx);
        }
        g_current = -1;
        int ndone = 0;
        for (const lane_state & lane : g_lanes) {
            ndone += lane.done;
        }
        if (ndone == WIDTH) {
            return;
        }
        if (ndone > 0) {
            fail("diverged: some lanes returned while others wait at a threadgroup_barrier");
        }
        ++g_barriers;
    }
}
