// The Metal turbo helpers (ggml-metal/kernels/turbo.h) compiled as plain C++: quantizes
// float32 rows to blocks, or dequantizes blocks the way the kernels do (16 or 4 values
// per call), so that tests/test_metal.py can compare both with the NumPy reference.
//
// usage: turbo_helpers BITS q|d16|d4 < input > output
//   q:   float32 values (a multiple of 64) in, blocks out
//   dN:  blocks in, float32 values out, N values per call of turbo{BITS}_dequantize

#include "turbo.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

template <typename block_t>
static int quantize(void (*quantize_block)(const float *, block_t &)) {
    float x[QK_TURBO];
    while (std::fread(x, sizeof(float), QK_TURBO, stdin) == QK_TURBO) {
        block_t b;
        quantize_block(x, b);
        std::fwrite(&b, sizeof(b), 1, stdout);
    }
    return std::ferror(stdin) ? 1 : 0;
}

template <typename block_t>
static int dequantize(void (*dequantize_values)(const block_t *, int, int, float *), int n) {
    block_t b;
    float y[QK_TURBO];
    while (std::fread(&b, sizeof(b), 1, stdin) == 1) {
        for (int i0 = 0; i0 < QK_TURBO; i0 += n) {
            dequantize_values(&b, i0, n, y + i0);
        }
        std::fwrite(y, sizeof(float), QK_TURBO, stdout);
    }
    return std::ferror(stdin) ? 1 : 0;
}

template <typename block_t>
static int run(const char * mode, void (*quantize_block)(const float *, block_t &),
               void (*dequantize_values)(const block_t *, int, int, float *)) {
    if (std::strcmp(mode, "q") == 0) {
        return quantize(quantize_block);
    }
    if (std::strcmp(mode, "d16") == 0) {
        return dequantize(dequantize_values, 16);
    }
    if (std::strcmp(mode, "d4") == 0) {
        return dequantize(dequantize_values, 4);
    }
    std::fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s BITS q|d16|d4 < input > output\n", argv[0]);
        return 2;
    }
    switch (std::atoi(argv[1])) {
        case 2: return run(argv[2], quantize_turbo2, turbo2_dequantize);
        case 3: return run(argv[2], quantize_turbo3, turbo3_dequantize);
        case 4: return run(argv[2], quantize_turbo4, turbo4_dequantize);
        case 5: return run(argv[2], quantize_turbo5, turbo5_dequantize);
        default:
            std::fprintf(stderr, "no turbo type with %s bits\n", argv[1]);
            return 2;
    }
}
