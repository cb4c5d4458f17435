// Flash attention with the first keys' and values' F32 rows (patches 0024, 0028) against
// flash attention over the exact cache: cells with a slot hold garbage in K and V, their
// rows the exact key and value, and attention must equal attention over the exact K and V,
// for several slots, a mask and GQA (6 query heads, 2 KV heads).
//
// usage: fa_sink N_KV (kv | k)
// kv: the rows hold keys and values (2*n_head_kv heads); k: keys only, so the garbage
// values stay and the check must fail. Prints the largest difference; exit 1 above 1e-4.

#include "fa_check.h"

#include <string.h>

enum { D = 64, N_HEAD = 6, N_HEAD_KV = 2, N_Q = 5, N_SLOT = 3 };

int main(int argc, char ** argv) {
    if (argc != 3 || (strcmp(argv[2], "kv") != 0 && strcmp(argv[2], "k") != 0)) {
        fprintf(stderr, "usage: fa_sink N_KV (kv | k)\n");
        return 2;
    }
    const int n_kv = atoi(argv[1]);
    const int n_row_heads = strcmp(argv[2], "kv") == 0 ? 2*N_HEAD_KV : N_HEAD_KV;
    unsigned seed = 11;

    float   * q    = malloc(sizeof(float)*D*N_Q*N_HEAD);
    float   * k    = malloc(sizeof(float)*D*n_kv*N_HEAD_KV);
    float   * v    = malloc(sizeof(float)*D*n_kv*N_HEAD_KV);
    float   * kg   = malloc(sizeof(float)*D*n_kv*N_HEAD_KV); // K and V with garbage in the slots' cells
    float   * vg   = malloc(sizeof(float)*D*n_kv*N_HEAD_KV);
    float   * rows = calloc((size_t) D*n_row_heads*N_SLOT, sizeof(float));
    int32_t * slot = calloc((size_t) n_kv, sizeof(int32_t));
    ggml_fp16_t * mask = malloc(sizeof(ggml_fp16_t)*n_kv*N_Q);

    for (int i = 0; i < D*N_Q*N_HEAD; ++i)      q[i] = fa_uniform(&seed);
    for (int i = 0; i < D*n_kv*N_HEAD_KV; ++i) {
        k[i] = kg[i] = fa_uniform(&seed);
        v[i] = vg[i] = fa_uniform(&seed);
    }
    for (int j = 0; j < n_kv; ++j) {
        for (int i = 0; i < N_Q; ++i) {
            mask[i*n_kv + j] = ggml_fp32_to_fp16((i + 3*j) % 7 == 0 && j % 97 != 0 ? -INFINITY : 0.0f);
        }
    }
    // cells 0, 97, 194 (when there) take slots 2, 0, 1: an attention sink each, a large logit
    for (int s = 0; s < N_SLOT && 97*s < n_kv; ++s) {
        const int j = 97*s, r = (s + 2) % N_SLOT;
        slot[j] = r + 1;
        for (int h = 0; h < N_HEAD_KV; ++h) {
            float * kj = k + (h*n_kv + j)*D, * vj = v + (h*n_kv + j)*D;
            for (int d = 0; d < D; ++d) {
                kj[d] *= 4.0f;
                kg[(h*n_kv + j)*D + d] = 3.0f*fa_uniform(&seed);
                vg[(h*n_kv + j)*D + d] = 3.0f*fa_uniform(&seed);
            }
            memcpy(rows + ((size_t) r*n_row_heads + h)*D, kj, sizeof(float)*D);
            if (n_row_heads == 2*N_HEAD_KV) {
                memcpy(rows + ((size_t) r*n_row_heads + N_HEAD_KV + h)*D, vj, sizeof(float)*D);
            }
        }
    }

    struct ggml_context * ctx = fa_context();
    struct ggml_tensor * tq  = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, N_Q, N_HEAD, 1);
    struct ggml_tensor * tk  = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tv  = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tkg = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tvg = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * trs = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_row_heads, N_SLOT, 1);
    struct ggml_tensor * tsl = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_kv, 1);
    struct ggml_tensor * tmk = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, N_Q, 1, 1);

    const float scale = 1.0f/sqrtf((float) D);
    struct ggml_tensor * exact = ggml_flash_attn_ext(ctx, tq, tk,  tv,  tmk, scale, 0.0f, 0.0f);
    struct ggml_tensor * sunk  = ggml_flash_attn_ext(ctx, tq, tkg, tvg, tmk, scale, 0.0f, 0.0f);
    ggml_flash_attn_ext_set_k_sink(sunk, trs, tsl);

    const struct fa_input inputs[] = {
        { tq, q }, { tk, k }, { tv, v }, { tkg, kg }, { tvg, vg }, { trs, rows }, { tsl, slot },
        { tmk, mask },
    };
    const int status = fa_compare("fa_sink", "exact - rows", ctx, inputs,
                                  (int) (sizeof(inputs)/sizeof(inputs[0])), exact, sunk);
    ggml_free(ctx);
    return status;
}
