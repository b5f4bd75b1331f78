// CPU kernels for SeaMo's train step, called from XLA through the typed FFI
// (seamo_jax/kernels/ops.py). Built on first use by seamo_jax/kernels/build.py.
//
// Why they exist (issue 4, 2-core AVX2 CPU): XLA:CPU runs a ViT's GEMMs at
// ~120-135 GF/s through YNNPACK, hands every kernel gradient x^T dy
// (a transposed operand) to a slower Eigen path, and runs attention as
// batched 197x197x32 GEMMs plus separate softmax passes over [B, H, L, L].
// Here every GEMM goes to the OpenBLAS that numpy ships (single-threaded per
// call, split across XLA's own intra-op thread pool so nothing is
// oversubscribed), and attention runs one (batch, head) problem at a time
// with its L x L scores kept in cache.
//
// Only float32, row-major (XLA's default layout), 2-D GEMMs and
// [B, L, H, Dh] attention operands; ops.py checks shapes before calling.

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// cblas_sgemm of an ILP64 OpenBLAS (64-bit integer arguments).
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                         const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                         int64_t ldc);
// openblas_set_num_threads_local: sets this thread's BLAS thread count, returns the previous one.
using SetThreadsFn = int (*)(int);

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

SgemmFn g_sgemm = nullptr;
SetThreadsFn g_set_threads_local = nullptr;

// Runs task(i) for i in [0, n) on the calling thread plus up to
// pool.num_threads() - 1 pool threads, BLAS single-threaded in each. The
// caller works too and only waits for tasks that another thread has already
// started, so a busy pool never deadlocks (late workers find nothing left).
template <typename Task>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, Task task) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, n, task]() {
    const int previous = g_set_threads_local(1);
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      task(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
    g_set_threads_local(previous);
  };
  int64_t workers = pool.num_threads() > 0 ? pool.num_threads() : 1;
  if (workers > n) workers = n;
  for (int64_t t = 1; t < workers; ++t) pool.Schedule(decltype(work)(work));
  work();
  // Yield rather than spin: if XLA runs another op on the pool meanwhile, the
  // thread finishing our last block gets the core (measured no slower).
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// GCC/Clang vector types: SIMD on any target without intrinsics or -ffast-math.
typedef float V8f __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
typedef float V1f __attribute__((vector_size(4)));
typedef int32_t V1i __attribute__((vector_size(4)));

// exp(x) for x <= 0 (softmax after subtracting the row max): Cephes' expf
// polynomial, ~1e-6 relative error after normalisation (tested against jax).
template <typename F, typename I>
inline F ExpNonPositive(F x) {
  x = x < -87.0f ? F{} - 87.0f : x;
  I n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, I);  // round(x / ln 2) for x <= 0
  F nf = __builtin_convertvector(n, F);
  F r = x - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  n = (n + 127) << 23;  // 2^n as float bits
  F two_to_n;
  __builtin_memcpy(&two_to_n, &n, sizeof(two_to_n));
  return p * two_to_n;
}

inline V8f Load8(const float* p) {
  V8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store8(float* p, V8f v) { __builtin_memcpy(p, &v, sizeof(v)); }

// In-place row softmax of s [rows, cols].
void SoftmaxRows(float* s, int64_t rows, int64_t cols) {
  const int64_t vec_cols = cols / 8 * 8;
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * cols;
    float row_max = row[0];
    int64_t j = 0;
    if (vec_cols > 0) {
      V8f vmax = Load8(row);
      for (j = 8; j < vec_cols; j += 8) {
        V8f x = Load8(row + j);
        vmax = x > vmax ? x : vmax;
      }
      for (int lane = 0; lane < 8; ++lane) row_max = vmax[lane] > row_max ? vmax[lane] : row_max;
    }
    for (; j < cols; ++j) row_max = row[j] > row_max ? row[j] : row_max;
    V8f vsum = {};
    float sum = 0.0f;
    for (j = 0; j < vec_cols; j += 8) {
      V8f e = ExpNonPositive<V8f, V8i>(Load8(row + j) - row_max);
      Store8(row + j, e);
      vsum += e;
    }
    for (; j < cols; ++j) {
      float e = ExpNonPositive<V1f, V1i>(V1f{row[j] - row_max})[0];
      row[j] = e;
      sum += e;
    }
    for (int lane = 0; lane < 8; ++lane) sum += vsum[lane];
    const float inv_sum = 1.0f / sum;
    for (j = 0; j < vec_cols; j += 8) Store8(row + j, Load8(row + j) * inv_sum);
    for (; j < cols; ++j) row[j] *= inv_sum;
  }
}

ffi::Error CheckBlas() {
  if (g_sgemm == nullptr || g_set_threads_local == nullptr) {
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "seamo cpu kernels: BLAS not set (SeamoSetBlas)");
  }
  return ffi::Error::Success();
}

// c [m, n] = op(a) op(b); a is [m, k] (or [k, m] if trans_a), b is [k, n] (or [n, k] if trans_b).
ffi::Error GemmImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::ResultBuffer<ffi::F32> c, bool trans_a, bool trans_b) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto a_dims = a.dimensions();
  auto b_dims = b.dimensions();
  if (a_dims.size() != 2 || b_dims.size() != 2) {
    return ffi::Error::InvalidArgument("seamo gemm: operands must be 2-D");
  }
  const int64_t m = trans_a ? a_dims[1] : a_dims[0], k = trans_a ? a_dims[0] : a_dims[1];
  const int64_t k_b = trans_b ? b_dims[1] : b_dims[0], n = trans_b ? b_dims[0] : b_dims[1];
  if (k != k_b) return ffi::Error::InvalidArgument("seamo gemm: contracting sizes differ");
  const float* a_data = a.typed_data();
  const float* b_data = b.typed_data();
  float* c_data = c->typed_data();
  const int64_t lda = a_dims[1], ldb = b_dims[1];
  const int ta = trans_a ? kTrans : kNoTrans, tb = trans_b ? kTrans : kNoTrans;
  if (m == 0 || n == 0) return ffi::Error::Success();
  // One block per pool thread, split along the free dim of the larger
  // operand so each thread packs only its share of it.
  const int64_t workers = pool.num_threads() > 0 ? pool.num_threads() : 1;
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t block = ((extent + workers - 1) / workers + 15) / 16 * 16;
  const int64_t blocks = (extent + block - 1) / block;
  ParallelFor(pool, blocks, [=](int64_t i) {
    const int64_t start = i * block;
    const int64_t size = start + block < extent ? block : extent - start;
    if (split_rows) {
      const float* a_block = trans_a ? a_data + start : a_data + start * lda;
      g_sgemm(kRowMajor, ta, tb, size, n, k, 1.0f, a_block, lda, b_data, ldb, 0.0f, c_data + start * n, n);
    } else {
      const float* b_block = trans_b ? b_data + start * ldb : b_data + start;
      g_sgemm(kRowMajor, ta, tb, m, size, k, 1.0f, a_data, lda, b_block, ldb, 0.0f, c_data + start, n);
    }
  });
  return ffi::Error::Success();
}

// out [B, Lq, H, D] = softmax(scale q k^T) v per (batch, head); probs [B, H, Lq, Lk] kept for backward.
ffi::Error AttentionFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                            ffi::ResultBuffer<ffi::F32> probs, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto q_dims = q.dimensions();
  auto k_dims = k.dimensions();
  if (q_dims.size() != 4 || k_dims.size() != 4) {
    return ffi::Error::InvalidArgument("seamo attention: operands must be [B, L, H, Dh]");
  }
  const int64_t batch = q_dims[0], len_q = q_dims[1], heads = q_dims[2], dim = q_dims[3], len_k = k_dims[1];
  const int64_t row = heads * dim;  // stride between tokens
  const float *q_data = q.typed_data(), *k_data = k.typed_data(), *v_data = v.typed_data();
  float *out_data = out->typed_data(), *probs_data = probs->typed_data();
  ParallelFor(pool, batch * heads, [=](int64_t i) {
    const int64_t b = i / heads, h = i % heads;
    const int64_t q_off = b * len_q * row + h * dim, k_off = b * len_k * row + h * dim;
    float* p = probs_data + i * len_q * len_k;
    g_sgemm(kRowMajor, kNoTrans, kTrans, len_q, len_k, dim, scale, q_data + q_off, row, k_data + k_off, row, 0.0f,
            p, len_k);
    SoftmaxRows(p, len_q, len_k);
    g_sgemm(kRowMajor, kNoTrans, kNoTrans, len_q, dim, len_k, 1.0f, p, len_k, v_data + k_off, row, 0.0f,
            out_data + q_off, row);
  });
  return ffi::Error::Success();
}

// Gradients of AttentionFwd. The softmax gradient uses delta = rowsum(dout * out)
// (= rowsum(dprobs * probs)), as flash attention does.
ffi::Error AttentionBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> probs,
                            ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                            ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto q_dims = q.dimensions();
  auto k_dims = k.dimensions();
  const int64_t batch = q_dims[0], len_q = q_dims[1], heads = q_dims[2], dim = q_dims[3], len_k = k_dims[1];
  const int64_t row = heads * dim;
  const float *q_data = q.typed_data(), *k_data = k.typed_data(), *v_data = v.typed_data();
  const float *out_data = out.typed_data(), *probs_data = probs.typed_data(), *dout_data = dout.typed_data();
  float *dq_data = dq->typed_data(), *dk_data = dk->typed_data(), *dv_data = dv->typed_data();
  ParallelFor(pool, batch * heads, [=](int64_t i) {
    thread_local std::vector<float> scratch;
    const int64_t b = i / heads, h = i % heads;
    const int64_t q_off = b * len_q * row + h * dim, k_off = b * len_k * row + h * dim;
    const float* p = probs_data + i * len_q * len_k;
    if (static_cast<int64_t>(scratch.size()) < len_q * len_k) scratch.resize(len_q * len_k);
    float* dscores = scratch.data();
    // dv = p^T dout;  dprobs = dout v^T
    g_sgemm(kRowMajor, kTrans, kNoTrans, len_k, dim, len_q, 1.0f, p, len_k, dout_data + q_off, row, 0.0f,
            dv_data + k_off, row);
    g_sgemm(kRowMajor, kNoTrans, kTrans, len_q, len_k, dim, 1.0f, dout_data + q_off, row, v_data + k_off, row, 0.0f,
            dscores, len_k);
    for (int64_t r = 0; r < len_q; ++r) {
      const float* out_row = out_data + q_off + r * row;
      const float* dout_row = dout_data + q_off + r * row;
      float delta = 0.0f;
      for (int64_t d = 0; d < dim; ++d) delta += out_row[d] * dout_row[d];
      float* ds_row = dscores + r * len_k;
      const float* p_row = p + r * len_k;
      for (int64_t c = 0; c < len_k; ++c) ds_row[c] = p_row[c] * (ds_row[c] - delta);
    }
    // dq = scale dscores k;  dk = scale dscores^T q
    g_sgemm(kRowMajor, kNoTrans, kNoTrans, len_q, dim, len_k, scale, dscores, len_k, k_data + k_off, row, 0.0f,
            dq_data + q_off, row);
    g_sgemm(kRowMajor, kTrans, kNoTrans, len_k, dim, len_q, scale, dscores, len_k, q_data + q_off, row, 0.0f,
            dk_data + k_off, row);
  });
  return ffi::Error::Success();
}

}  // namespace

// Called once from Python (ctypes) with the BLAS entry points, so no pointer
// ever appears in a compiled HLO module.
extern "C" void SeamoSetBlas(void* sgemm, void* set_threads_local) {
  g_sgemm = reinterpret_cast<SgemmFn>(sgemm);
  g_set_threads_local = reinterpret_cast<SetThreadsFn>(set_threads_local);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoGemm, GemmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoAttentionFwd, AttentionFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoAttentionBwd, AttentionBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));
