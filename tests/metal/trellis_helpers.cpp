// The Metal trellis helpers (ggml-metal/kernels/trellis.h) compiled as plain C++: quantizes
// float32 rows to blocks the way the SET_ROWS and CPY kernels do (one emulated SIMD group of
// 32 lanes per block, simd_group.h), or dequantizes blocks the way the kernels do (16 or 4
// values per call), so that tests/test_metal.py can compare both with the NumPy reference.
//
// usage: trellis_helpers TYPE q|d16|d4 [reverse] < input > output     (TYPE: turbo2t, turbo3t)
//   q:   float32 values (a multiple of 64) in, blocks out: trellis_quantize_block_simd, the
//        body of kernel_set_rows_trellis and kernel_cpy_f32_trellis, on an emulated SIMD
//        group; its threadgroup scratch is filled with 0xFF bytes (NaN errors, back pointers
//        255) and the output block with 0xA5 before every block, so that a read of scratch
//        nobody wrote, or a byte nobody wrote, shows in the bytes. `reverse` runs the lanes
//        31..0 between barriers (a missing barrier shows in one of the two orders).
//   dN:  blocks in, float32 values out, N values per call of trellis_dequantize (16: get_rows,
//        cpy, flash attention and its f16 conversion; 4: the flash-attention vec kernel)
// Every block is read from, and written to, the end of a page whose next page is
// inaccessible: a read or write past a block (or past a row's 64 floats) is a segfault.

#include "simd_group.h" // before trellis.h: threadgroup, mem_flags, threadgroup_barrier

#include "trellis.h"

#include "lane_fibers.h" // read_all

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// n bytes that end where an inaccessible page begins
struct guarded {
    char * base;
    size_t len;
    char * data;
    explicit guarded(size_t n) {
        const size_t page = (size_t) sysconf(_SC_PAGESIZE);
        const size_t span = (n + page - 1)/page*page;
        len  = span + page;
        base = (char *) mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED || mprotect(base + span, page, PROT_NONE) != 0) {
            std::perror("mmap");
            std::exit(2);
        }
        data = base + span - n;
    }
    ~guarded() { munmap(base, len); }
};

template <typename block_t>
void quantize(const std::vector<char> & in, bool reverse) {
    const size_t nblocks = in.size()/(QK_TRELLIS*sizeof(float));
    std::vector<block_t> out(nblocks);
    guarded x(QK_TRELLIS*sizeof(float));
    guarded y(sizeof(block_t));
    trellis_scratch<block_t> scratch; // the threadgroup's memory
    for (size_t ib = 0; ib < nblocks; ++ib) {
        std::memcpy(x.data, in.data() + ib*QK_TRELLIS*sizeof(float), QK_TRELLIS*sizeof(float));
        std::memset((void *) &scratch, 0xFF, sizeof(scratch));
        std::memset(y.data, 0xA5, sizeof(block_t));
        run_simdgroup([&](int lane) {
            trellis_quantize_block_simd<block_t>((const float *) x.data, (uint8_t *) y.data, &scratch, lane);
        }, reverse);
        std::memcpy((void *) &out[ib], y.data, sizeof(block_t));
    }
    std::fwrite(out.data(), sizeof(block_t), out.size(), stdout);
}

template <typename block_t>
void dequantize(const std::vector<char> & in, int n) {
    const size_t nblocks = in.size()/sizeof(block_t);
    std::vector<float> out(nblocks*QK_TRELLIS);
    guarded b(sizeof(block_t));
    for (size_t ib = 0; ib < nblocks; ++ib) {
        std::memcpy(b.data, in.data() + ib*sizeof(block_t), sizeof(block_t));
        for (int i0 = 0; i0 < QK_TRELLIS; i0 += n) {
            trellis_dequantize((const block_t *) b.data, i0, n, out.data() + ib*QK_TRELLIS + i0);
        }
    }
    std::fwrite(out.data(), sizeof(float), out.size(), stdout);
}

template <typename block_t>
int run(const std::string & mode, bool reverse) {
    const std::vector<char> in = read_all();
    if (mode == "q") {
        quantize<block_t>(in, reverse);
    } else if (mode == "d16") {
        dequantize<block_t>(in, 16);
    } else if (mode == "d4") {
        dequantize<block_t>(in, 4);
    } else {
        std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 2;
    }
    return std::ferror(stdout) ? 1 : 0;
}

} // namespace

int main(int argc, char ** argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && std::string(argv[3]) != "reverse")) {
        std::fprintf(stderr, "usage: %s turbo2t|turbo3t q|d16|d4 [reverse] < input > output\n", argv[0]);
        return 2;
    }
    const std::string type = argv[1];
    const bool reverse = argc == 4;
    if (type == "turbo2t") {
        return run<block_turbo2t>(argv[2], reverse);
    }
    if (type == "turbo3t") {
        return run<block_turbo3t>(argv[2], reverse);
    }
    std::fprintf(stderr, "no trellis type %s\n", argv[1]);
    return 2;
}
