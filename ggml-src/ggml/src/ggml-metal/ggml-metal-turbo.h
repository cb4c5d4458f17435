// tqllama: what the Metal backend runs for the turbo KV-cache types, in one place for
// supports_op (ggml-metal-device.m), the pipeline names (ggml-metal-device.cpp) and the
// flash-attention dispatch (ggml-metal-ops.cpp).
#pragma once

#include "ggml.h"
#include "ggml-turbo.h"

#include <stdbool.h>
#include <stdio.h>

// every tqllama type, present and future (they take the enum values from GGML_TYPE_TURBO2
// on): the GET_ROWS and MUL_MAT checks of supports_op are blacklists that would claim them
static inline bool ggml_metal_tqllama_type(enum ggml_type type) {
    return type >= GGML_TYPE_TURBO2 && type < GGML_TYPE_COUNT;
}

// the trellis-coded turbo types (kernels/trellis.h): their SET_ROWS and CPY F32 -> trellis
// kernels run a SIMD group per block, a threadgroup of 32 (ggml-metal-ops.cpp dispatches them)
static inline bool ggml_metal_trellis_type(enum ggml_type type) {
    return type == GGML_TYPE_TURBO2T || type == GGML_TYPE_TURBO3T;
}

// the turbo types with Metal kernels (SET_ROWS, GET_ROWS, CPY to and from F32, the f16
// conversion and the flash-attention kernels): turbo2/3/4/5 and the trellis types; not (yet)
// the two-stage _qjl keys, which ggml_is_turbo includes
static inline bool ggml_metal_turbo_type(enum ggml_type type) {
    return type == GGML_TYPE_TURBO2 || type == GGML_TYPE_TURBO3 || type == GGML_TYPE_TURBO4 ||
           type == GGML_TYPE_TURBO5 || ggml_metal_trellis_type(type);
}

// K or V types that kernels/fa_turbo.metal and kernels/fa_vec_turbo.metal pair with turbo,
// and kernels/fa_trellis.metal and kernels/fa_vec_trellis.metal with the trellis types
static inline bool ggml_metal_turbo_fa_partner(enum ggml_type type) {
    return type == GGML_TYPE_F16 || type == GGML_TYPE_Q8_0 || ggml_metal_turbo_type(type);
}

// flash attention with a turbo K or V
static inline bool ggml_metal_turbo_fa(const struct ggml_tensor * op) {
    return ggml_metal_tqllama_type(op->src[1]->type) || ggml_metal_tqllama_type(op->src[2]->type);
}

// the instantiated turbo configurations: K and V from the partner types, head sizes 64,
// 128 and 256 (a turbo block holds 64 values), the same for K and V
static inline bool ggml_metal_turbo_fa_supported(const struct ggml_tensor * op) {
    const int64_t dk = op->src[1]->ne[0];
    const int64_t dv = op->src[2]->ne[0];
    return ggml_metal_turbo_fa_partner(op->src[1]->type) &&
           ggml_metal_turbo_fa_partner(op->src[2]->type) &&
           dk == dv && (dk == 64 || dk == 128 || dk == 256);
}

// the K/V part of a flash-attention pipeline name: the type when K and V share it (the
// upstream names), "<K>_<V>" otherwise
static inline void ggml_metal_fa_kv_name(char * dst, size_t size, enum ggml_type k, enum ggml_type v) {
    if (k == v) {
        snprintf(dst, size, "%s", ggml_type_name(k));
    } else {
        snprintf(dst, size, "%s_%s", ggml_type_name(k), ggml_type_name(v));
    }
}
