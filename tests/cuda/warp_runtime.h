// The emulated warp of tests/cuda/*_warp_emu.cpp (the device code of ggml-cuda run on the
// CPU): the 32 lanes of tests/emu/lane_fibers.h, run in turn from one warp-wide operation to
// the next (shim/common.cuh declares the operations), where the lanes exchange their
// operands; plus the emulators' output.
// Included once, by the emulator's main file, after the device headers.
#pragma once

#include "lane_fibers.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

static_assert(lane_fibers::COUNT == WARP_SIZE, "a warp is the 32 lanes of lane_fibers.h");

// ---- the emulated warp (shim/common.cuh) --------------------------------------------------

turbo_emu_uint3 threadIdx = {0, 0, 0};

namespace {

// the warp-wide operation a lane waits at: its operand, and the result the exchange gives it
struct emu_lane {
    turbo_emu_op op;
    const char * what;
    uint32_t     value;
    int          arg;
    uint32_t     result;
};

emu_lane g_lanes[WARP_SIZE];
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

// every lane waits at a warp-wide operation: the same one (or a divergence), whose results
// are computed here for all lanes at once
void emu_exchange() {
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

// runs `body` on the 32 lanes of one warp, to completion
void run_warp(const std::function<void()> & body) {
    lane_fibers::run(
        [&](int lane) {
            threadIdx = {(unsigned) lane, 0, 0};
            body();
        },
        g_reverse, emu_exchange,
        [](int waiting) {
            emu_fail("diverged: some lanes returned while others wait at " + std::string(g_lanes[waiting].what));
        });
}

} // namespace

uint32_t turbo_emu_collective(turbo_emu_op op, uint32_t value, int arg, const char * what) {
    const int l = lane_fibers::current();
    emu_lane & lane = g_lanes[l];
    lane.op    = op;
    lane.value = value;
    lane.arg   = arg;
    lane.what  = what;
    lane_fibers::wait();
    threadIdx = {(unsigned) l, 0, 0}; // the lanes that ran since set it to theirs
    return lane.result;
}

// ---- output -------------------------------------------------------------------------------

namespace {

void write_all(const void * data, size_t n) {
    if (std::fwrite(data, 1, n, stdout) != n) {
        emu_fail("short write");
    }
}

} // namespace
