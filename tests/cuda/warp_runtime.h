// The emulated warp of tests/cuda/*_warp_emu.cpp (the device code of ggml-cuda run on the
// CPU): a warp is 32 cooperative fibers (ucontext), run in turn from one warp-wide operation
// to the next (shim/common.cuh declares the operations), plus the emulators' stdin/stdout.
// Included once, by the emulator's main file, after the device headers.
#pragma once

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

// ---- the emulated warp (shim/common.cuh) --------------------------------------------------

turbo_emu_uint3 threadIdx = {0, 0, 0};

namespace {

struct emu_lane {
    ucontext_t        ctx;
    std::vector<char> stack;
    bool              done;
    turbo_emu_op      op;
    const char *      what;
    uint32_t          value;
    int               arg;
    uint32_t          result;
};

emu_lane                      g_lanes[WARP_SIZE];
ucontext_t                    g_scheduler;
const std::function<void()> * g_body = nullptr;
// TURBO_EMU_LANES=reverse runs the lanes 31..0 between warp-wide operations: a read of
// another lane's shared-memory write without a __syncwarp between them reads stale data in
// one of the two orders
const bool g_reverse = [] {
    const char * s = std::getenv("TURBO_EMU_LANES");
    return s != nullptr && std::string(s) == "reverse";
}();

[[noreturn]] void emu_fail(const std::string & msg) {
    std::fprintf(stderr, "emulated warp: %s\n", msg.c_str());
    std::exit(3);
}

void emu_lane_main() {
    (*g_body)();
    g_lanes[threadIdx.x].done = true; // back to the scheduler through uc_link
}

// runs `body` on the 32 lanes of one warp, to completion
void run_warp(const std::function<void()> & body) {
    g_body = &body;
    for (int l = 0; l < WARP_SIZE; ++l) {
        emu_lane & lane = g_lanes[l];
        lane.stack.resize(256*1024);
        lane.done = false;
        getcontext(&lane.ctx);
        lane.ctx.uc_stack.ss_sp   = lane.stack.data();
        lane.ctx.uc_stack.ss_size = lane.stack.size();
        lane.ctx.uc_link          = &g_scheduler;
        makecontext(&lane.ctx, emu_lane_main, 0);
    }
    for (;;) {
        for (int n = 0; n < WARP_SIZE; ++n) { // each lane runs to its next warp-wide operation
            const int l = g_reverse ? WARP_SIZE - 1 - n : n;
            threadIdx = {(unsigned) l, 0, 0};
            swapcontext(&g_scheduler, &g_lanes[l].ctx);
        }
        int ndone = 0;
        for (const emu_lane & lane : g_lanes) {
            ndone += lane.done;
        }
        if (ndone == WARP_SIZE) {
            return;
        }
        if (ndone > 0) {
            emu_fail("diverged: some lanes returned while others wait at " +
                     std::string(g_lanes[g_lanes[0].done ? WARP_SIZE - 1 : 0].what));
        }
        for (int l = 1; l < WARP_SIZE; ++l) {
            if (g_lanes[l].op != g_lanes[0].op) {
                emu_fail("diverged: lane 0 at " + std::string(g_lanes[0].what) + ", lane " +
                         std::to_string(l) + " at " + g_lanes[l].what);
            }
        }
        uint32_t ballot = 0;
        for (int l = 0; l < WARP_SIZE; ++l) {
            ballot |= (g_lanes[l].value & 1u) << l;
        }
        for (int l = 0; l < WARP_SIZE; ++l) {
            emu_lane & lane = g_lanes[l];
            switch (lane.op) {
                case TURBO_EMU_SHFL:   lane.result = g_lanes[lane.arg & (WARP_SIZE - 1)].value; break;
                case TURBO_EMU_XOR:    lane.result = g_lanes[(l ^ lane.arg) & (WARP_SIZE - 1)].value; break;
                case TURBO_EMU_DOWN:   lane.result = l + lane.arg < WARP_SIZE ? g_lanes[l + lane.arg].value : lane.value; break;
                case TURBO_EMU_BALLOT: lane.result = ballot; break;
                case TURBO_EMU_SYNC:   lane.result = 0; break;
            }
        }
    }
}

} // namespace

uint32_t turbo_emu_collective(turbo_emu_op op, uint32_t value, int arg, const char * what) {
    emu_lane & lane = g_lanes[threadIdx.x];
    lane.op    = op;
    lane.value = value;
    lane.arg   = arg;
    lane.what  = what;
    swapcontext(&lane.ctx, &g_scheduler);
    return lane.result;
}

// ---- input and output ---------------------------------------------------------------

namespace {

std::vector<char> read_all() {
    std::vector<char> data;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) {
        data.insert(data.end(), buf, buf + n);
    }
    return data;
}

void write_all(const void * data, size_t n) {
    if (std::fwrite(data, 1, n, stdout) != n) {
        emu_fail("short write");
    }
}

} // namespace
