// What the flash-attention checks (fa_key_centre.c, fa_sink.c) share: their inputs' random
// values, the context for their tensors, and running a graph of two attentions on the CPU
// backend and printing and judging their largest difference.

#pragma once

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

// the next value in [-1, 1) of a small LCG: the same inputs on every platform
static float fa_uniform(unsigned * state) {
    *state = *state * 1664525u + 1013904223u;
    return (float) (*state >> 8) / (float) (1u << 24) * 2.0f - 1.0f;
}

// a context for up to 64 tensors and the graph fa_compare builds; without their data, which
// fa_compare allocates on the backend
static struct ggml_context * fa_context(void) {
    struct ggml_init_params ip = { 64*ggml_tensor_overhead() + ggml_graph_overhead(), NULL, true };
    return ggml_init(ip);
}

struct fa_input {
    struct ggml_tensor * tensor;
    const void         * data;
};

// computes a and b (inputs set from their data), prints "max |LABEL| = X over N outputs";
// returns the exit status: 0 when X <= 1e-4, 1 above, 2 when the backend or graph fails
static int fa_compare(const char * prog, const char * label, struct ggml_context * ctx,
                      const struct fa_input * inputs, int n_inputs,
                      struct ggml_tensor * a, struct ggml_tensor * b) {
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, a);
    ggml_build_forward_expand(gf, b);

    ggml_backend_load_all();
    ggml_backend_t cpu = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, NULL);
    if (!cpu) {
        fprintf(stderr, "%s: no CPU backend\n", prog);
        return 2;
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);
    for (int i = 0; i < n_inputs; ++i) {
        ggml_backend_tensor_set(inputs[i].tensor, inputs[i].data, 0, ggml_nbytes(inputs[i].tensor));
    }
    if (ggml_backend_graph_compute(cpu, gf) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "%s: graph failed\n", prog);
        return 2;
    }

    const int64_t n_out = ggml_nelements(a);
    float * xa = malloc(sizeof(float)*n_out);
    float * xb = malloc(sizeof(float)*n_out);
    ggml_backend_tensor_get(a, xa, 0, ggml_nbytes(a));
    ggml_backend_tensor_get(b, xb, 0, ggml_nbytes(b));
    double worst = 0.0;
    for (int64_t i = 0; i < n_out; ++i) {
        worst = fmax(worst, fabs((double) xa[i] - (double) xb[i]));
    }
    printf("max |%s| = %.3g over %lld outputs\n", label, worst, (long long) n_out);

    free(xa);
    free(xb);
    ggml_backend_buffer_free(buf);
    ggml_backend_free(cpu);
    return worst <= 1e-4 ? 0 : 1;
}
