// tqllama: quantization of the turbo KV-cache types on CUDA (SET_ROWS, CPY F32 -> turbo).
//
// One warp quantizes one block of 64 values, bit-exact with ggml-turbo-quants.c, the C
// reference of docs/FORMAT.md:
//   - lane l holds values l and l + 32; amax is a warp max (exact in any order);
//   - the scale search gives each lane one candidate scale, and that lane sums the squared
//     errors of the sub-block sequentially in index order, as the reference does;
//   - the reference is compiled without fused multiply-add: here every step is an _rn
//     intrinsic, which nvcc never fuses and which stays IEEE under -use_fast_math
//     (ggml-cuda's flag); 1/d and amax/CBMAX are correctly rounded (__frcp_rn, __fdiv_rn)
//     like C's divisions.
// Tolerance against the CPU: none (the same bytes), except on float32 subnormal inputs
// (|x| < 2^-126), which -use_fast_math flushes to zero; no KV activation is that small.
#include "turbo.cuh"

#define TURBO_FULL_MASK 0xFFFFFFFFu
#define CUDA_TURBO_QUANTIZE_BLOCK_SIZE 128 // 4 warps; each quantizes one block of 64 values

// ------------------------------------------------------------------------------------------
// the quantization rule, FORMAT.md steps 0-6: a change of the rule is an edit in this section
// ------------------------------------------------------------------------------------------

// step 0: NaN -> 0, clamp to the f16 range
static __device__ __forceinline__ float turbo_cuda_sanitize(const float v) {
    return isnan(v) ? 0.0f : fminf(fmaxf(v, -TURBO_XMAX), TURBO_XMAX);
}

static __device__ __forceinline__ int turbo_cuda_clamp_k(const int k) {
    return max(1, min(k, TURBO_KMAX));
}

// step 2: the smallest code whose scale maps amax (> 0) inside the codebook
template <ggml_type type>
static __device__ int turbo_cuda_k_ref(const float amax) {
    const float t = __fdiv_rn(amax, (float) turbo_cuda_traits<type>::cbmax);
    if (t == 0.0f) {
        return 1; // amax underflowed: the smallest scale
    }
    int e;
    const float u = 2.0f*frexpf(t, &e);
    int i = 0;
    while (i < 16 && turbo_scale_mant[i] < u) {
        ++i;
    }
    return turbo_cuda_clamp_k(16*(e - 1 + TURBO_EXP_BIAS) + i);
}

// idx = #{t : y > thresh[t]}
template <ggml_type type>
static __device__ __forceinline__ int turbo_cuda_nearest(const float y) {
    const float * thresh = turbo_cuda_traits<type>::thresh();
    int idx = 0;
#pragma unroll
    for (int t = 0; t < turbo_cuda_traits<type>::n - 1; ++t) {
        idx += y > thresh[t];
    }
    return idx;
}

// step 3 for one candidate code k: the squared error of sub-block j, whose value i lane i
// holds (x0 for sub-block 0, x1 for 1), accumulated in index order. Every lane of the warp
// must call it (the values travel by shuffles).
template <ggml_type type>
static __device__ float turbo_cuda_sub_error(const float x0, const float x1, const int j, const int k) {
    const int8_t * values = turbo_cuda_traits<type>::values();
    const float d   = turbo_cuda_k_to_d(k);
    const float inv = __frcp_rn(d);
    float err = 0.0f;
#pragma unroll 8
    for (int i = 0; i < QK_TURBO_SUB; ++i) {
        const float a = __shfl_sync(TURBO_FULL_MASK, x0, i);
        const float b = __shfl_sync(TURBO_FULL_MASK, x1, i);
        const float x = j ? b : a;
        const int   idx = turbo_cuda_nearest<type>(__fmul_rn(x, inv));
        const float r   = __fsub_rn(x, __fmul_rn(d, (float) values[idx]));
        err = __fadd_rn(err, __fmul_rn(r, r));
    }
    return err;
}

// step 3: the best code of each sub-block. Lanes 0-15 try sub-block 0's candidates k_ref0 +
// lo .. k_ref0 + hi, lanes 16-31 sub-block 1's, 16 at a time; the smallest error wins, the
// first candidate among equal errors (the reference's strict `<`). Returns the best code of
// the lane's own sub-block.
template <ggml_type type>
static __device__ int turbo_cuda_search(const float x0, const float x1, const int k_ref0, const int k_ref1) {
    constexpr int lo    = turbo_cuda_traits<type>::lo;
    constexpr int ncand = turbo_cuda_traits<type>::hi - lo + 1;
    static_assert(ncand >= 1, "empty scale search");

    const int lane  = threadIdx.x % WARP_SIZE;
    const int j     = lane / 16;
    const int k_ref = j ? k_ref1 : k_ref0;

    float best_err = INFINITY;
    int   best_c   = 0;
#pragma unroll
    for (int c0 = 0; c0 < ncand; c0 += 16) {
        int c = c0 + lane % 16;
        // lanes past the last candidate repeat it (all lanes take part in the shuffles)
        float err = turbo_cuda_sub_error<type>(x0, x1, j, turbo_cuda_clamp_k(k_ref + lo + min(c, ncand - 1)));
        if (c >= ncand) {
            err = INFINITY;
        }
#pragma unroll
        for (int offset = 8; offset > 0; offset >>= 1) { // within each half-warp
            const float err_o = __shfl_xor_sync(TURBO_FULL_MASK, err, offset);
            const int   c_o   = __shfl_xor_sync(TURBO_FULL_MASK, c,   offset);
            if (err_o < err || (err_o == err && c_o < c)) {
                err = err_o;
                c   = c_o;
            }
        }
        if (err < best_err) { // an earlier group keeps a tie
            best_err = err;
            best_c   = c;
        }
    }
    return turbo_cuda_clamp_k(k_ref + lo + best_c);
}

// steps 1-6 for the block of 64 floats at x (contiguous); every lane of the warp calls it
template <ggml_type type>
static __device__ void turbo_cuda_quantize_block_warp(const float * __restrict__ x, typename turbo_cuda_traits<type>::block * __restrict__ y) {
    const int lane = threadIdx.x % WARP_SIZE;

    const float x0 = turbo_cuda_sanitize(x[lane]);
    const float x1 = turbo_cuda_sanitize(x[lane + QK_TURBO_SUB]);

    // step 1: a zero sub-block gets code 0 and index 0 everywhere
    const float amax0 = warp_reduce_max(fabsf(x0));
    const float amax1 = warp_reduce_max(fabsf(x1));

    // steps 2-3 (a zero sub-block searches too, the warp stays converged, and is dropped)
    const int k_lane = turbo_cuda_search<type>(x0, x1,
        amax0 == 0.0f ? 1 : turbo_cuda_k_ref<type>(amax0), amax1 == 0.0f ? 1 : turbo_cuda_k_ref<type>(amax1));
    const int k0 = amax0 == 0.0f ? 0 : __shfl_sync(TURBO_FULL_MASK, k_lane, 0);
    const int k1 = amax1 == 0.0f ? 0 : __shfl_sync(TURBO_FULL_MASK, k_lane, 16);

    // step 5: the smallest shared exponent that fits the larger code
    const int k_hi = max(k0, k1);
    const int E    = k_hi > 31 ? (k_hi - 24) >> 3 : 0;
    const int f0   = k0 == 0 ? 0 : max(1, k0 - 8*E);
    const int f1   = k1 == 0 ? 0 : max(1, k1 - 8*E);

    // step 6: the indices with the final scales
    const int idx0 = f0 == 0 ? 0 : turbo_cuda_nearest<type>(__fmul_rn(x0, __frcp_rn(turbo_cuda_k_to_d(8*E + f0))));
    const int idx1 = f1 == 0 ? 0 : turbo_cuda_nearest<type>(__fmul_rn(x1, __frcp_rn(turbo_cuda_k_to_d(8*E + f1))));

    // packing (FORMAT.md "Index packing")
    if (lane == 0) {
        y->s = (uint16_t) (f0 | f1 << 5 | E << 10);
    }
    if constexpr (type == GGML_TYPE_TURBO4) {
        // qs[16j + l] = idx[l] | idx[l + 16] << 4
        const int hi0 = __shfl_down_sync(TURBO_FULL_MASK, idx0, 16);
        const int hi1 = __shfl_down_sync(TURBO_FULL_MASK, idx1, 16);
        if (lane < 16) {
            y->qs[lane]      = (uint8_t) (idx0 | hi0 << 4);
            y->qs[16 + lane] = (uint8_t) (idx1 | hi1 << 4);
        }
    } else {
        // 2-bit plane: qs[8j + l] = idx[l] | idx[l+8] << 2 | idx[l+16] << 4 | idx[l+24] << 6
        const int a0 = idx0 & 3;
        const int a1 = idx1 & 3;
        const int q0 = a0 | __shfl_down_sync(TURBO_FULL_MASK, a0, 8) << 2 |
            __shfl_down_sync(TURBO_FULL_MASK, a0, 16) << 4 | __shfl_down_sync(TURBO_FULL_MASK, a0, 24) << 6;
        const int q1 = a1 | __shfl_down_sync(TURBO_FULL_MASK, a1, 8) << 2 |
            __shfl_down_sync(TURBO_FULL_MASK, a1, 16) << 4 | __shfl_down_sync(TURBO_FULL_MASK, a1, 24) << 6;
        if (lane < 8) {
            y->qs[lane]     = (uint8_t) q0;
            y->qs[8 + lane] = (uint8_t) q1;
        }
        if constexpr (type == GGML_TYPE_TURBO3) {
            // high bit of idx[i] = bit i of the little-endian word qh[4j .. 4j+3]
            const uint32_t h0 = __ballot_sync(TURBO_FULL_MASK, idx0 >> 2);
            const uint32_t h1 = __ballot_sync(TURBO_FULL_MASK, idx1 >> 2);
            if (lane < 4) {
                y->qh[lane]     = (uint8_t) (h0 >> 8*lane);
                y->qh[4 + lane] = (uint8_t) (h1 >> 8*lane);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// kernels: a warp per destination block
// ------------------------------------------------------------------------------------------

template <ggml_type type, typename idx_t>
static __global__ void k_set_rows_turbo(
        const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nblocks_row, const int64_t ne01, const int64_t ne02,
        const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03,
        const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    const int64_t ib = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return; // the whole warp
    }

    int64_t tmp = ib / nblocks_row;
    const int64_t i00 = (ib % nblocks_row) * QK_TURBO;
    const int64_t i01 = tmp % ne01;
    tmp /= ne01;
    const int64_t i02 = tmp % ne02;
    const int64_t i03 = tmp / ne02;

    // src1 broadcasts over dims 2 and 3
    const int64_t i10 = i01;
    const int64_t i11 = i02 % ne11;
    const int64_t i12 = i03 % ne12;

    ggml_cuda_pdl_sync();
    const int64_t dst_row = src1[i10*s10 + i11*s11 + i12*s12];

    const float * x = src0 + i01*s01 + i02*s02 + i03*s03 + i00;
    typename turbo_cuda_traits<type>::block * y =
        (typename turbo_cuda_traits<type>::block *) (dst + dst_row*nb1 + i02*nb2 + i03*nb3) + i00/QK_TURBO;

    turbo_cuda_quantize_block_warp<type>(x, y);
}

// the index arithmetic of cpy.cu's cpy_f32_q, with one warp per block
template <ggml_type type>
static __global__ void k_cpy_f32_turbo(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13) {
    const int64_t i = (int64_t(blockIdx.x)*blockDim.x + threadIdx.x) / WARP_SIZE * QK_TURBO;
    if (i >= ne) {
        return; // the whole warp
    }

    const int64_t i03 = i/(ne00 * ne01 * ne02);
    const int64_t i02 = (i - i03*ne00*ne01*ne02 )/ (ne00*ne01);
    const int64_t i01 = (i - i03*ne00*ne01*ne02  -  i02*ne01*ne00) / ne00;
    const int64_t i00 = i - i03*ne00*ne01*ne02 - i02*ne01*ne00 - i01*ne00;
    const int64_t x_offset = i00*nb00 + i01*nb01 + i02*nb02 + i03 * nb03;

    const int64_t i13 = i/(ne10 * ne11 * ne12);
    const int64_t i12 = (i - i13*ne10*ne11*ne12) / (ne10*ne11);
    const int64_t i11 = (i - i13*ne10*ne11*ne12 - i12*ne10*ne11) / ne10;
    const int64_t i10 = i - i13*ne10*ne11*ne12 - i12*ne10*ne11 - i11*ne10;
    const int64_t dst_offset = (i10/QK_TURBO)*nb10 + i11*nb11 + i12*nb12 + i13*nb13;

    ggml_cuda_pdl_sync();
    turbo_cuda_quantize_block_warp<type>((const float *) (cx + x_offset),
                                    (typename turbo_cuda_traits<type>::block *) (cdst + dst_offset));
}

// ------------------------------------------------------------------------------------------
// launchers
// ------------------------------------------------------------------------------------------

static dim3 turbo_quantize_grid(const int64_t nblocks) {
    const int64_t warps_per_cuda_block = CUDA_TURBO_QUANTIZE_BLOCK_SIZE / WARP_SIZE;
    const int64_t grid = (nblocks + warps_per_cuda_block - 1) / warps_per_cuda_block;
    GGML_ASSERT(grid <= INT_MAX);
    return dim3((unsigned int) grid);
}

template <ggml_type type, typename idx_t>
static void set_rows_turbo_cuda(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_TENSOR_BINARY_OP_LOCALS

    GGML_ASSERT(ne00 % QK_TURBO == 0);
    GGML_ASSERT(nb00 == sizeof(float));
    const int64_t nblocks = ne00/QK_TURBO * ne01 * ne02 * ne03;
    if (nblocks == 0 || ne11 == 0 || ne12 == 0) {
        return;
    }

    k_set_rows_turbo<type, idx_t><<<turbo_quantize_grid(nblocks), CUDA_TURBO_QUANTIZE_BLOCK_SIZE, 0, stream>>>(
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data,
        nblocks, ne00/QK_TURBO, ne01, ne02, ne11, ne12,
        nb01/sizeof(float), nb02/sizeof(float), nb03/sizeof(float),
        nb10/sizeof(idx_t), nb11/sizeof(idx_t), nb12/sizeof(idx_t),
        nb1, nb2, nb3);
    CUDA_CHECK(cudaGetLastError());
}

template <typename idx_t>
static void set_rows_turbo_cuda_switch_type(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    switch (dst->type) {
        case GGML_TYPE_TURBO2: set_rows_turbo_cuda<GGML_TYPE_TURBO2, idx_t>(src0, src1, dst, stream); break;
        case GGML_TYPE_TURBO3: set_rows_turbo_cuda<GGML_TYPE_TURBO3, idx_t>(src0, src1, dst, stream); break;
        case GGML_TYPE_TURBO4: set_rows_turbo_cuda<GGML_TYPE_TURBO4, idx_t>(src0, src1, dst, stream); break;
        default: GGML_ABORT("%s: not a turbo type: %s", __func__, ggml_type_name(dst->type));
    }
}

void ggml_cuda_turbo_set_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * src0 = dst->src[0];
    const ggml_tensor * src1 = dst->src[1];

    GGML_ASSERT(src0->type == GGML_TYPE_F32);
    if (src1->type == GGML_TYPE_I64) {
        set_rows_turbo_cuda_switch_type<int64_t>(src0, src1, dst, ctx.stream());
    } else {
        GGML_ASSERT(src1->type == GGML_TYPE_I32);
        set_rows_turbo_cuda_switch_type<int32_t>(src0, src1, dst, ctx.stream());
    }
}

template <ggml_type type>
static void cpy_f32_turbo_cuda(const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream) {
    k_cpy_f32_turbo<type><<<turbo_quantize_grid(ne/QK_TURBO), CUDA_TURBO_QUANTIZE_BLOCK_SIZE, 0, stream>>>(
        cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);
    CUDA_CHECK(cudaGetLastError());
}

void ggml_cuda_turbo_cpy_f32(
    ggml_type type, const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
    const int64_t nb12, const int64_t nb13, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_TURBO == 0);
    if (ne == 0) {
        return;
    }
    switch (type) {
        case GGML_TYPE_TURBO2:
            cpy_f32_turbo_cuda<GGML_TYPE_TURBO2>(cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13, stream);
            break;
        case GGML_TYPE_TURBO3:
            cpy_f32_turbo_cuda<GGML_TYPE_TURBO3>(cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13, stream);
            break;
        case GGML_TYPE_TURBO4:
            cpy_f32_turbo_cuda<GGML_TYPE_TURBO4>(cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13, stream);
            break;
        default:
            GGML_ABORT("%s: not a turbo type: %s", __func__, ggml_type_name(type));
    }
}
