// Batch normalization's N-API functions: bnTrainForward, bnTrainBackward and bnInfer read
// and check their arguments here and run the loops of batchnorm-loops.cc (the copy for
// this CPU and call: bnLoops()). Activations are [rows = N*H*W, channels] views of NHWC (or
// nChw16c: Layout in common.h) tensors; the ReLU after batch norm, and at the end of a
// residual block the shortcut's addition, are fused in.
#include "batchnorm-loops.h"

namespace rn {
namespace {

// rows (M) and channels (C) of an [M, C] view of an NHWC tensor.
struct Shape2 {
  int64_t M, C;
};

Shape2 readShape(const Args &a) {
  const int64_t M = a.integer("rows"), C = a.integer("channels");
  if (M <= 0 || C <= 0) a.fail("needs rows and channels > 0");
  return {M, C};
}

// An optional bf16 copy of an [M, C] output (key): NHWC only, the layout of the bf16
// convolutions (the body kernel keeps nChw16c only when the convolutions run in f32).
uint16_t *readBf16Out(const Args &a, const char *key, int64_t M, int64_t C, const Layout &l) {
  uint16_t *p = a.optU16(key, M * C);
  if (p && l.blocked) a.fail(std::string(key) + " is only written in layout nhwc");
  return p;
}

// The batch-norm input [M, C]: x (f32), or xBf16 (bf16, NHWC only, as the bf16
// convolutions write it); exactly one of them.
struct Input {
  const float *x;
  const uint16_t *xb;
};

Input readInput(const Args &a, int64_t M, int64_t C, const Layout &l) {
  const uint16_t *xb = a.optU16("xBf16", M * C);
  if (!xb) return {a.f32("x", M * C), nullptr};
  if (l.blocked) a.fail("xBf16 is only read in layout nhwc");
  if (a.optF32("x", M * C)) a.fail("takes x or xBf16, not both");
  return {nullptr, xb};
}

// bnTrainForward({ x | xBf16, gamma, beta, y?, mean, variance, rows, channels, epsilon, relu,
// residual?, yBf16?, layout?, imageSize? }): x and y are [rows, channels] (in layout).
// With a residual [rows, channels], y = relu?(BN(x) + residual): the end of a residual
// block in the same pass as the normalization (no separate add + ReLU pass). yBf16
// (Uint16Array [rows, channels]): also receives y in bf16, for a convolution that
// multiplies in bf16; then y may be left out, written in bf16 only (for a block's inner
// activation whose readers all take the copy: the next conv, its weight gradient, and the
// ReLU mask of bnTrainBackward). xBf16 (Uint16Array [rows, channels], nhwc) may stand in for
// x: the output of a convolution that multiplies in bf16, written in bf16 (the body kernel
// in bf16 mode; mixed precision as PyTorch's autocast does it: convolution outputs in bf16,
// batch-norm arithmetic in f32). Both passes then read 2 bytes a value instead of 4.
Napi::Value BnTrainForward(const Napi::CallbackInfo &info) {
  const Args a(info, "bnTrainForward");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  BnForwardArgs p{};
  p.rows = M;
  p.channels = C;
  p.epsilon = a.number("epsilon");
  p.relu = a.flag("relu");
  p.gamma = a.f32("gamma", C);
  p.beta = a.f32("beta", C);
  p.y = a.optF32("y", M * C);
  p.mean = a.f32("mean", C);
  p.variance = a.f32("variance", C);
  p.residual = a.optF32("residual", M * C);
  p.layout = readLayout(a, M, C);
  const Input in = readInput(a, M, C, p.layout);
  p.x = in.x;
  p.xBf16 = in.xb;
  p.yBf16 = readBf16Out(a, "yBf16", M, C, p.layout);
  if (!p.y && !p.yBf16) a.fail("needs y, yBf16 or both");
  bnLoops(p.xBf16 || p.yBf16).trainForward(p);
  return info.Env().Undefined();
}

// bnTrainBackward({ dy | dyBf16, dyAdd?, x | xBf16, y?, yBf16?, gamma, mean, variance, dx?,
// dgamma, dbeta, rows, channels, epsilon, relu, g?, dxBf16?, layout?, imageSize? }), every [rows, channels]
// array in layout. dx may be left out when dxBf16 is given: then dx is written in bf16
// only, for convolutions that read only that copy (the body kernel in bf16 mode, stages 1
// and 2). The f32 write and its read-for-ownership are 16 of the ~70-100 MB a stage-1 call
// moves: ResNet-56 bf16 step, batch-norm backward 158 -> 138 ms (medians of 3 alternating
// profiles, AMX Xeon). y (the forward's output) is needed only with relu, and then may be
// replaced by yBf16, the forward's bf16 copy of it (see positive() in batchnorm-loops.cc).
// With dyAdd the incoming gradient is dy + dyAdd (the same float addition as adding them
// first). xBf16 stands in for x when the forward read its input from bf16 (bnTrainForward).
Napi::Value BnTrainBackward(const Napi::CallbackInfo &info) {
  const Args a(info, "bnTrainBackward");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  BnBackwardArgs p{};
  p.rows = M;
  p.channels = C;
  p.epsilon = a.number("epsilon");
  p.relu = a.flag("relu");
  const Layout l = readLayout(a, M, C);
  p.layout = l;
  // dy, or dyBf16: a bf16 convolution's backward data output (nhwc, with dxBf16 only: the
  // body kernel in bf16 mode; other combinations are not compiled, see batchnorm-loops.cc).
  p.dyBf16 = a.optU16("dyBf16", M * C);
  p.dy = p.dyBf16 ? nullptr : a.f32("dy", M * C);
  if (p.dyBf16 && a.optF32("dy", M * C)) a.fail("takes dy or dyBf16, not both");
  if (p.dyBf16 && l.blocked) a.fail("dyBf16 is only read in layout nhwc");
  p.dyAdd = a.optF32("dyAdd", M * C);
  const Input in = readInput(a, M, C, l);
  p.x = in.x;
  p.xBf16 = in.xb;
  // The ReLU mask's source: y, or (y left out) yBf16, the forward's bf16 copy of it.
  p.yBf16 = p.relu ? a.optU16("yBf16", M * C) : nullptr;
  p.y = p.relu ? (p.yBf16 ? a.optF32("y", M * C) : a.f32("y", M * C)) : nullptr;
  p.gamma = a.f32("gamma", C);
  p.mean = a.f32("mean", C);
  p.variance = a.f32("variance", C);
  p.dx = a.optF32("dx", M * C);
  p.dgamma = a.f32("dgamma", C);
  p.dbeta = a.f32("dbeta", C);
  // g (optional, [M, C]): receives dy masked by the ReLU, the gradient of a residual input
  // (the masked dy is the gradient of a block's shortcut: written in the pass that computes
  // it anyway, instead of by a separate ReLU-mask pass). It may be dy or dyAdd itself
  // (overwritten), and must not overlap any other array.
  p.g = a.optF32("g", M * C);
  // dxBf16 (optional Uint16Array [M, C]): receives dx in bf16.
  p.dxBf16 = readBf16Out(a, "dxBf16", M, C, l);
  if (!p.dx && !p.dxBf16) a.fail("needs dx, dxBf16 or both");
  if (p.dyBf16 && !p.dxBf16) a.fail("dyBf16 is only read with dxBf16 (the bf16 body)");
  if (p.g) {
    const auto overlaps = [&](const void *q, int64_t bytes) {
      const char *b = static_cast<const char *>(q), *gb = reinterpret_cast<const char *>(p.g);
      return q && b < gb + M * C * 4 && gb < b + bytes;
    };
    if ((p.g != p.dy && overlaps(p.dy, M * C * 4)) || (p.g != p.dyAdd && overlaps(p.dyAdd, M * C * 4)) ||
        overlaps(p.dyBf16, M * C * 2) || overlaps(p.x, M * C * 4) ||
        overlaps(p.xBf16, M * C * 2) || overlaps(p.y, M * C * 4) || overlaps(p.yBf16, M * C * 2) ||
        overlaps(p.dx, M * C * 4) || overlaps(p.dxBf16, M * C * 2)) {
      a.fail("g must be dy or dyAdd itself, or an array of its own");
    }
  }
  if (p.yBf16 && l.blocked) a.fail("yBf16 is only read in layout nhwc");
  bnLoops(p.dyBf16 || p.xBf16 || p.yBf16 || p.dxBf16).trainBackward(p);
  return info.Env().Undefined();
}

// bnInfer({ x | xBf16, mean, variance, offset?, scale?, y, rows, channels, epsilon, relu,
// residual? }): tfjs's FusedBatchNorm with per-channel statistics (inference mode), nhwc,
// and in the fused inference unit (kernels-fused.ts) y = relu?(BN(x) + residual?) reading
// a bf16 convolution's output in bf16 (xBf16, as bnTrainForward): in one pass, the same
// float operations as BN, the addition and the ReLU run as separate kernels.
Napi::Value BnInfer(const Napi::CallbackInfo &info) {
  const Args a(info, "bnInfer");
  const Shape2 sh = readShape(a);
  const int64_t M = sh.M, C = sh.C;
  BnInferArgs p{};
  p.rows = M;
  p.channels = C;
  p.epsilon = a.number("epsilon");
  const Input in = readInput(a, M, C, Layout{C});
  p.x = in.x;
  p.xBf16 = in.xb;
  p.mean = a.f32("mean", C);
  p.variance = a.f32("variance", C);
  p.offset = a.optF32("offset", C);
  p.scale = a.optF32("scale", C);
  p.residual = a.optF32("residual", M * C);
  p.y = a.f32("y", M * C);
  p.relu = a.flag("relu");
  bnLoops(p.xBf16).infer(p);
  return info.Env().Undefined();
}

}  // namespace

void initBatchNorm(Napi::Env env, Napi::Object exports) {
  exportFn<BnTrainForward>(env, exports, "bnTrainForward");
  exportFn<BnTrainBackward>(env, exports, "bnTrainBackward");
  exportFn<BnInfer>(env, exports, "bnInfer");
}

}  // namespace rn
