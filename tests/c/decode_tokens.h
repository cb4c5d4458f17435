// What the programs that decode text through libllama (context_shift.c, graph_nodes.c)
// share: one llama_decode of consecutive tokens of sequence 0.

#pragma once

#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

// which of the tokens get logits
enum decode_logits { DECODE_LOGITS_NONE, DECODE_LOGITS_LAST, DECODE_LOGITS_ALL };

// decodes tokens[0..n) as sequence 0 at positions pos0, pos0 + 1, ...; a failed decode
// prints "PROG: llama_decode failed" and exits with status 1
static void decode_tokens(const char * prog, struct llama_context * ctx, const llama_token * tokens, int n,
                          llama_pos pos0, enum decode_logits logits) {
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
        batch.token[i]     = tokens[i];
        batch.pos[i]       = pos0 + i;
        batch.n_seq_id[i]  = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i]    = logits == DECODE_LOGITS_ALL || (logits == DECODE_LOGITS_LAST && i == n - 1);
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "%s: llama_decode failed\n", prog);
        exit(1);
    }
    llama_batch_free(batch);
}
