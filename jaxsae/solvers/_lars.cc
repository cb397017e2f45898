// Nonnegative LARS-lasso (the homotopy of THEORY §1) as an XLA FFI kernel for CPU.
//
// For each point, with correlations b = D y and the Gram G = D Dᵀ, it follows
// the path of  min_{z ≥ 0} ½‖y − Dᵀz‖² + t·1ᵀz  from t = max_k b_k down to t = λ:
// on the active set A the codes move along w = G_AA⁻¹ 1 (z_A(t − δ) = z_A(t) + δ w)
// and every other correlation along a = G_{:,A} w; the path bends where an atom's
// correlation reaches t (it enters) or an active code reaches 0 (it leaves). The
// Cholesky factor of G_AA is updated by one row when an atom enters and by Givens
// rotations when one leaves, so a step costs O(K·|A| + |A|²): the cost grows with
// the support, not with K·sweeps. At t = λ the codes are re-solved exactly on the
// final support, z_A = G_AA⁻¹(b_A − λ1). The caller certifies every point by its
// duality gap in the data space; a point whose path fails (a singular active
// Gram, the step budget) is reported and solved by the fallback.
//
// Points with todo = false (already certified by a warm start) are skipped.
// Status per point: 0 solved, 1 step budget exhausted, 2 singular active Gram.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Work {
  std::vector<double> c, a, w, z, L, l, ok;  // ok[k] = 1 for an unmasked atom not in A
  std::vector<int> act;
  std::vector<char> in;
  explicit Work(int K, int cap)
      : c(K), a(K), w(cap), z(cap), L(static_cast<size_t>(cap) * cap), l(cap + K), ok(K),
        act(cap), in(K) {}
};

// x ← (L Lᵀ)⁻¹ x for the leading s×s block of the row-major cap×cap lower factor L.
void chol_solve(const double* L, int s, int cap, double* x) {
  for (int i = 0; i < s; ++i) {
    double v = x[i];
    const double* Li = L + static_cast<size_t>(i) * cap;
    for (int j = 0; j < i; ++j) v -= Li[j] * x[j];
    x[i] = v / Li[i];
  }
  for (int i = s - 1; i >= 0; --i) {
    double v = x[i];
    for (int j = i + 1; j < s; ++j) v -= L[static_cast<size_t>(j) * cap + i] * x[j];
    x[i] = v / L[static_cast<size_t>(i) * cap + i];
  }
}

// Append atom k to the factor: L_new = [[L, 0], [lᵀ, √(G_kk − ‖l‖²)]], L l = G_{A,k}.
template <typename T>
bool chol_append(Work& W, int s, int cap, const T* G, int K, int k) {
  const T* Gk = G + static_cast<size_t>(k) * K;
  double* L = W.L.data();
  double* l = L + static_cast<size_t>(s) * cap;
  double sq = 0;
  for (int i = 0; i < s; ++i) {
    double v = static_cast<double>(Gk[W.act[i]]);
    const double* Li = L + static_cast<size_t>(i) * cap;
    for (int j = 0; j < i; ++j) v -= Li[j] * l[j];
    l[i] = v / Li[i];
    sq += l[i] * l[i];
  }
  const double gkk = static_cast<double>(Gk[k]);
  const double diag = gkk - sq;
  if (!(diag > 1e-12 * std::max(gkk, 1e-300))) return false;  // k in span(A): singular
  l[s] = std::sqrt(diag);
  return true;
}

// Remove position p from the active set and its factor (rows shifted up, then
// Givens rotations on columns restore the lower-triangular form).
void chol_remove(Work& W, int s, int cap, int p) {
  double* L = W.L.data();
  for (int i = p; i < s - 1; ++i) {
    double* dst = L + static_cast<size_t>(i) * cap;
    const double* src = L + static_cast<size_t>(i + 1) * cap;
    for (int j = 0; j <= i + 1; ++j) dst[j] = src[j];
    W.act[i] = W.act[i + 1];
    W.z[i] = W.z[i + 1];
  }
  for (int j = p; j < s - 1; ++j) {
    double* Lj = L + static_cast<size_t>(j) * cap;
    const double x = Lj[j], y = Lj[j + 1];
    const double r = std::hypot(x, y);
    const double cs = x / r, sn = y / r;
    for (int i = j; i < s - 1; ++i) {
      double* Li = L + static_cast<size_t>(i) * cap;
      const double u = Li[j], v = Li[j + 1];
      Li[j] = cs * u + sn * v;
      Li[j + 1] = -sn * u + cs * v;
    }
    Lj[j + 1] = 0;
  }
}

template <typename T>
int lars_point(const T* b, const T* G, const bool* mask, int K, double lam, int cap,
               int max_steps, T* zout, int* steps_out, Work& W) {
  const double inf = std::numeric_limits<double>::infinity();
  std::fill(zout, zout + K, T(0));
  double t = -inf;
  int first = -1;
  for (int k = 0; k < K; ++k) {
    W.in[k] = 0;
    W.ok[k] = mask[k] ? 1.0 : 0.0;
    W.c[k] = mask[k] ? static_cast<double>(b[k]) : -inf;
    if (W.c[k] > t) t = W.c[k], first = k;
  }
  *steps_out = 0;
  if (!(t > lam)) return 0;  // z = 0 is optimal
  int s = 0;
  if (!chol_append(W, 0, cap, G, K, first)) return 2;
  W.act[0] = first, W.z[0] = 0, W.in[first] = 1, W.ok[first] = 0.0, s = 1;
  int dropped = -1, step = 0;
  for (; step < max_steps; ++step) {
    for (int i = 0; i < s; ++i) W.w[i] = 1.0;
    chol_solve(W.L.data(), s, cap, W.w.data());
    std::fill(W.a.begin(), W.a.end(), 0.0);
    for (int i = 0; i < s; ++i) {
      const double wi = W.w[i];
      const T* Gi = G + static_cast<size_t>(W.act[i]) * K;
      for (int k = 0; k < K; ++k) W.a[k] += wi * static_cast<double>(Gi[k]);
    }
    double delta = t - lam;
    int kind = 0, who = -1;
    // entering: the k with the smallest (t − c_k)/(1 − a_k) among the allowed atoms; the
    // ratios are formed branch-free (vectorised), then the minimum is searched
    if (dropped >= 0) W.ok[dropped] = 0.0;
    double* r = W.l.data() + cap;  // scratch of length K (W.l holds cap + K)
    for (int k = 0; k < K; ++k) {
      const double slope = 1.0 - W.a[k];
      const double num = std::max(t - W.c[k], 0.0);
      r[k] = (slope > 1e-12) & (W.ok[k] > 0.0) ? num / slope : inf;
    }
    if (dropped >= 0) W.ok[dropped] = 1.0;
    for (int k = 0; k < K; ++k)
      if (r[k] < delta) delta = r[k], kind = 1, who = k;
    for (int i = 0; i < s; ++i) {
      if (W.w[i] < 0) {
        const double d = -W.z[i] / W.w[i];
        if (d < delta) delta = d, kind = 2, who = i;
      }
    }
    for (int i = 0; i < s; ++i) W.z[i] += delta * W.w[i];
    for (int k = 0; k < K; ++k) W.c[k] -= delta * W.a[k];  // the active ones are reset below
    t -= delta;
    for (int i = 0; i < s; ++i) W.c[W.act[i]] = t;
    dropped = -1;
    if (kind == 0) break;
    if (kind == 1) {
      if (s == cap || !chol_append(W, s, cap, G, K, who)) {
        *steps_out = step + 1;
        return 2;
      }
      W.act[s] = who, W.z[s] = 0, W.in[who] = 1, W.ok[who] = 0.0, W.c[who] = t, ++s;
    } else {
      const int k = W.act[who];
      W.in[k] = 0, W.ok[k] = 1.0, W.c[k] = t, dropped = k;
      chol_remove(W, s, cap, who);
      --s;
      if (s == 0) {  // every code left: restart from the largest correlation
        double best = -inf;
        for (int j = 0; j < K; ++j)
          if (mask[j] && W.c[j] > best) best = W.c[j], first = j;
        if (!(best > lam)) break;
        if (!chol_append(W, 0, cap, G, K, first)) return 2;
        W.act[0] = first, W.z[0] = 0, W.in[first] = 1, W.ok[first] = 0.0, s = 1, t = best;
      }
    }
  }
  *steps_out = step + 1;
  // exact codes on the final support, z_A = G_AA⁻¹ (b_A − λ1), from a fresh factor
  // (the updated one carries the rounding of every step)
  for (int i = 0; i < s; ++i) {
    double* Li = W.L.data() + static_cast<size_t>(i) * cap;
    const T* Gi = G + static_cast<size_t>(W.act[i]) * K;
    for (int j = 0; j <= i; ++j) {
      double v = static_cast<double>(Gi[W.act[j]]);
      const double* Lj = W.L.data() + static_cast<size_t>(j) * cap;
      for (int q = 0; q < j; ++q) v -= Li[q] * Lj[q];
      Li[j] = j < i ? v / Lj[j] : std::sqrt(std::max(v, 1e-300));
    }
  }
  for (int i = 0; i < s; ++i) W.l[i] = static_cast<double>(b[W.act[i]]) - lam;
  chol_solve(W.L.data(), s, cap, W.l.data());
  bool positive = true;
  for (int i = 0; i < s; ++i) positive &= W.l[i] > 0;
  for (int i = 0; i < s; ++i)
    zout[W.act[i]] = static_cast<T>(positive ? W.l[i] : std::max(W.z[i], 0.0));
  return step >= max_steps ? 1 : 0;
}

// run(lo, hi) over the rows [0, N) split into contiguous blocks, one thread per block
// (at most `threads`, and at least 16 rows a thread).
template <typename F>
void over_rows(int64_t N, int64_t threads, F run) {
  const int64_t n_threads = std::max<int64_t>(1, std::min<int64_t>(threads, N / 16 + 1));
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < n_threads; ++i)
    pool.emplace_back(run, N * i / n_threads, N * (i + 1) / n_threads);
  run(0, N / n_threads);
  for (auto& th : pool) th.join();
}

template <ffi::DataType DT>
ffi::Error LarsImpl(ffi::Buffer<DT> B, ffi::Buffer<DT> G, ffi::Buffer<ffi::PRED> mask,
                    ffi::Buffer<ffi::PRED> todo, ffi::Buffer<DT> lam, int64_t cap,
                    int64_t max_steps, int64_t threads,
                    ffi::ResultBuffer<DT> Z, ffi::ResultBuffer<ffi::S32> status,
                    ffi::ResultBuffer<ffi::S32> steps) {
  using T = ffi::NativeType<DT>;
  const auto dims = B.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("B must be (N, K)");
  const int64_t N = dims[0], K = dims[1];
  const int C = static_cast<int>(std::min<int64_t>(cap, K));
  const double l = static_cast<double>(*lam.typed_data());
  const T* b = B.typed_data();
  const T* g = G.typed_data();
  const bool* m = mask.typed_data();
  const bool* want = todo.typed_data();
  T* z = Z->typed_data();
  int32_t* st = status->typed_data();
  int32_t* sp = steps->typed_data();
  auto run = [&](int64_t lo, int64_t hi) {
    Work W(static_cast<int>(K), C);
    for (int64_t n = lo; n < hi; ++n) {
      if (!want[n]) {  // already certified by the caller's warm start
        std::fill(z + n * K, z + (n + 1) * K, T(0));
        st[n] = 0, sp[n] = 0;
        continue;
      }
      int n_steps = 0;
      st[n] = lars_point<T>(b + n * K, g, m, static_cast<int>(K), l, C,
                            static_cast<int>(max_steps), z + n * K, &n_steps, W);
      sp[n] = n_steps;
    }
  };
  over_rows(N, threads, run);
  return ffi::Error::Success();
}

// Exact codes on the support a point already has: z_S = G_SS⁻¹(b_S − λ1) from a fresh
// Cholesky factor; ok = 0 (codes left as given) where G_SS is singular, S exceeds cap
// or a code would not stay positive.
template <typename T>
bool resolve_point(const T* b, const T* G, const T* z, int K, double lam, int cap, T* out,
                   Work& W) {
  int s = 0;
  for (int k = 0; k < K; ++k) {
    out[k] = z[k];
    if (z[k] > T(0)) {
      if (s == cap) return false;
      W.act[s++] = k;
    }
  }
  if (s == 0) return true;
  double* L = W.L.data();
  for (int i = 0; i < s; ++i) {
    double* Li = L + static_cast<size_t>(i) * cap;
    const T* Gi = G + static_cast<size_t>(W.act[i]) * K;
    for (int j = 0; j <= i; ++j) {
      double v = static_cast<double>(Gi[W.act[j]]);
      const double* Lj = L + static_cast<size_t>(j) * cap;
      for (int q = 0; q < j; ++q) v -= Li[q] * Lj[q];
      if (j < i) {
        Li[j] = v / Lj[j];
      } else {
        if (!(v > 1e-12 * std::max(static_cast<double>(Gi[W.act[i]]), 1e-300))) return false;
        Li[i] = std::sqrt(v);
      }
    }
  }
  for (int i = 0; i < s; ++i) W.l[i] = static_cast<double>(b[W.act[i]]) - lam;
  chol_solve(L, s, cap, W.l.data());
  for (int i = 0; i < s; ++i)
    if (!(W.l[i] > 0)) return false;
  for (int i = 0; i < s; ++i) out[W.act[i]] = static_cast<T>(W.l[i]);
  return true;
}

template <ffi::DataType DT>
ffi::Error ResolveImpl(ffi::Buffer<DT> B, ffi::Buffer<DT> G, ffi::Buffer<DT> Z0,
                       ffi::Buffer<DT> lam, int64_t cap, int64_t threads,
                       ffi::ResultBuffer<DT> Z, ffi::ResultBuffer<ffi::PRED> ok) {
  using T = ffi::NativeType<DT>;
  const auto dims = B.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("B must be (N, K)");
  const int64_t N = dims[0], K = dims[1];
  const int C = static_cast<int>(std::min<int64_t>(cap, K));
  const double l = static_cast<double>(*lam.typed_data());
  const T *b = B.typed_data(), *g = G.typed_data(), *z0 = Z0.typed_data();
  T* z = Z->typed_data();
  bool* good = ok->typed_data();
  auto run = [&](int64_t lo, int64_t hi) {
    Work W(static_cast<int>(K), C);
    for (int64_t n = lo; n < hi; ++n)
      good[n] = resolve_point<T>(b + n * K, g, z0 + n * K, static_cast<int>(K), l, C, z + n * K, W);
  };
  over_rows(N, threads, run);
  return ffi::Error::Success();
}

}  // namespace

#define JAXSAE_RESOLVE_BINDING(DT)      \
  ffi::Ffi::Bind()                      \
      .Arg<ffi::Buffer<DT>>()           \
      .Arg<ffi::Buffer<DT>>()           \
      .Arg<ffi::Buffer<DT>>()           \
      .Arg<ffi::Buffer<DT>>()           \
      .Attr<int64_t>("cap")             \
      .Attr<int64_t>("threads")         \
      .Ret<ffi::Buffer<DT>>()           \
      .Ret<ffi::Buffer<ffi::PRED>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsaeResolveF64, ResolveImpl<ffi::F64>,
                              JAXSAE_RESOLVE_BINDING(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsaeResolveF32, ResolveImpl<ffi::F32>,
                              JAXSAE_RESOLVE_BINDING(ffi::F32));

#define JAXSAE_LARS_BINDING(DT)                   \
  ffi::Ffi::Bind()                                \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<DT>>()                     \
      .Arg<ffi::Buffer<ffi::PRED>>()              \
      .Arg<ffi::Buffer<ffi::PRED>>()              \
      .Arg<ffi::Buffer<DT>>()                     \
      .Attr<int64_t>("cap")                       \
      .Attr<int64_t>("max_steps")                 \
      .Attr<int64_t>("threads")                   \
      .Ret<ffi::Buffer<DT>>()                     \
      .Ret<ffi::Buffer<ffi::S32>>()               \
      .Ret<ffi::Buffer<ffi::S32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsaeLarsF64, LarsImpl<ffi::F64>, JAXSAE_LARS_BINDING(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsaeLarsF32, LarsImpl<ffi::F32>, JAXSAE_LARS_BINDING(ffi::F32));
