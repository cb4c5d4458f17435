// What a context shift (K-shift) costs each KV cache type, teacher-forced on real text.
//
// Per window of the text: decode N_FIRST tokens, drop N_DISCARD of them after the first
// N_KEEP and shift the rest back (llama_memory_seq_rm + llama_memory_seq_add: the next
// decode re-applies RoPE to every cached key, through the cache type), then decode the
// next N_EVAL tokens and keep their log-probabilities. "fresh" decodes the same N_FIRST
// tokens, drops all but the first N_KEEP and decodes the kept ones again at the positions
// the shift gives them: no shift, and the same key centre as the shifted run (a turbo
// cache takes it from the first ubatch). (The two differ even in f16: shifted keys were
// computed with the dropped tokens in their context.) Each run
// is compared with the f16 cache's run of the same kind; per cache type the program
// prints the mean KLD of the fresh and of the shifted runs, and the standard error of
// their per-token difference, the shift's own cost:
//
//   type fresh_kld shifted_kld diff_se
//
// usage: context_shift MODEL TEXT TYPE...   (tests/test_context_shift.py builds and runs it)
#include "decode_tokens.h"
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_FIRST = 512, N_KEEP = 64, N_DISCARD = 192, N_EVAL = 256, N_WINDOWS = 3, WINDOW_STRIDE = 1024, MAX_TYPES = 16 };

static void quiet(enum ggml_log_level level, const char * text, void * user_data) {
    (void) level; (void) text; (void) user_data;
}

static void die(const char * what) {
    fprintf(stderr, "context_shift: %s\n", what);
    exit(1);
}

// log-probabilities of the N_EVAL tokens after the kept context of window t
static void run(struct llama_model * model, enum ggml_type type, int shifted, const llama_token * t,
                int n_vocab, float * logp) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = 1024;
    cp.n_batch         = 512;
    cp.n_ubatch        = 512;
    cp.n_threads       = 2;
    cp.n_threads_batch = 2;
    cp.type_k          = type;
    cp.type_v          = type;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        die("cannot create the context");
    }
    if (shifted) {
        decode_tokens("context_shift", ctx, t, N_FIRST, 0, DECODE_LOGITS_NONE);
        llama_memory_t mem = llama_get_memory(ctx);
        if (!llama_memory_seq_rm(mem, 0, N_KEEP, N_KEEP + N_DISCARD)) {
            die("llama_memory_seq_rm failed");
        }
        llama_memory_seq_add(mem, 0, N_KEEP + N_DISCARD, -1, -N_DISCARD);
    } else {
        decode_tokens("context_shift", ctx, t, N_FIRST, 0, DECODE_LOGITS_NONE);
        if (!llama_memory_seq_rm(llama_get_memory(ctx), 0, N_KEEP, -1)) {
            die("llama_memory_seq_rm failed");
        }
        decode_tokens("context_shift", ctx, t + N_KEEP + N_DISCARD, N_FIRST - N_KEEP - N_DISCARD, N_KEEP,
                      DECODE_LOGITS_NONE);
    }
    decode_tokens("context_shift", ctx, t + N_FIRST, N_EVAL, N_FIRST - N_DISCARD, DECODE_LOGITS_ALL);
    for (int i = 0; i < N_EVAL; ++i) {
        const float * z = llama_get_logits_ith(ctx, i);
        double mx = -INFINITY, sum = 0.0;
        for (int v = 0; v < n_vocab; ++v) {
            mx = z[v] > mx ? z[v] : mx;
        }
        for (int v = 0; v < n_vocab; ++v) {
            sum += exp(z[v] - mx);
        }
        for (int v = 0; v < n_vocab; ++v) {
            logp[(size_t) i*n_vocab + v] = (float) (z[v] - mx - log(sum));
        }
    }
    llama_free(ctx);
}

// per-token KL(ref || x)
static void kld(const float * ref, const float * x, int n_vocab, double * out) {
    for (int i = 0; i < N_EVAL; ++i) {
        double k = 0.0;
        for (int v = 0; v < n_vocab; ++v) {
            const size_t j = (size_t) i*n_vocab + v;
            k += exp((double) ref[j])*((double) ref[j] - x[j]);
        }
        out[i] = k;
    }
}

static enum ggml_type type_by_name(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * tn = ggml_type_name((enum ggml_type) t);
        if (tn != NULL && strcmp(tn, name) == 0) {
            return (enum ggml_type) t;
        }
    }
    die("unknown cache type");
    return GGML_TYPE_COUNT;
}

int main(int argc, char ** argv) {
    if (argc < 4) {
        die("usage: context_shift MODEL TEXT TYPE...");
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (model == NULL) {
        die("cannot load the model");
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    FILE * f = fopen(argv[2], "rb");
    if (f == NULL) {
        die("cannot open the text");
    }
    static char text[1 << 20];
    const size_t n_text = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    const int n_need = (N_WINDOWS - 1)*WINDOW_STRIDE + N_FIRST + N_EVAL;
    llama_token * tokens = malloc((n_text + 2)*sizeof(llama_token));
    const int n_tokens = llama_tokenize(vocab, text, (int32_t) n_text, tokens, (int32_t) n_text + 2, true, false);
    if (n_tokens < n_need) {
        die("the text is too short");
    }

    const int n_types = argc - 3;
    if (n_types > MAX_TYPES) {
        die("too many cache types");
    }
    enum ggml_type types[MAX_TYPES];
    for (int a = 0; a < n_types; ++a) {
        types[a] = type_by_name(argv[3 + a]);
    }
    double s_fresh[MAX_TYPES] = {0}, s_shift[MAX_TYPES] = {0}, s_d[MAX_TYPES] = {0}, s_d2[MAX_TYPES] = {0};

    const size_t n = (size_t) N_EVAL*n_vocab;
    float * ref = malloc(2*n*sizeof(float)); // f16: fresh, shifted
    float * x   = malloc(n*sizeof(float));
    for (int w = 0; w < N_WINDOWS; ++w) {
        const llama_token * t = tokens + w*WINDOW_STRIDE;
        run(model, GGML_TYPE_F16, 0, t, n_vocab, ref);
        run(model, GGML_TYPE_F16, 1, t, n_vocab, ref + n);
        for (int a = 0; a < n_types; ++a) {
            double k_fresh[N_EVAL], k_shift[N_EVAL];
            run(model, types[a], 0, t, n_vocab, x);
            kld(ref, x, n_vocab, k_fresh);
            run(model, types[a], 1, t, n_vocab, x);
            kld(ref + n, x, n_vocab, k_shift);
            for (int i = 0; i < N_EVAL; ++i) {
                const double d = k_shift[i] - k_fresh[i];
                s_fresh[a] += k_fresh[i];
                s_shift[a] += k_shift[i];
                s_d[a]     += d;
                s_d2[a]    += d*d;
            }
        }
    }
    const double m = N_WINDOWS*N_EVAL;
    for (int a = 0; a < n_types; ++a) {
        const double sd = sqrt(fmax(s_d2[a] - s_d[a]*s_d[a]/m, 0.0)/(m - 1));
        printf("%s %.6f %.6f %.6f\n", argv[3 + a], s_fresh[a]/m, s_shift[a]/m, sd/sqrt(m));
    }
    free(x);
    free(ref);
    free(tokens);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
