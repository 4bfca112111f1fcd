// Batch normalization over the rows of an NHWC tensor viewed as [M = N*H*W, C], with the
// ReLU that follows it fused in (forward: clamp; backward: mask by the saved output), and
// at the end of a residual block the shortcut's addition too.
//
// Hand-written OpenMP loops rather than oneDNN's batch_normalization: with channels
// innermost each row is one or a few SIMD vectors, so every pass is a plain streaming
// loop, and we control the reduction order. Each thread reduces a fixed contiguous range
// of rows into its own partial sums (float within short blocks, double across blocks),
// and the partials are added in thread order, so results are bit-identical run to run for
// a given thread count.
#include <algorithm>
#include <cmath>
#include <functional>

#include "common.h"

namespace rn {
namespace {

constexpr int64_t kBlock = 64;  // rows summed in float before folding into double
// Rows per step of the elementwise passes that also write a bf16 copy: the f32 results of
// a step are converted while they are still in L1 (one call of the vector converter).
constexpr int64_t kCopyRows = 64;

int teamSize(int64_t elements) { return elements < kParallelMin ? 1 : omp_get_max_threads(); }

// The channel count as a compile-time constant when it is one of the CIFAR nets' widths
// (16, 32, 64), else 0 and read at run time. With a constant width the per-row loops
// unroll fully and the per-channel running sums stay in registers instead of going
// through memory every row (the statistics pass alone: 1.7x faster at 131072 x 16 in a
// standalone test on an AMD EPYC Zen 5).
template <int64_t W>
struct Width {
  int64_t runtime;
  int64_t operator()() const { return W > 0 ? W : runtime; }
};

template <typename F>
void withWidth(int64_t C, F &&f) {
  switch (C) {
    case 16: return f(Width<16>{C});
    case 32: return f(Width<32>{C});
    case 64: return f(Width<64>{C});
    default: return f(Width<0>{C});
  }
}

constexpr int64_t kStackChannels = 64;

// sums[t*2C + c] += f(row, c) and sums[t*2C + C + c] += g(row, c) over thread t's rows.
template <typename Wd, typename RowFn>
void reduceRows(int64_t M, Wd width, std::vector<double> &partials, int nt, RowFn rowFn) {
  const int64_t C = width();
  partials.assign(size_t(nt) * 2 * C, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    int64_t begin, end;
    threadRange(M, t, omp_get_num_threads(), begin, end);
    double *s1 = &partials[size_t(t) * 2 * C];
    double *s2 = s1 + C;
    float onStack[2 * kStackChannels];
    std::vector<float> onHeap(C > kStackChannels ? 2 * C : 0);
    float *f1 = C > kStackChannels ? onHeap.data() : onStack, *f2 = f1 + C;
    for (int64_t b = begin; b < end; b += kBlock) {
      for (int64_t c = 0; c < C; ++c) f1[c] = f2[c] = 0.f;
      const int64_t e = std::min(end, b + kBlock);
      for (int64_t r = b; r < e; ++r) rowFn(r, f1, f2);
      for (int64_t c = 0; c < C; ++c) {
        s1[c] += f1[c];
        s2[c] += f2[c];
      }
    }
  }
}

// Adds the threads' partials in thread order (the determinism promise above).
void combine(const std::vector<double> &partials, int nt, int64_t C, std::vector<double> &s1,
             std::vector<double> &s2) {
  s1.assign(C, 0.0);
  s2.assign(C, 0.0);
  for (int t = 0; t < nt; ++t) {
    const double *p = &partials[size_t(t) * 2 * C];
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += p[c];
      s2[c] += p[C + c];
    }
  }
}

// y = x * scale[c] + shift[c] (+ res, the residual block's shortcut), optionally clamped at
// 0; with BF16 also yb = bf16(y), the next convolution's input (see toBf16).
template <bool RELU, bool RES, bool BF16, typename Wd>
void affineT(const float *x, const float *scale, const float *shift, const float *res, float *y,
             uint16_t *yb, int64_t M, Wd width, int nt) {
  const int64_t C = width();
  const int64_t steps = (M + kCopyRows - 1) / kCopyRows;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t r0 = step * kCopyRows, r1 = std::min(M, r0 + kCopyRows);
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = x + r * C;
      const float *rr = RES ? res + r * C : nullptr;
      float *yr = y + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        float v = xr[c] * scale[c] + shift[c];
        if constexpr (RES) v += rr[c];
        yr[c] = RELU ? std::max(v, 0.f) : v;
      }
    }
    if constexpr (BF16) toBf16(y + r0 * C, yb + r0 * C, (r1 - r0) * C);
  }
}

void affine(const float *x, const float *scale, const float *shift, const float *res, float *y,
            uint16_t *yb, int64_t M, int64_t C, bool relu, int nt) {
  withWidth(C, [&](auto w) {
    withFlag(relu, [&](auto R) {
      withFlag(res != nullptr, [&](auto S) {
        withFlag(yb != nullptr, [&](auto B) {
          affineT<decltype(R)::value, decltype(S)::value, decltype(B)::value>(x, scale, shift, res, y, yb, M, w, nt);
        });
      });
    });
  });
}

// rows (M) and channels (C) of an [M, C] view of an NHWC tensor.
struct Shape2 {
  int64_t M, C;
};

Shape2 readShape(const Args &a) {
  const int64_t M = a.integer("rows"), C = a.integer("channels");
  if (M <= 0 || C <= 0) a.fail("needs rows and channels > 0");
  return {M, C};
}

// bnTrainForward({ x, gamma, beta, y, mean, variance, rows, channels, epsilon, relu,
// residual?, yBf16? }): x and y are [rows, channels]. With a residual [rows, channels],
// y = relu?(BN(x) + residual): the end of a residual block in the same pass as the
// normalization (no separate add + ReLU pass). yBf16 (Uint16Array [rows, channels]): also
// receives y in bf16, for a convolution that multiplies in bf16.
Napi::Value BnTrainForward(const Napi::CallbackInfo &info) {
  const Args a(info, "bnTrainForward");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  const double eps = a.number("epsilon");
  const bool relu = a.flag("relu");
  const float *x = a.f32("x", M * C), *gamma = a.f32("gamma", C), *beta = a.f32("beta", C);
  float *y = a.f32("y", M * C), *mean = a.f32("mean", C), *var = a.f32("variance", C);
  const float *residual = a.optF32("residual", M * C);
  uint16_t *yBf16 = a.optU16("yBf16", M * C);

  // Sums of (x - x[0]) rather than of x: shifting by a sample keeps the one-pass variance
  // E[d^2] - E[d]^2 free of cancellation when |mean| >> std.
  std::vector<float> shift(x, x + C);
  const int nt = teamSize(M * C);
  std::vector<double> partials, s1, s2;
  withWidth(C, [&](auto w) {
    reduceRows(M, w, partials, nt, [&](int64_t r, float *f1, float *f2) {
      const float *xr = x + r * w();
#pragma omp simd
      for (int64_t c = 0; c < w(); ++c) {
        const float d = xr[c] - shift[c];
        f1[c] += d;
        f2[c] += d * d;
      }
    });
  });
  combine(partials, nt, C, s1, s2);

  std::vector<float> scale(C), bias(C);
  for (int64_t c = 0; c < C; ++c) {
    const double m1 = s1[c] / M;
    const double v = std::max(s2[c] / M - m1 * m1, 0.0);
    const double mu = shift[c] + m1;
    const double k = gamma[c] / std::sqrt(v + eps);
    mean[c] = float(mu);
    var[c] = float(v);
    scale[c] = float(k);
    bias[c] = float(beta[c] - mu * k);
  }
  affine(x, scale.data(), bias.data(), residual, y, yBf16, M, C, relu, nt);
  return info.Env().Undefined();
}

// The two passes of the backward, templated on the ReLU so the inner loops are
// branch-free: g = dy * mask with mask = (y > 0) as 0/1. EMIT: also store g in gOut (the
// gradient of a residual input), inside the same SIMD loop: a second loop after it made the
// call 8x slower (8.1 vs 1.0 ms at 131072 x 16 on an AMD EPYC); inside it costs 1.26 vs 1.19.
// BF16: also store dx in bf16 in dxb (the incoming gradient of the convolution before).
template <bool RELU, bool EMIT, bool BF16, typename Wd>
void bnBackwardPasses(const float *dy, const float *x, const float *y, const float *mean,
                      int64_t M, Wd width, int nt, std::vector<double> &partials,
                      std::vector<double> &sg, std::vector<double> &sgx,
                      const std::function<void(std::vector<float> &, std::vector<float> &,
                                               std::vector<float> &)> &fold,
                      float *dx, float *gOut, uint16_t *dxb) {
  const int64_t C = width();
  reduceRows(M, width, partials, nt, [&](int64_t r, float *f1, float *f2) {
    const float *dyr = dy + r * C, *xr = x + r * C;
    const float *yr = RELU ? y + r * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      float g = dyr[c];
      if constexpr (RELU) g = yr[c] > 0.f ? g : 0.f;
      f1[c] += g;
      f2[c] += g * (xr[c] - mean[c]);
    }
  });
  combine(partials, nt, C, sg, sgx);
  std::vector<float> k(C), b(C), d(C);
  fold(k, b, d);
  const float *kp = k.data(), *bp = b.data(), *dp = d.data();
  const int64_t steps = (M + kCopyRows - 1) / kCopyRows;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t r0 = step * kCopyRows, r1 = std::min(M, r0 + kCopyRows);
    for (int64_t r = r0; r < r1; ++r) {
      const float *dyr = dy + r * C, *xr = x + r * C;
      const float *yr = RELU ? y + r * C : nullptr;
      float *dxr = dx + r * C;
      float *gr = EMIT ? gOut + r * C : nullptr;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        float g = dyr[c];
        if constexpr (RELU) g = yr[c] > 0.f ? g : 0.f;
        dxr[c] = kp[c] * g + bp[c] * xr[c] + dp[c];
        if constexpr (EMIT) gr[c] = g;
      }
    }
    if constexpr (BF16) toBf16(dx + r0 * C, dxb + r0 * C, (r1 - r0) * C);
  }
}

// bnTrainBackward({ dy, x, y, gamma, mean, variance, dx, dgamma, dbeta, rows, channels,
// epsilon, relu, g?, dxBf16? }). y (the forward's output) is needed only with relu.
// With g = relu ? dy * (y > 0) : dy and xhat = (x - mean) / sqrt(var + eps):
//   dbeta = sum g, dgamma = sum g * xhat,
//   dx = gamma / sqrt(var + eps) * (g - dbeta / M - xhat * dgamma / M).
Napi::Value BnTrainBackward(const Napi::CallbackInfo &info) {
  const Args a(info, "bnTrainBackward");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  const double eps = a.number("epsilon");
  const bool relu = a.flag("relu");
  const float *dy = a.f32("dy", M * C), *x = a.f32("x", M * C);
  const float *y = relu ? a.f32("y", M * C) : nullptr;
  const float *gamma = a.f32("gamma", C), *mean = a.f32("mean", C), *var = a.f32("variance", C);
  float *dx = a.f32("dx", M * C), *dgamma = a.f32("dgamma", C), *dbeta = a.f32("dbeta", C);
  // g (optional, [M, C]): receives dy masked by the ReLU, the gradient of a residual input
  // (the masked dy is the gradient of a block's shortcut: written in the pass that computes
  // it anyway, instead of by a separate ReLU-mask pass).
  float *g = a.optF32("g", M * C);
  // dxBf16 (optional Uint16Array [M, C]): receives dx in bf16.
  uint16_t *dxb = a.optU16("dxBf16", M * C);

  const int nt = teamSize(M * C);
  std::vector<double> partials, sg, sgx;
  // dx = k*g + b*x + d per channel, folded once from the reductions.
  auto fold = [&](std::vector<float> &k, std::vector<float> &b, std::vector<float> &d) {
    for (int64_t c = 0; c < C; ++c) {
      const double inv = 1.0 / std::sqrt(double(var[c]) + eps);
      const double kc = gamma[c] * inv;
      const double bc = -kc * inv * inv * sgx[c] / M;
      dbeta[c] = float(sg[c]);
      dgamma[c] = float(sgx[c] * inv);
      k[c] = float(kc);
      b[c] = float(bc);
      d[c] = float(-kc * sg[c] / M - bc * mean[c]);
    }
  };
  withWidth(C, [&](auto w) {
    withFlag(relu, [&](auto R) {
      withFlag(g != nullptr, [&](auto E) {
        withFlag(dxb != nullptr, [&](auto B) {
          bnBackwardPasses<decltype(R)::value, decltype(E)::value, decltype(B)::value>(
              dy, x, y, mean, M, w, nt, partials, sg, sgx, fold, dx, g, dxb);
        });
      });
    });
  });
  return info.Env().Undefined();
}

// bnInfer({ x, mean, variance, offset?, scale?, y, rows, channels, epsilon }): tfjs's
// FusedBatchNorm with per-channel statistics (inference mode).
Napi::Value BnInfer(const Napi::CallbackInfo &info) {
  const Args a(info, "bnInfer");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  const double eps = a.number("epsilon");
  const float *x = a.f32("x", M * C), *mean = a.f32("mean", C), *var = a.f32("variance", C);
  const float *offset = a.optF32("offset", C), *scale = a.optF32("scale", C);
  float *y = a.f32("y", M * C);
  std::vector<float> k(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    const double kc = (scale ? scale[c] : 1.0) / std::sqrt(double(var[c]) + eps);
    k[c] = float(kc);
    b[c] = float((offset ? offset[c] : 0.0) - mean[c] * kc);
  }
  affine(x, k.data(), b.data(), nullptr, y, nullptr, M, C, false, teamSize(M * C));
  return info.Env().Undefined();
}

}  // namespace

void initBatchNorm(Napi::Env env, Napi::Object exports) {
  exportFn<BnTrainForward>(env, exports, "bnTrainForward");
  exportFn<BnTrainBackward>(env, exports, "bnTrainBackward");
  exportFn<BnInfer>(env, exports, "bnInfer");
}

}  // namespace rn
