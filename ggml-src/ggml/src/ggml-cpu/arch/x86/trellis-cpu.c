// tqllama: CPU kernels of the trellis-coded turbo types on x86 (AVX2); the generic code and
// the trait glue are ../../trellis-cpu.c.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu-impl.h"
#include "simd-mappings.h"
#include "ggml-trellis-quants.h"

#include "../../trellis-cpu.h"

#if defined(__AVX2__) && defined(GGML_TRELLIS_AVX2)

#include <immintrin.h>

#endif
