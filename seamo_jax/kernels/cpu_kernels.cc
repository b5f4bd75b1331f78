// CPU kernels for SeaMo's train step, called from XLA through the typed FFI
// (seamo_jax/kernels/ops.py). Built on first use by seamo_jax/kernels/build.py.
//
// Why they exist (issue 4, 2-core AVX2 CPU): XLA:CPU runs a ViT's GEMMs at
// ~120-135 GF/s through YNNPACK, hands every kernel gradient x^T dy
// (a transposed operand) to a slower Eigen path, runs attention as batched
// 197x197x32 GEMMs plus separate softmax passes over [B, H, L, L], and spends
// ~10 ns per element on the exact GELU (through erfc) and several passes on
// LayerNorm. Here:
// - every GEMM goes to the OpenBLAS that numpy ships (single-threaded per
//   call, split across XLA's own intra-op thread pool so nothing is
//   oversubscribed);
// - attention runs one (batch, head) problem at a time with its L x L scores
//   in cache, its small products in register tiles (OpenBLAS reached ~50 GF/s
//   there), reading q, k, v in place from the packed qkv projection;
// - fc1's bias + GELU and each LayerNorm are one vectorised pass forward and
//   one backward.
//
// Only float32, row-major (XLA's default layout); ops.py checks shapes before
// calling. Build flags: -O3 -march=native -ffp-contract=fast (FMA).

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

// Unaligned loads/stores of F = V8f or V1f.
template <typename F>
inline F LoadN(const float* p) {
  F v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename F>
inline void StoreN(float* p, F v) {
  __builtin_memcpy(p, &v, sizeof(v));
}


// Row softmax of s [rows, cols] (row stride s_stride) into p (row stride
// p_stride); s is overwritten with the unnormalised exponentials. p may be s.
void SoftmaxRows(float* s, int64_t s_stride, float* p, int64_t p_stride, int64_t rows, int64_t cols) {
  const int64_t vec_cols = cols / 8 * 8;
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * s_stride;
    float* out = p + i * p_stride;
    float row_max = row[0];
    int64_t j = 0;
    if (vec_cols > 0) {
      V8f vmax = LoadN<V8f>(row);
      for (j = 8; j < vec_cols; j += 8) {
        V8f x = LoadN<V8f>(row + j);
        vmax = x > vmax ? x : vmax;
      }
      for (int lane = 0; lane < 8; ++lane) row_max = vmax[lane] > row_max ? vmax[lane] : row_max;
    }
    for (; j < cols; ++j) row_max = row[j] > row_max ? row[j] : row_max;
    V8f vsum = {};
    float sum = 0.0f;
    for (j = 0; j < vec_cols; j += 8) {
      V8f e = ExpNonPositive<V8f, V8i>(LoadN<V8f>(row + j) - row_max);
      StoreN<V8f>(row + j, e);
      vsum += e;
    }
    for (; j < cols; ++j) {
      float e = ExpNonPositive<V1f, V1i>(V1f{row[j] - row_max})[0];
      row[j] = e;
      sum += e;
    }
    for (int lane = 0; lane < 8; ++lane) sum += vsum[lane];
    const float inv_sum = 1.0f / sum;
    for (j = 0; j < vec_cols; j += 8) StoreN<V8f>(out + j, LoadN<V8f>(row + j) * inv_sum);
    for (; j < cols; ++j) out[j] = row[j] * inv_sum;
  }
}

// Register-blocked products for attention's small per-head matrices
// (197 x 197 x 32 in the MAE decoder), where OpenBLAS reached only ~50 GF/s
// single-threaded: its packing and call overheads dominate at that size.
// One tile is R rows x 8*NV columns of c, accumulated in registers over the
// whole depth: c = alpha * a b, with a(r, k) = a[r * a_rs + k * a_cs] (so a
// transposed operand is just other strides) and b rows contiguous.
template <int R, int NV>
inline void MulTile(int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb, float* c,
                    int64_t ldc, float alpha) {
  V8f acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V8f{};
  for (int64_t k = 0; k < depth; ++k) {
    V8f b_vec[NV];
    for (int v = 0; v < NV; ++v) b_vec[v] = LoadN<V8f>(b + k * ldb + 8 * v);
    const float* a_col = a + k * a_cs;
    for (int r = 0; r < R; ++r) {
      const float a_value = a_col[r * a_rs];
      for (int v = 0; v < NV; ++v) acc[r][v] += a_value * b_vec[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) StoreN<V8f>(c + r * ldc + 8 * v, acc[r][v] * alpha);
}

// 6-row tiles (6 x 16: 12 accumulators + 2 b vectors fit AVX2's 16 registers), then the row tail.
template <int NV>
void MulRowTiles(int64_t rows, int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                 int64_t ldb, float* c, int64_t ldc, float alpha) {
  int64_t r = 0;
  for (; r + 6 <= rows; r += 6) MulTile<6, NV>(depth, a + r * a_rs, a_rs, a_cs, b, ldb, c + r * ldc, ldc, alpha);
  const float* a_rest = a + r * a_rs;
  float* c_rest = c + r * ldc;
  switch (rows - r) {
    case 5: MulTile<5, NV>(depth, a_rest, a_rs, a_cs, b, ldb, c_rest, ldc, alpha); break;
    case 4: MulTile<4, NV>(depth, a_rest, a_rs, a_cs, b, ldb, c_rest, ldc, alpha); break;
    case 3: MulTile<3, NV>(depth, a_rest, a_rs, a_cs, b, ldb, c_rest, ldc, alpha); break;
    case 2: MulTile<2, NV>(depth, a_rest, a_rs, a_cs, b, ldb, c_rest, ldc, alpha); break;
    case 1: MulTile<1, NV>(depth, a_rest, a_rs, a_cs, b, ldb, c_rest, ldc, alpha); break;
    default: break;
  }
}

// c [rows, cols] (row stride ldc) = alpha a [rows, depth] b [depth, cols]; cols a multiple of 8.
// Column blocks outermost, so a block's b panel [depth, 16] stays in L1 across all row tiles.
void MulSmall(int64_t rows, int64_t cols, int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
              int64_t ldb, float* c, int64_t ldc, float alpha) {
  int64_t col = 0;
  for (; col + 16 <= cols; col += 16) MulRowTiles<2>(rows, depth, a, a_rs, a_cs, b + col, ldb, c + col, ldc, alpha);
  for (; col < cols; col += 8) MulRowTiles<1>(rows, depth, a, a_rs, a_cs, b + col, ldb, c + col, ldc, alpha);
}

// t [dim, padded_rows] = x [rows, dim]^T (x row stride ldx), zero past `rows`.
void PackTransposed(const float* x, int64_t ldx, int64_t rows, int64_t dim, float* t, int64_t padded_rows) {
  for (int64_t d = 0; d < dim; ++d) {
    float* t_row = t + d * padded_rows;
    for (int64_t j = 0; j < rows; ++j) t_row[j] = x[j * ldx + d];
    for (int64_t j = rows; j < padded_rows; ++j) t_row[j] = 0.0f;
  }
}

// erf(x): the rational approximation Eigen and XLA use for float32 (odd
// degree-13 numerator over even degree-8 denominator, x clamped to [-4, 4]
// where erf is +-1 in float32); a few ulp from the true value (tested).
template <typename F>
inline F Erf(F x) {
  x = x > 4.0f ? F{} + 4.0f : x;
  x = x < -4.0f ? F{} - 4.0f : x;
  const F x2 = x * x;
  F p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  F q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

constexpr float kSqrtHalf = 0.70710678118654752f;     // 1 / sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;   // 1 / sqrt(2 pi)

// gelu(h) = h Phi(h) = 0.5 h (1 + erf(h / sqrt 2)): torch's nn.GELU() formula.
template <typename F>
inline F Gelu(F h) {
  return 0.5f * h * (1.0f + Erf(h * kSqrtHalf));
}

// d gelu / dh = Phi(h) + h phi(h).
template <typename F, typename I>
inline F GeluGrad(F h) {
  return 0.5f * (1.0f + Erf(h * kSqrtHalf)) + h * kInvSqrt2Pi * ExpNonPositive<F, I>(-0.5f * h * h);
}

// Sum of v's lanes.
template <typename F>
inline float LaneSum(F v) {
  float total = 0.0f;
  for (size_t lane = 0; lane < sizeof(F) / sizeof(float); ++lane) total += v[lane];
  return total;
}

// Row-wise sum of f(j, lanes) over j in [0, cols), 8 lanes at a time plus a scalar tail.
template <typename Fn>
inline float RowSum(int64_t cols, Fn f) {
  const int64_t vec_cols = cols / 8 * 8;
  V8f acc = {};
  float tail = 0.0f;
  int64_t j = 0;
  for (; j < vec_cols; j += 8) acc += f(j, V8f{});
  for (; j < cols; ++j) tail += f(j, V1f{})[0];
  return LaneSum(acc) + tail;
}

// Calls f(j, lanes) over j in [0, cols), 8 lanes at a time plus a scalar tail.
template <typename Fn>
inline void RowApply(int64_t cols, Fn f) {
  const int64_t vec_cols = cols / 8 * 8;
  int64_t j = 0;
  for (; j < vec_cols; j += 8) f(j, V8f{});
  for (; j < cols; ++j) f(j, V1f{});
}

// Calls row_fn(r) for r in [0, rows), rows split into a few blocks per pool
// thread: equal shares, but a late or busy thread's work is picked up.
template <typename RowFn>
void ForEachRow(ffi::ThreadPool& pool, int64_t rows, RowFn row_fn) {
  const int64_t workers = pool.num_threads() > 0 ? pool.num_threads() : 1;
  const int64_t blocks = rows < 4 * workers ? (rows > 0 ? rows : 1) : 4 * workers;
  const int64_t block = (rows + blocks - 1) / blocks;
  ParallelFor(pool, blocks, [=](int64_t i) {
    const int64_t end = (i + 1) * block < rows ? (i + 1) * block : rows;
    for (int64_t r = i * block; r < end; ++r) row_fn(r);
  });
}

// Applies op(r, j, lanes) to every element of a [rows, cols] row-major array,
// lanes = V8f{} for columns [j, j+8) and V1f{} for the scalar tail.
template <typename Op>
void ForEachElement(ffi::ThreadPool& pool, int64_t rows, int64_t cols, Op op) {
  ForEachRow(pool, rows, [=](int64_t r) { RowApply(cols, [&](int64_t j, auto lanes) { op(r, j, lanes); }); });
}

template <typename F>
struct IntVector;
template <>
struct IntVector<V8f> {
  using type = V8i;
};
template <>
struct IntVector<V1f> {
  using type = V1i;
};

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

// out [M, N] = gelu(y + bias), bias [N]: fc1's bias and activation in one pass.
ffi::Error BiasGeluFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> bias,
                           ffi::ResultBuffer<ffi::F32> out) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto dims = y.dimensions();
  if (dims.size() != 2 || bias.dimensions().size() != 1 || bias.dimensions()[0] != dims[1]) {
    return ffi::Error::InvalidArgument("seamo bias_gelu: takes y [M, N] and bias [N]");
  }
  const int64_t cols = dims[1];
  const float *y_data = y.typed_data(), *bias_data = bias.typed_data();
  float* out_data = out->typed_data();
  ForEachElement(pool, dims[0], cols, [=](int64_t r, int64_t j, auto lanes) {
    using F = decltype(lanes);
    const int64_t at = r * cols + j;
    StoreN<F>(out_data + at, Gelu(LoadN<F>(y_data + at) + LoadN<F>(bias_data + j)));
  });
  return ffi::Error::Success();
}

// dpre [M, N] = dout * gelu'(y + bias): the gradient before fc1's bias (the bias gradient is its column sum).
ffi::Error BiasGeluBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> bias,
                           ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dpre) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto dims = y.dimensions();
  if (dims.size() != 2 || bias.dimensions().size() != 1 || bias.dimensions()[0] != dims[1]) {
    return ffi::Error::InvalidArgument("seamo bias_gelu_bwd: takes y [M, N] and bias [N]");
  }
  const int64_t cols = dims[1];
  const float *y_data = y.typed_data(), *bias_data = bias.typed_data(), *dout_data = dout.typed_data();
  float* dpre_data = dpre->typed_data();
  ForEachElement(pool, dims[0], cols, [=](int64_t r, int64_t j, auto lanes) {
    using F = decltype(lanes);
    const int64_t at = r * cols + j;
    const F h = LoadN<F>(y_data + at) + LoadN<F>(bias_data + j);
    StoreN<F>(dpre_data + at, LoadN<F>(dout_data + at) * GeluGrad<F, typename IntVector<F>::type>(h));
  });
  return ffi::Error::Success();
}

// y [M, D] = (x - mean) rstd scale + bias per row; mean, rstd [M] kept for the
// backward. Two-pass variance (mean first), in float32.
ffi::Error LayerNormFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                            ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y,
                            ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> rstd, float epsilon) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto dims = x.dimensions();
  if (dims.size() != 2 || scale.dimensions().size() != 1 || scale.dimensions()[0] != dims[1]) {
    return ffi::Error::InvalidArgument("seamo layer_norm: takes x [M, D], scale [D], bias [D]");
  }
  const int64_t rows = dims[0], cols = dims[1];
  const float *x_data = x.typed_data(), *scale_data = scale.typed_data(), *bias_data = bias.typed_data();
  float *y_data = y->typed_data(), *mean_data = mean->typed_data(), *rstd_data = rstd->typed_data();
  ForEachRow(pool, rows, [=](int64_t r) {
    const float* x_row = x_data + r * cols;
    float* y_row = y_data + r * cols;
    const float row_mean = RowSum(cols, [&](int64_t j, auto lanes) { return LoadN<decltype(lanes)>(x_row + j); }) / cols;
    const float variance = RowSum(cols, [&](int64_t j, auto lanes) {
                             const auto centred = LoadN<decltype(lanes)>(x_row + j) - row_mean;
                             return centred * centred;
                           }) / cols;
    const float row_rstd = 1.0f / __builtin_sqrtf(variance + epsilon);
    mean_data[r] = row_mean;
    rstd_data[r] = row_rstd;
    RowApply(cols, [&](int64_t j, auto lanes) {
      using F = decltype(lanes);
      StoreN<F>(y_row + j, (LoadN<F>(x_row + j) - row_mean) * row_rstd * LoadN<F>(scale_data + j) +
                               LoadN<F>(bias_data + j));
    });
  });
  return ffi::Error::Success();
}

// Gradients of LayerNormFwd. dx [M, D] = rstd (g - mean(g) - xhat mean(g xhat)),
// g = dy scale, xhat = (x - mean) rstd. The scale and bias gradients are
// column sums, returned as per-block partial sums [P, D] (P = rows of the
// partial outputs, fixed by the caller so results do not depend on threads).
ffi::Error LayerNormBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                            ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd, ffi::Buffer<ffi::F32> dy,
                            ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale_partial,
                            ffi::ResultBuffer<ffi::F32> dbias_partial) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto dims = x.dimensions();
  auto partial_dims = dscale_partial->dimensions();
  if (dims.size() != 2 || partial_dims.size() != 2 || partial_dims[1] != dims[1]) {
    return ffi::Error::InvalidArgument("seamo layer_norm_bwd: takes x [M, D] and partials [P, D]");
  }
  const int64_t rows = dims[0], cols = dims[1], blocks = partial_dims[0];
  const float *x_data = x.typed_data(), *scale_data = scale.typed_data(), *mean_data = mean.typed_data();
  const float *rstd_data = rstd.typed_data(), *dy_data = dy.typed_data();
  float *dx_data = dx->typed_data(), *dscale_data = dscale_partial->typed_data();
  float* dbias_data = dbias_partial->typed_data();
  const int64_t block = (rows + blocks - 1) / blocks;
  ParallelFor(pool, blocks, [=](int64_t i) {
    float* dscale_row = dscale_data + i * cols;
    float* dbias_row = dbias_data + i * cols;
    for (int64_t j = 0; j < cols; ++j) dscale_row[j] = dbias_row[j] = 0.0f;
    const int64_t end = (i + 1) * block < rows ? (i + 1) * block : rows;
    for (int64_t r = i * block; r < end; ++r) {
      const float *x_row = x_data + r * cols, *dy_row = dy_data + r * cols;
      float* dx_row = dx_data + r * cols;
      const float row_mean = mean_data[r], row_rstd = rstd_data[r];
      const float g_mean = RowSum(cols, [&](int64_t j, auto lanes) {
                             using F = decltype(lanes);
                             return LoadN<F>(dy_row + j) * LoadN<F>(scale_data + j);
                           }) / cols;
      const float gx_mean = RowSum(cols, [&](int64_t j, auto lanes) {
                              using F = decltype(lanes);
                              const F xhat = (LoadN<F>(x_row + j) - row_mean) * row_rstd;
                              return LoadN<F>(dy_row + j) * LoadN<F>(scale_data + j) * xhat;
                            }) / cols;
      RowApply(cols, [&](int64_t j, auto lanes) {
        using F = decltype(lanes);
        const F xhat = (LoadN<F>(x_row + j) - row_mean) * row_rstd;
        const F d = LoadN<F>(dy_row + j);
        StoreN<F>(dx_row + j, row_rstd * (d * LoadN<F>(scale_data + j) - g_mean - xhat * gx_mean));
        StoreN<F>(dscale_row + j, LoadN<F>(dscale_row + j) + d * xhat);
        StoreN<F>(dbias_row + j, LoadN<F>(dbias_row + j) + d);
      });
    }
  });
  return ffi::Error::Success();
}

// Where one attention problem's operands live: token t of batch b, head h of
// q starts at q + (b * len_q + t) * q_row + h * dim (likewise k, v with
// kv_row; out, dout with out_row). Row strides let q, k and v be views into
// one packed qkv [B, L, 3, H, Dh] buffer without copies.
struct AttentionLayout {
  int64_t batch, len_q, len_k, heads, dim, q_row, kv_row, out_row;
};

// out = softmax(scale q k^T) v per (batch, head); probs [B, H, Lq, Lk] kept for backward.
// Head dims that are a multiple of 8 use the register tiles above, others OpenBLAS.
void AttentionForward(ffi::ThreadPool& pool, const AttentionLayout& at, const float* q_data, const float* k_data,
                      const float* v_data, float* out_data, float* probs_data, float scale) {
  const bool tiles = at.dim % 8 == 0;
  ParallelFor(pool, at.batch * at.heads, [=](int64_t i) {
    thread_local std::vector<float> scratch;
    const int64_t b = i / at.heads, h = i % at.heads;
    const int64_t q_off = b * at.len_q * at.q_row + h * at.dim, k_off = b * at.len_k * at.kv_row + h * at.dim;
    const int64_t out_off = b * at.len_q * at.out_row + h * at.dim;
    const int64_t len_q = at.len_q, len_k = at.len_k, dim = at.dim;
    float* p = probs_data + i * len_q * len_k;
    if (!tiles) {
      g_sgemm(kRowMajor, kNoTrans, kTrans, len_q, len_k, dim, scale, q_data + q_off, at.q_row, k_data + k_off,
              at.kv_row, 0.0f, p, len_k);
      SoftmaxRows(p, len_k, p, len_k, len_q, len_k);
      g_sgemm(kRowMajor, kNoTrans, kNoTrans, len_q, dim, len_k, 1.0f, p, len_k, v_data + k_off, at.kv_row, 0.0f,
              out_data + out_off, at.out_row);
      return;
    }
    // scores [Lq, Lk padded to 16] and k^T [Dh, Lk padded], both in cache.
    const int64_t padded = (len_k + 15) / 16 * 16;
    if (static_cast<int64_t>(scratch.size()) < (len_q + dim) * padded) scratch.resize((len_q + dim) * padded);
    float* scores = scratch.data();
    float* k_t = scores + len_q * padded;
    PackTransposed(k_data + k_off, at.kv_row, len_k, dim, k_t, padded);
    MulSmall(len_q, padded, dim, q_data + q_off, at.q_row, 1, k_t, padded, scores, padded, scale);
    SoftmaxRows(scores, padded, p, len_k, len_q, len_k);
    MulSmall(len_q, dim, len_k, p, len_k, 1, v_data + k_off, at.kv_row, out_data + out_off, at.out_row, 1.0f);
  });
}

// Gradients of AttentionForward, written with the operands' strides. The
// softmax gradient uses delta = rowsum(dout * out) (= rowsum(dprobs * probs)),
// as flash attention does.
void AttentionBackward(ffi::ThreadPool& pool, const AttentionLayout& at, const float* q_data, const float* k_data,
                       const float* v_data, const float* out_data, const float* probs_data, const float* dout_data,
                       float* dq_data, float* dk_data, float* dv_data, float scale) {
  const bool tiles = at.dim % 8 == 0;
  ParallelFor(pool, at.batch * at.heads, [=](int64_t i) {
    thread_local std::vector<float> scratch;
    const int64_t b = i / at.heads, h = i % at.heads;
    const int64_t q_off = b * at.len_q * at.q_row + h * at.dim, k_off = b * at.len_k * at.kv_row + h * at.dim;
    const int64_t out_off = b * at.len_q * at.out_row + h * at.dim;
    const int64_t len_q = at.len_q, len_k = at.len_k, dim = at.dim;
    const float* p = probs_data + i * len_q * len_k;
    // dscores [Lq, ds_stride] (+ v^T [Dh, ds_stride] for the tiles)
    const int64_t ds_stride = tiles ? (len_k + 15) / 16 * 16 : len_k;
    const int64_t need = (len_q + (tiles ? dim : 0)) * ds_stride;
    if (static_cast<int64_t>(scratch.size()) < need) scratch.resize(need);
    float* dscores = scratch.data();
    // dv = p^T dout;  dprobs = dout v^T
    if (tiles) {
      MulSmall(len_k, dim, len_q, p, 1, len_k, dout_data + out_off, at.out_row, dv_data + k_off, at.kv_row, 1.0f);
      float* v_t = dscores + len_q * ds_stride;
      PackTransposed(v_data + k_off, at.kv_row, len_k, dim, v_t, ds_stride);
      MulSmall(len_q, ds_stride, dim, dout_data + out_off, at.out_row, 1, v_t, ds_stride, dscores, ds_stride, 1.0f);
    } else {
      g_sgemm(kRowMajor, kTrans, kNoTrans, len_k, dim, len_q, 1.0f, p, len_k, dout_data + out_off, at.out_row, 0.0f,
              dv_data + k_off, at.kv_row);
      g_sgemm(kRowMajor, kNoTrans, kTrans, len_q, len_k, dim, 1.0f, dout_data + out_off, at.out_row, v_data + k_off,
              at.kv_row, 0.0f, dscores, ds_stride);
    }
    for (int64_t r = 0; r < len_q; ++r) {
      const float* out_row = out_data + out_off + r * at.out_row;
      const float* dout_row = dout_data + out_off + r * at.out_row;
      float delta = 0.0f;
      for (int64_t d = 0; d < dim; ++d) delta += out_row[d] * dout_row[d];
      float* ds_row = dscores + r * ds_stride;
      const float* p_row = p + r * len_k;
      for (int64_t c = 0; c < len_k; ++c) ds_row[c] = p_row[c] * (ds_row[c] - delta);
    }
    // dq = scale dscores k;  dk = scale dscores^T q
    if (tiles) {
      MulSmall(len_q, dim, len_k, dscores, ds_stride, 1, k_data + k_off, at.kv_row, dq_data + q_off, at.q_row, scale);
      MulSmall(len_k, dim, len_q, dscores, 1, ds_stride, q_data + q_off, at.q_row, dk_data + k_off, at.kv_row, scale);
    } else {
      g_sgemm(kRowMajor, kNoTrans, kNoTrans, len_q, dim, len_k, scale, dscores, ds_stride, k_data + k_off, at.kv_row,
              0.0f, dq_data + q_off, at.q_row);
      g_sgemm(kRowMajor, kTrans, kNoTrans, len_k, dim, len_q, scale, dscores, ds_stride, q_data + q_off, at.q_row,
              0.0f, dk_data + k_off, at.kv_row);
    }
  });
}

// out [B, Lq, H, Dh] from q [B, Lq, H, Dh], k, v [B, Lk, H, Dh]; probs [B, H, Lq, Lk].
ffi::Error AttentionFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> out,
                            ffi::ResultBuffer<ffi::F32> probs, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto q_dims = q.dimensions();
  auto k_dims = k.dimensions();
  if (q_dims.size() != 4 || k_dims.size() != 4) {
    return ffi::Error::InvalidArgument("seamo attention: operands must be [B, L, H, Dh]");
  }
  const int64_t row = q_dims[2] * q_dims[3];
  const AttentionLayout at{q_dims[0], q_dims[1], k_dims[1], q_dims[2], q_dims[3], row, row, row};
  AttentionForward(pool, at, q.typed_data(), k.typed_data(), v.typed_data(), out->typed_data(), probs->typed_data(),
                   scale);
  return ffi::Error::Success();
}

ffi::Error AttentionBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                            ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> probs,
                            ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                            ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  auto q_dims = q.dimensions();
  auto k_dims = k.dimensions();
  const int64_t row = q_dims[2] * q_dims[3];
  const AttentionLayout at{q_dims[0], q_dims[1], k_dims[1], q_dims[2], q_dims[3], row, row, row};
  AttentionBackward(pool, at, q.typed_data(), k.typed_data(), v.typed_data(), out.typed_data(), probs.typed_data(),
                    dout.typed_data(), dq->typed_data(), dk->typed_data(), dv->typed_data(), scale);
  return ffi::Error::Success();
}

// The layout of self-attention on qkv [B, L, 3, H, Dh]: q, k, v rows 3 H Dh apart, out rows H Dh apart.
ffi::Error PackedQkvLayout(const ffi::Buffer<ffi::F32>& qkv, AttentionLayout& at) {
  auto dims = qkv.dimensions();
  if (dims.size() != 5 || dims[2] != 3) return ffi::Error::InvalidArgument("seamo attention_qkv: qkv must be [B, L, 3, H, Dh]");
  const int64_t head_row = dims[3] * dims[4];
  at = AttentionLayout{dims[0], dims[1], dims[1], dims[3], dims[4], 3 * head_row, 3 * head_row, head_row};
  return ffi::Error::Success();
}

// Self-attention on the packed projection qkv [B, L, 3, H, Dh] (q, k, v read
// in place); out [B, L, H, Dh], probs [B, H, L, L].
ffi::Error AttentionQkvFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::ResultBuffer<ffi::F32> out,
                               ffi::ResultBuffer<ffi::F32> probs, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  AttentionLayout at;
  if (ffi::Error error = PackedQkvLayout(qkv, at); error.failure()) return error;
  const int64_t head_row = at.heads * at.dim;  // q, k, v of one token sit head_row floats apart
  const float* base = qkv.typed_data();
  AttentionForward(pool, at, base, base + head_row, base + 2 * head_row, out->typed_data(), probs->typed_data(),
                   scale);
  return ffi::Error::Success();
}

// Gradient of AttentionQkvFwd: dqkv [B, L, 3, H, Dh], every element written once.
ffi::Error AttentionQkvBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::F32> out,
                               ffi::Buffer<ffi::F32> probs, ffi::Buffer<ffi::F32> dout,
                               ffi::ResultBuffer<ffi::F32> dqkv, float scale) {
  if (ffi::Error error = CheckBlas(); error.failure()) return error;
  AttentionLayout at;
  if (ffi::Error error = PackedQkvLayout(qkv, at); error.failure()) return error;
  const int64_t head_row = at.heads * at.dim;  // q, k, v of one token sit head_row floats apart
  const float* base = qkv.typed_data();
  float* grad = dqkv->typed_data();
  AttentionBackward(pool, at, base, base + head_row, base + 2 * head_row, out.typed_data(), probs.typed_data(),
                    dout.typed_data(), grad, grad + head_row, grad + 2 * head_row, scale);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoBiasGeluFwd, BiasGeluFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoBiasGeluBwd, BiasGeluBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoLayerNormFwd, LayerNormFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoLayerNormBwd, LayerNormBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoAttentionQkvFwd, AttentionQkvFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeamoAttentionQkvBwd, AttentionQkvBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));
