// The net's head and loss in training (src/engine/native/kernels-head.ts): global average
// pooling, the fully connected layer and the mean softmax cross-entropy, forward and
// backward. Little arithmetic (128 x 64 x 10 multiply-adds at the paper's batch), but as
// tfjs ops it was some 25 kernel calls a step; here it is two.
#include <algorithm>

#include "common.h"

namespace rn {
namespace {

struct Head {
  int64_t rows, pixels, channels, classes;  // N, H*W, C, K
  const float *h, *w;                        // [N, H*W, C] (NHWC), [C, K]
  std::vector<int64_t> labels;               // [N], each in [0, K)
};

Head readHead(const Args &args) {
  Head d;
  d.rows = args.integer("rows");
  d.pixels = args.integer("pixels");
  d.channels = args.integer("channels");
  d.classes = args.integer("classes");
  if (d.rows < 1 || d.pixels < 1 || d.channels < 1 || d.classes < 2) {
    args.fail("needs rows, pixels and channels >= 1 and classes >= 2");
  }
  d.h = args.f32("h", d.rows * d.pixels * d.channels);
  d.w = args.f32("w", d.channels * d.classes);
  d.labels = args.ints("labels");
  if (int64_t(d.labels.size()) != d.rows) args.fail("labels must hold one label per row");
  for (const int64_t l : d.labels) {
    if (l < 0 || l >= d.classes) args.fail("labels must lie in [0, classes), not " + std::to_string(l));
  }
  return d;
}

// pooled [N, C]: each image's mean over its pixels, summed in pixel order (the same sums
// with any number of threads).
std::vector<float> pool(const Head &d) {
  const int64_t P = d.pixels, C = d.channels;
  std::vector<float> pooled(d.rows * C, 0.f);
  const int nt = d.rows * P * C < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < d.rows; ++n) {
    float *o = pooled.data() + n * C;
    for (int64_t p = 0; p < P; ++p) {
      const float *row = d.h + (n * P + p) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] += row[c];
    }
    for (int64_t c = 0; c < C; ++c) o[c] /= float(P);
  }
  return pooled;
}

// A row of logits' largest value and sum_k exp(logit_k - largest), in double: the softmax's
// denominator, the same in the loss and in its gradient.
struct ExpSum {
  float top;
  double sum;
};
ExpSum expSum(const float *l, int64_t K) {
  ExpSum e{l[0], 0};
  for (int64_t k = 1; k < K; ++k) e.top = std::max(e.top, l[k]);
  for (int64_t k = 0; k < K; ++k) e.sum += std::exp(double(l[k]) - e.top);
  return e;
}

// headLoss({ h, w, b, labels, logits, rows, pixels, channels, classes }): writes logits
// [N, K] = pool(h) w + b and returns the mean over rows of log(sum_k exp(logit_k)) -
// logit_label (in double, after subtracting the row's largest logit).
Napi::Value HeadLoss(const Napi::CallbackInfo &info) {
  const Args args(info, "headLoss");
  const Head d = readHead(args);
  const int64_t C = d.channels, K = d.classes;
  const float *b = args.f32("b", K);
  float *logits = args.f32("logits", d.rows * K);
  const std::vector<float> pooled = pool(d);
  double total = 0;
  for (int64_t n = 0; n < d.rows; ++n) {
    float *l = logits + n * K;
    for (int64_t k = 0; k < K; ++k) l[k] = 0.f;
    for (int64_t c = 0; c < C; ++c) {
      const float x = pooled[n * C + c];
      for (int64_t k = 0; k < K; ++k) l[k] += x * d.w[c * K + k];
    }
    for (int64_t k = 0; k < K; ++k) l[k] += b[k];
    const ExpSum e = expSum(l, K);
    total += double(e.top) + std::log(e.sum) - l[d.labels[n]];
  }
  return Napi::Number::New(info.Env(), total / double(d.rows));
}

// headLossGrad({ h, w, logits, labels, dloss, dlogits?, dh, dw, db, rows, pixels, channels,
// classes }): the gradients of dloss * loss (+ sum(dlogits * logits), when given) for the
// logits headLoss wrote: g = dloss * (softmax(logits) - onehot(label)) / N (+ dlogits),
// db = sum_n g, dw = pool(h)^T g, dh[n, p, c] = (g w^T)[n, c] / (H*W) at every pixel.
Napi::Value HeadLossGrad(const Napi::CallbackInfo &info) {
  const Args args(info, "headLossGrad");
  const Head d = readHead(args);
  const int64_t N = d.rows, P = d.pixels, C = d.channels, K = d.classes;
  const float *logits = args.f32("logits", N * K);
  const float *extra = args.optF32("dlogits", N * K);
  const float dloss = float(args.number("dloss"));
  float *dh = args.f32("dh", N * P * C);
  float *dw = args.f32("dw", C * K);
  float *db = args.f32("db", K);

  std::vector<float> g(N * K);
  for (int64_t n = 0; n < N; ++n) {
    const float *l = logits + n * K;
    const ExpSum e = expSum(l, K);
    for (int64_t k = 0; k < K; ++k) {
      const float p = float(std::exp(double(l[k]) - e.top) / e.sum);
      g[n * K + k] = dloss * (p - (k == d.labels[n] ? 1.f : 0.f)) / float(N) + (extra ? extra[n * K + k] : 0.f);
    }
  }
  for (int64_t k = 0; k < K; ++k) db[k] = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) db[k] += g[n * K + k];
  }
  const std::vector<float> pooled = pool(d);
  for (int64_t i = 0; i < C * K; ++i) dw[i] = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const float x = pooled[n * C + c];
      for (int64_t k = 0; k < K; ++k) dw[c * K + k] += x * g[n * K + k];
    }
  }
  const int nt = N * P * C < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::vector<float> row(C);
    for (int64_t c = 0; c < C; ++c) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += g[n * K + k] * d.w[c * K + k];
      row[c] = s / float(P);
    }
    for (int64_t p = 0; p < P; ++p) std::copy(row.begin(), row.end(), dh + (n * P + p) * C);
  }
  return info.Env().Undefined();
}

}  // namespace

void initHead(Napi::Env env, Napi::Object exports) {
  exportFn<HeadLoss>(env, exports, "headLoss");
  exportFn<HeadLossGrad>(env, exports, "headLossGrad");
}

}  // namespace rn
