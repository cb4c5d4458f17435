// Flash attention with the position-aware key centre (patch 0020) against flash attention
// without it: attention over K - R(p) m with the term q . R(p) m added back to every logit
// must equal attention over K itself, for any cell positions, a mask, GQA and partial RoPE.
//
// usage: fa_key_centre NEOX N_ROT N_KV [--no-term]
// prints the largest difference; exit 1 above 1e-4 (--no-term leaves the term out: the
// check must then fail)

#include "fa_check.h"

#include <string.h>

enum { DK = 64, N_HEAD = 6, N_HEAD_KV = 2, N_Q = 5 };

int main(int argc, char ** argv) {
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "--no-term") == 0)) {
        fprintf(stderr, "usage: fa_key_centre NEOX N_ROT N_KV [--no-term]\n");
        return 2;
    }
    const bool term = argc == 4;
    const int neox = atoi(argv[1]), n_rot = atoi(argv[2]), n_kv = atoi(argv[3]);
    const int n_mask = N_Q;
    unsigned seed = 7;

    float * q   = malloc(sizeof(float)*DK*N_Q*N_HEAD);
    float * k   = malloc(sizeof(float)*DK*n_kv*N_HEAD_KV);
    float * kc  = malloc(sizeof(float)*DK*n_kv*N_HEAD_KV);
    float * v   = malloc(sizeof(float)*DK*n_kv*N_HEAD_KV);
    float * m   = malloc(sizeof(float)*DK*N_HEAD_KV);
    float * tab = malloc(sizeof(float)*n_kv*n_rot);
    ggml_fp16_t * mask = malloc(sizeof(ggml_fp16_t)*n_kv*n_mask);

    for (int i = 0; i < DK*N_Q*N_HEAD; ++i)      q[i] = fa_uniform(&seed);
    for (int i = 0; i < DK*n_kv*N_HEAD_KV; ++i)  v[i] = fa_uniform(&seed);
    for (int i = 0; i < DK*N_HEAD_KV; ++i)       m[i] = 4.0f*fa_uniform(&seed); // a mean larger than the spread
    for (int j = 0; j < n_kv; ++j) {
        for (int i = 0; i < n_mask; ++i) {
            mask[i*n_kv + j] = ggml_fp32_to_fp16((i + 3*j) % 7 == 0 ? -INFINITY : 0.0f);
        }
    }
    // cells in any order: position 5 j mod 997, as after a shift or a defragmentation
    const float theta_scale = powf(10000.0f, -2.0f/n_rot);
    for (int j = 0; j < n_kv; ++j) {
        float theta = (float) ((5*j) % 997);
        for (int i = 0; i < n_rot/2; ++i) {
            tab[(2*i + 0)*n_kv + j] = cosf(theta);
            tab[(2*i + 1)*n_kv + j] = sinf(theta);
            theta *= theta_scale;
        }
        for (int h = 0; h < N_HEAD_KV; ++h) {
            const float * mh = m + h*DK;
            float * kj  = k  + (h*n_kv + j)*DK;
            float * kcj = kc + (h*n_kv + j)*DK;
            float turned[DK];
            for (int d = n_rot; d < DK; ++d) {
                turned[d] = mh[d];
            }
            for (int i = 0; i < n_rot/2; ++i) {
                const int ia = neox ? i : 2*i, ib = neox ? i + n_rot/2 : 2*i + 1;
                const float c = tab[(2*i)*n_kv + j], s = tab[(2*i + 1)*n_kv + j];
                turned[ia] = mh[ia]*c - mh[ib]*s;
                turned[ib] = mh[ia]*s + mh[ib]*c;
            }
            // the cache subtracts m from the channels that do not turn too; the term leaves
            // them out, as their q . m is the same for every key (softmax does not see it)
            for (int d = 0; d < DK; ++d) {
                kj[d]  = fa_uniform(&seed) + turned[d];
                kcj[d] = kj[d] - turned[d];
            }
        }
    }

    struct ggml_context * ctx = fa_context();
    struct ggml_tensor * tq   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DK, N_Q, N_HEAD, 1);
    struct ggml_tensor * tk   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DK, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tkc  = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DK, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tv   = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DK, n_kv, N_HEAD_KV, 1);
    struct ggml_tensor * tm   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, DK, N_HEAD_KV);
    struct ggml_tensor * ttab = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, n_kv, n_rot, 1);
    struct ggml_tensor * tmk  = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_mask, 1, 1);

    const float scale = 1.0f/sqrtf((float) DK);
    struct ggml_tensor * plain   = ggml_flash_attn_ext(ctx, tq, tk,  tv, tmk, scale, 0.0f, 0.0f);
    struct ggml_tensor * centred = ggml_flash_attn_ext(ctx, tq, tkc, tv, tmk, scale, 0.0f, 0.0f);
    if (term) {
        ggml_flash_attn_ext_set_k_center(centred, tq, tm, ttab, neox);
    }

    const struct fa_input inputs[] = {
        { tq, q }, { tk, k }, { tkc, kc }, { tv, v }, { tm, m }, { ttab, tab }, { tmk, mask },
    };
    const int status = fa_compare("fa_key_centre", "plain - centred", ctx, inputs,
                                  (int) (sizeof(inputs)/sizeof(inputs[0])), plain, centred);
    ggml_free(ctx);
    return status;
}
