// The arithmetic of batch normalization (batchnorm-loops.cc), behind the N-API functions of
// batchnorm.cc: typed arguments in, outputs written through their pointers.
//
// batchnorm-loops.cc is compiled twice, for any x86-64 CPU and for AVX-512
// (batchnorm-loops-avx512.cc); bnLoops() picks one per call. Every header the loops use
// is included here, so that both copies see it before the AVX-512 copy's target pragma:
// a standard template instantiated in both object files must be compiled for the baseline
// in both, or the linker could keep the AVX-512 one for every caller
// (test/native-build.test.ts checks the object files).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common.h"

namespace rn {

// Training forward: y = relu?(BN(x) + residual?), the batch's mean and variance out.
struct BnForwardArgs {
  int64_t rows, channels;
  Layout layout;
  double epsilon;
  bool relu;
  const float *x;           // x or xBf16 (nhwc), exactly one
  const uint16_t *xBf16;
  const float *gamma, *beta;
  const float *residual;    // optional
  float *y;                 // y, yBf16 (nhwc) or both
  uint16_t *yBf16;
  float *mean, *variance;
};

// Training backward, g = relu ? dy (+ dyAdd) masked by y > 0 : dy (+ dyAdd).
struct BnBackwardArgs {
  int64_t rows, channels;
  Layout layout;
  double epsilon;
  bool relu;
  const float *dy;          // dy or dyBf16 (nhwc, with dxBf16 only), exactly one
  const uint16_t *dyBf16;
  const float *dyAdd;       // optional
  const float *x;           // x or xBf16 (nhwc), exactly one
  const uint16_t *xBf16;
  const float *y;           // with relu: y, or else yBf16 (nhwc)
  const uint16_t *yBf16;
  const float *gamma, *mean, *variance;
  float *dx;                // dx, dxBf16 (nhwc) or both
  uint16_t *dxBf16;
  float *dgamma, *dbeta;
  float *g;                 // optional: receives g (may be dy or dyAdd itself)
};

// Inference: y = relu?(BN(x) with the given statistics + residual?), nhwc.
struct BnInferArgs {
  int64_t rows, channels;
  double epsilon;
  bool relu;
  const float *x;           // x or xBf16, exactly one
  const uint16_t *xBf16;
  const float *mean, *variance;
  const float *offset, *scale, *residual;  // optional
  float *y;
};

// One compiled copy of the loops.
struct BnLoops {
  void (*trainForward)(const BnForwardArgs &);
  void (*trainBackward)(const BnBackwardArgs &);
  void (*infer)(const BnInferArgs &);
};

namespace generic {
extern const BnLoops kBnLoops;
}
namespace avx512 {
extern const BnLoops kBnLoops;
}

// The copy for a call, by avx512Loops(bf16) (common.h): bf16, whether it reads or writes
// a bf16 array.
inline const BnLoops &bnLoops(bool bf16) {
  const bool fast = avx512Loops(bf16);
  countLoopsCall(fast);
  return fast ? avx512::kBnLoops : generic::kBnLoops;
}

}  // namespace rn
