// tqllama: the turbo kernels' counterpart of arch-fallback.h.
#pragma once

// Rename the `_generic` turbo kernels of turbo-cpu.c where no native implementation is
// compiled, which selects the generic implementation, as arch-fallback.h does for quants.c.
// arch/x86/turbo-cpu.c has every kernel with AVX2 and arch/arm/turbo-cpu.c with NEON on
// AArch64 (CMakeLists.txt compiles them on those architectures; without those extensions they
// are empty); everything else runs the generic code: other architectures, GGML_CPU_GENERIC,
// x86 without AVX2, 32-bit ARM.
#if !(defined(__AVX2__) || (defined(__ARM_NEON) && defined(__aarch64__)))
#define ggml_turbo_best_code_generic ggml_turbo_best_code
#define ggml_turbo_indices_generic ggml_turbo_indices
#define ggml_vec_dot_turbo2_q8_0_generic ggml_vec_dot_turbo2_q8_0
#define ggml_vec_dot_turbo3_q8_0_generic ggml_vec_dot_turbo3_q8_0
#define ggml_vec_dot_turbo4_q8_0_generic ggml_vec_dot_turbo4_q8_0
#define ggml_vec_dot_turbo5_q8_0_generic ggml_vec_dot_turbo5_q8_0
#define ggml_vec_dot_turbo2_qjl_q_generic ggml_vec_dot_turbo2_qjl_q
#define ggml_vec_dot_turbo3_qjl_q_generic ggml_vec_dot_turbo3_qjl_q
#define ggml_vec_dot_turbo4_qjl_q_generic ggml_vec_dot_turbo4_qjl_q
#define ggml_vec_mad_turbo2_generic ggml_vec_mad_turbo2
#define ggml_vec_mad_turbo3_generic ggml_vec_mad_turbo3
#define ggml_vec_mad_turbo4_generic ggml_vec_mad_turbo4
#define ggml_vec_mad_turbo5_generic ggml_vec_mad_turbo5
#endif


// the trellis kernels (trellis-cpu.c): arch/x86/trellis-cpu.c with AVX2 and
// arch/arm/trellis-cpu.c with NEON on AArch64, as for the turbo kernels
#if !(defined(__AVX2__) || (defined(__ARM_NEON) && defined(__aarch64__)))
#define ggml_trellis_viterbi_generic ggml_trellis_viterbi
#define ggml_vec_dot_turbo2t_q8_0_generic ggml_vec_dot_turbo2t_q8_0
#define ggml_vec_dot_turbo3t_q8_0_generic ggml_vec_dot_turbo3t_q8_0
#define ggml_vec_mad_turbo2t_generic ggml_vec_mad_turbo2t
#define ggml_vec_mad_turbo3t_generic ggml_vec_mad_turbo3t
#endif
