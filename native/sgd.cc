// Fused in-place SGD with momentum and L2 weight decay, on the variables' own storage:
//   v = momentum * v + (g + weightDecay * w);  w = w - lr * v
// One pass instead of the five tensors the same update costs as tf ops.
#include "common.h"

namespace rn {
namespace {

// sgdUpdate(w, g, v, lr, momentum, weightDecay)
Napi::Value SgdUpdate(const Napi::CallbackInfo &info) {
  const size_t n = f32len(info[0]);
  requireLen(info[1], n, "gradient");
  requireLen(info[2], n, "velocity");
  float *w = f32(info[0], "weights"), *v = f32(info[2], "velocity");
  const float *g = f32(info[1], "gradient");
  const float lr = float(numArg(info, 3, "lr")), m = float(numArg(info, 4, "momentum")),
              wd = float(numArg(info, 5, "weightDecay"));
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
