// tqllama: public helpers for the TurboQuant KV-cache types (turbo2, turbo3, turbo4 and their
// two-stage variants turbo2_qjl, turbo3_qjl, turbo4_qjl).
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

// true for the turbo cache types, the _qjl and trellis (turbo2t, turbo3t) ones included:
// every type whose layers the cache rotates
GGML_API bool ggml_is_turbo(enum ggml_type type);

// the diagonal D_n of the randomized Hadamard rotation R_n = D_n H_n D_n that llama.cpp
// applies to Q, K and V for turbo caches: n values +-1 written to dst (n <= 512)
GGML_API void ggml_turbo_signs(int n, float * dst);

#ifdef __cplusplus
}
#endif
