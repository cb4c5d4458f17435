// The compute graphs a KV cache type costs: nodes per graph and graph reuse, per cache pair.
//
// Per pair: a context of 512 cells; a first prompt ubatch of 64 tokens into the empty cache
// (for a turbo K cache this is the ubatch that sets the key centre), a second prompt ubatch
// of 64 tokens, then N_DECODE single-token decodes. The eval callback counts the nodes the
// scheduler runs in each graph; llama_perf_context counts the graphs reused. Prints
//
//   pair nodes_first_prompt nodes_prompt nodes_decode decode_graphs_reused
//
// pair: K/V, K/V@bN for N boundary layers at each end in q8_0, or K/V@pN for a cache policy
// that puts the K of every N-th layer (0, N, 2N, ...) in q8_0. Every decode must run the
// same number of nodes (printed once); graphs_reused counts the decodes that reused the
// previous decode's graph. A GPU launches at least one kernel per node that is not a view,
// so this count is what a cache type costs a decode step there.
//
// usage: graph_nodes MODEL PAIR...   (tests/test_graph_nodes.py builds and runs it)
#include "decode_tokens.h"
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_PROMPT = 64, N_DECODE = 8, MAX_LAYERS = 512 };

static void quiet(enum ggml_log_level level, const char * text, void * user_data) {
    (void) level; (void) text; (void) user_data;
}

static void die(const char * what, const char * arg) {
    fprintf(stderr, "graph_nodes: %s%s\n", what, arg);
    exit(1);
}

static int n_nodes;

// asked once per node before it runs: count it, never ask for its data
static bool count_node(struct ggml_tensor * t, bool ask, void * user_data) {
    (void) t; (void) user_data;
    n_nodes += ask;
    return false;
}

static enum ggml_type type_by_name(const char * name, size_t len) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * tn = ggml_type_name((enum ggml_type) t);
        if (tn && strlen(tn) == len && strncmp(tn, name, len) == 0) {
            return (enum ggml_type) t;
        }
    }
    die("unknown cache type in ", name);
    return GGML_TYPE_COUNT;
}

// the nodes that decoding tokens[0..n) at positions pos0.. runs
static int decode(struct llama_context * ctx, const llama_token * tokens, int n, llama_pos pos0) {
    n_nodes = 0;
    decode_tokens("graph_nodes", ctx, tokens, n, pos0, DECODE_LOGITS_LAST);
    return n_nodes;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        die("usage: graph_nodes MODEL PAIR...", "");
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        die("cannot load ", argv[1]);
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_token tokens[2*N_PROMPT + N_DECODE];
    for (int i = 0; i < 2*N_PROMPT + N_DECODE; ++i) {
        tokens[i] = (llama_token) (100 + 37*i) % n_vocab;
    }

    for (int a = 2; a < argc; ++a) {
        const char * pair  = argv[a];
        const char * slash = strchr(pair, '/');
        if (slash == NULL) {
            die("a pair is K/V[@bN|@pN]: ", pair);
        }
        const char * at = strchr(slash, '@');

        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx           = 512;
        cp.n_batch         = N_PROMPT;
        cp.n_ubatch        = N_PROMPT;
        cp.n_threads       = 2;
        cp.n_threads_batch = 2;
        cp.type_k          = type_by_name(pair, (size_t) (slash - pair));
        cp.type_v          = type_by_name(slash + 1, at ? (size_t) (at - slash - 1) : strlen(slash + 1));
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        cp.cb_eval         = count_node;
        char model_id[512];
        enum ggml_type policy_k[MAX_LAYERS], policy_v[MAX_LAYERS];
        if (at && at[1] == 'b') {
            cp.cache_boundary_layers = atoi(at + 2);
        } else if (at && at[1] == 'p') {
            const int every = atoi(at + 2);
            const int n_layer = llama_model_n_layer(model);
            if (every < 1 || n_layer > MAX_LAYERS) {
                die("a policy pair is K/V@pN with N >= 1: ", pair);
            }
            for (int il = 0; il < n_layer; ++il) {
                policy_k[il] = il % every == 0 ? GGML_TYPE_Q8_0 : cp.type_k;
                policy_v[il] = cp.type_v;
            }
            llama_model_cache_policy_id(model, model_id, sizeof(model_id));
            cp.cache_policy_type_k  = policy_k;
            cp.cache_policy_type_v  = policy_v;
            cp.cache_policy_n_layer = n_layer;
            cp.cache_policy_model   = model_id;
        } else if (at) {
            die("a pair is K/V[@bN|@pN]: ", pair);
        }
        struct llama_context * ctx = llama_init_from_model(model, cp);
        if (ctx == NULL) {
            die("cannot create a context for ", pair);
        }

        const int first  = decode(ctx, tokens, N_PROMPT, 0);
        const int prompt = decode(ctx, tokens + N_PROMPT, N_PROMPT, N_PROMPT);
        const int reused_before = llama_perf_context(ctx).n_reused;
        int step = -1;
        for (int i = 0; i < N_DECODE; ++i) {
            const int n = decode(ctx, tokens + 2*N_PROMPT + i, 1, 2*N_PROMPT + i);
            if (step >= 0 && n != step) {
                die("decode graphs differ in size for ", pair);
            }
            step = n;
        }
        printf("%s %d %d %d %d\n", pair, first, prompt, step, llama_perf_context(ctx).n_reused - reused_before);
        llama_free(ctx);
    }

    llama_model_free(model);
    llama_backend_free();
    return 0;
}
