// Fused in-place SGD with momentum and L2 weight decay, on the variables' own storage:
//   v = momentum * v + (g + weightDecay * w);  w = w - lr * v
// One pass instead of the five tensors the same update costs as tf ops.
#include "common.h"

namespace rn {
namespace {

// sgdUpdate({ weights, gradient, velocity, lr, momentum, weightDecay })
Napi::Value SgdUpdate(const Napi::CallbackInfo &info) {
  const Args args(info, "sgdUpdate");
  size_t n = 0;
  float *w = args.wholeF32("weights", n), *v = args.f32("velocity", n);
  const float *g = args.f32("gradient", n);
  const float lr = float(args.number("lr")), m = float(args.number("momentum")),
              wd = float(args.number("weightDecay"));
  const int nt = int64_t(n) < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float vi = m * v[i] + (g[i] + wd * w[i]);
    v[i] = vi;
    w[i] -= lr * vi;
  }
  return info.Env().Undefined();
}

}  // namespace

void initSgd(Napi::Env env, Napi::Object exports) {
  exportFn<SgdUpdate>(env, exports, "sgdUpdate");
}

}  // namespace rn
