// What the CPU emulators of GPU code share (tests/cuda/warp_runtime.h, a CUDA warp;
// tests/metal/simd_group.h, a Metal SIMD group): 32 lanes run as cooperative fibers
// (ucontext) in one OS thread, and the harnesses' input, all of stdin.
//
// lane_fibers::run(body, reverse, rendezvous, diverged) runs body(lane) for lane = 0..31 in
// rounds: in each round every lane runs until it waits (lane_fibers::wait(), where the
// lanes meet: a warp-wide operation, a barrier) or returns, in lane order (reverse: 31..0).
// A read of another lane's write without a wait between them therefore reads stale data in
// one of the two orders. When every lane waits, rendezvous() does what the lanes met for
// and the next round starts; when all have returned, run returns. A lane that returns while
// others wait is a divergence (undefined in CUDA's *_sync operations and at an MSL barrier):
// diverged(l), with l a lane that waits, says so and must not return.
// tests/test_cuda_warp.py and tests/test_metal.py compile the emulators with -I tests/emu.
#pragma once

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace lane_fibers {

constexpr int COUNT = 32;

struct lane_state {
    ucontext_t        ctx;
    std::vector<char> stack;
    bool              done;
};

inline lane_state                       g_lanes[COUNT];
inline ucontext_t                       g_scheduler;
inline int                              g_current = -1;
inline const std::function<void(int)> * g_body    = nullptr;

// the lane that runs now; -1 between rounds and outside run
inline int current() {
    return g_current;
}

// called by the running lane: back to the scheduler until the next round
inline void wait() {
    swapcontext(&g_lanes[g_current].ctx, &g_scheduler);
}

inline void lane_main() {
    (*g_body)(g_current);
    g_lanes[g_current].done = true; // back to the scheduler through uc_link
}

// body(lane) on the 32 lanes, to completion, round by round (the top of this file says how)
inline void run(const std::function<void(int)> & body, bool reverse, const std::function<void()> & rendezvous,
                const std::function<void(int)> & diverged) {
    g_body = &body;
    for (int l = 0; l < COUNT; ++l) {
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
        for (int n = 0; n < COUNT; ++n) {
            g_current = reverse ? COUNT - 1 - n : n;
            swapcontext(&g_scheduler, &g_lanes[g_current].ctx);
        }
        g_current = -1;
        int ndone   = 0;
        int waiting = -1;
        for (int l = 0; l < COUNT; ++l) {
            if (g_lanes[l].done) {
                ++ndone;
            } else if (waiting < 0) {
                waiting = l;
            }
        }
        if (ndone == COUNT) {
            return;
        }
        if (ndone > 0) {
            diverged(waiting);
            std::abort(); // a lane that returned has no next round
        }
        rendezvous();
    }
}

} // namespace lane_fibers

// ---- input --------------------------------------------------------------------------------

inline std::vector<char> read_all() {
    std::vector<char> data;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) {
        data.insert(data.end(), buf, buf + n);
    }
    return data;
}
