// Fused in-place SGD with momentum and L2 weight decay, on the variables' own storage:
//   v = momentum * v + (g + weightDecay * w);  w = w - lr * v
// One pass instead of the five tensors the same update costs as tf ops, and one call for
// every parameter of the step: a ResNet-20 has 59 parameters of 16 to 36,864 values, and
// one call each cost 1.7 ms a step (AMX Xeon, bench/profile.ts), mostly in waking the
// OpenMP team 59 times for a few microseconds of work.
#include <algorithm>

#include "common.h"

namespace rn {
namespace {

struct Param {
  float *w, *v;
  const float *g;
  int64_t n;
  float weightDecay;
};

// sgdUpdate({ params: [{ weights, gradient, velocity, weightDecay }], lr, momentum }): the
// parameters are laid end to end and the threads take equal contiguous shares of the
// values; each value's arithmetic is the same whichever thread runs it.
Napi::Value SgdUpdate(const Napi::CallbackInfo &info) {
  const Args args(info, "sgdUpdate");
  const float lr = float(args.number("lr")), m = float(args.number("momentum"));
  std::vector<Param> params;
  std::vector<int64_t> starts{0};
  for (const Args &p : args.list("params")) {
    size_t n = 0;
    float *w = p.wholeF32("weights", n);
    params.push_back({w, p.f32("velocity", n), p.f32("gradient", n), int64_t(n), float(p.number("weightDecay"))});
    starts.push_back(starts.back() + int64_t(n));
  }
  const int64_t total = starts.back();
  const int nt = total < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    int64_t begin, end;
    threadRange(total, omp_get_thread_num(), omp_get_num_threads(), begin, end);
    for (size_t j = 0; j < params.size(); ++j) {
      const int64_t from = std::max(begin, starts[j]) - starts[j], to = std::min(end, starts[j + 1]) - starts[j];
      if (from >= to) continue;
      const Param &p = params[j];
      float *__restrict w = p.w, *__restrict v = p.v;
      const float *__restrict g = p.g;
      const float wd = p.weightDecay;
#pragma omp simd
      for (int64_t i = from; i < to; ++i) {
        const float vi = m * v[i] + (g[i] + wd * w[i]);
        v[i] = vi;
        w[i] -= lr * vi;
      }
    }
  }
  return info.Env().Undefined();
}

}  // namespace

void initSgd(Napi::Env env, Napi::Object exports) {
  exportFn<SgdUpdate>(env, exports, "sgdUpdate");
}

}  // namespace rn
