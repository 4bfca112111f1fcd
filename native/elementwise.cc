// Elementwise and data-movement loops: broadcasting binary ops, the fused residual
// add+ReLU and its gradient, reductions over a block of contiguous axes, the strided
// copies that implement Slice, StridedSlice and Pad, and option A's shortcut.
//
// Shapes arrive already reduced by the JS side to a few dims with explicit element
// strides (0 for a broadcast dim), so one generic loop nest covers every case the model
// produces, and the innermost dim is a contiguous (or scalar) SIMD loop.
#include <algorithm>
#include <cmath>

#include "common.h"

namespace rn {
namespace {

constexpr int kMaxRank = 6;

struct Dims {
  int rank = 0;
  int64_t size[kMaxRank] = {};
};

enum Op { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3, kAddRelu = 4, kReluMask = 5, kMax = 6 };

template <int OP>
inline float apply(float a, float b) {
  if constexpr (OP == kAdd) return a + b;
  if constexpr (OP == kSub) return a - b;
  if constexpr (OP == kMul) return a * b;
  if constexpr (OP == kDiv) return a / b;
  if constexpr (OP == kAddRelu) return std::max(a + b, 0.f);
  if constexpr (OP == kReluMask) return b > 0.f ? a : 0.f;  // a = dy, b = saved relu output
  if constexpr (OP == kMax) return std::max(a, b);
  return 0.f;
}

// out[i] = op(a[i . sa], b[i . sb]) over shape (outer dims flattened by the caller's
// strides; the last dim is the inner loop).
template <int OP>
void binaryLoop(const float *a, const float *b, float *out, const std::vector<int64_t> &shape,
                const std::vector<int64_t> &sa, const std::vector<int64_t> &sb) {
  const int rank = int(shape.size());
  const int64_t inner = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
  int64_t outer = 1;
  for (int d = 0; d < rank - 1; ++d) outer *= shape[d];
  const int nt = outer * inner < kParallelMin ? 1 : omp_get_max_threads();
  // Work items are (outer index, chunk of the inner dim): a same-shape op collapses to a
  // single dim, which must still be split across the threads.
  const int64_t chunk = outer >= 4 * nt ? inner : std::max<int64_t>(4096, (inner + 4 * nt - 1) / (4 * nt));
  const int64_t chunks = (inner + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t w = 0; w < outer * chunks; ++w) {
    const int64_t o = w / chunks, j0 = (w % chunks) * chunk, j1 = std::min(inner, j0 + chunk);
    int64_t rem = o, offA = 0, offB = 0;
    for (int d = rank - 2; d >= 0; --d) {
      const int64_t i = rem % shape[d];
      rem /= shape[d];
      offA += i * sa[d];
      offB += i * sb[d];
    }
    const float *pa = a + offA, *pb = b + offB;
    float *po = out + o * inner;
    if (ia == 1 && ib == 1) {
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) po[j] = apply<OP>(pa[j], pb[j]);
    } else if (ia == 1 && ib == 0) {
      const float vb = pb[0];
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) po[j] = apply<OP>(pa[j], vb);
    } else if (ia == 0 && ib == 1) {
      const float va = pa[0];
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) po[j] = apply<OP>(va, pb[j]);
    } else {
      for (int64_t j = j0; j < j1; ++j) po[j] = apply<OP>(pa[j * ia], pb[j * ib]);
    }
  }
}

// binary({ op, a, b, out, shape, aStrides, bStrides }): op is one of the names below.
Napi::Value Binary(const Napi::CallbackInfo &info) {
  const Args args(info, "binary");
  const std::string name = args.text("op");
  static const char *names[] = {"add", "sub", "mul", "div", "addRelu", "reluMask", "max"};
  int op = -1;
  for (int i = 0; i < 7; ++i) {
    if (name == names[i]) op = i;
  }
  if (op < 0) args.fail("unknown op \"" + name + "\"");
  const auto shape = args.ints("shape"), sa = args.ints("aStrides"), sb = args.ints("bStrides");
  if (shape.empty() || shape.size() != sa.size() || shape.size() != sb.size()) {
    args.fail("shape and stride ranks differ");
  }
  int64_t n = 1, lastA = 0, lastB = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    n *= shape[d];
    lastA += (shape[d] - 1) * sa[d];
    lastB += (shape[d] - 1) * sb[d];
  }
  const float *a = args.f32("a", lastA + 1), *b = args.f32("b", lastB + 1);
  float *out = args.f32("out", n);
  switch (op) {
    case kAdd: binaryLoop<kAdd>(a, b, out, shape, sa, sb); break;
    case kSub: binaryLoop<kSub>(a, b, out, shape, sa, sb); break;
    case kMul: binaryLoop<kMul>(a, b, out, shape, sa, sb); break;
    case kDiv: binaryLoop<kDiv>(a, b, out, shape, sa, sb); break;
    case kAddRelu: binaryLoop<kAddRelu>(a, b, out, shape, sa, sb); break;
    case kReluMask: binaryLoop<kReluMask>(a, b, out, shape, sa, sb); break;
    default: binaryLoop<kMax>(a, b, out, shape, sa, sb); break;
  }
  return info.Env().Undefined();
}

// relu({ x, out, n, alpha }): out = x > 0 ? x : alpha * x  (alpha 0: ReLU)
// step({ x, out, n, alpha }): out = x > 0 ? 1 : alpha      (tfjs Step, ReLU's derivative)
template <bool STEP>
Napi::Value UnaryRelu(const Napi::CallbackInfo &info) {
  const Args args(info, STEP ? "step" : "relu");
  const int64_t n = args.integer("n");
  const float alpha = float(args.number("alpha"));
  const float *x = args.f32("x", n);
  float *out = args.f32("out", n);
  const int nt = n < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (STEP) out[i] = x[i] > 0.f ? 1.f : (std::isnan(x[i]) ? x[i] : alpha);
    else out[i] = x[i] > 0.f ? x[i] : alpha * x[i];
  }
  return info.Env().Undefined();
}

// reduceMiddle({ x, out, outer, reduce, inner, mean }): x viewed as [outer, reduce, inner],
// out[o, i] = sum (or mean) over r. Covers Mean/Sum over contiguous axes, e.g. the global
// average pool (NHWC, axes [1,2]: outer N, reduce H*W, inner C). Sums in double, rows in
// order, so the result does not depend on the thread count.
Napi::Value ReduceMiddle(const Napi::CallbackInfo &info) {
  const Args args(info, "reduceMiddle");
  const int64_t outer = args.integer("outer"), red = args.integer("reduce"), inner = args.integer("inner");
  const bool mean = args.flag("mean");
  const float *x = args.f32("x", outer * red * inner);
  float *out = args.f32("out", outer * inner);
  const int nt = outer * red * inner < kParallelMin || outer < 2 ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> acc(inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const float *xo = x + o * red * inner;
      for (int64_t r = 0; r < red; ++r) {
        const float *xr = xo + r * inner;
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) acc[i] += xr[i];
      }
      const double k = mean ? 1.0 / double(red) : 1.0;
      for (int64_t i = 0; i < inner; ++i) out[o * inner + i] = float(acc[i] * k);
    }
  }
  return info.Env().Undefined();
}

// stridedCopy({ src, srcOffset, srcStrides, dst, dstOffset, dstStrides, shape }):
// dst[dstOffset + i . dstStrides] = src[srcOffset + i . srcStrides] for i over shape.
// Slice and StridedSlice gather into a dense dst; Pad scatters into a pre-filled dst.
Napi::Value StridedCopy(const Napi::CallbackInfo &info) {
  const Args args(info, "stridedCopy");
  const int64_t so = args.integer("srcOffset"), doff = args.integer("dstOffset");
  const auto ss = args.ints("srcStrides"), ds = args.ints("dstStrides"), shape = args.ints("shape");
  const int rank = int(shape.size());
  if (rank == 0 || int(ss.size()) != rank || int(ds.size()) != rank) args.fail("shape and stride ranks differ");
  if (so < 0 || doff < 0) args.fail("offsets must not be negative");
  int64_t n = 1, lastS = so, lastD = doff;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] <= 0) return info.Env().Undefined();
    n *= shape[d];
    lastS += (shape[d] - 1) * ss[d];
    lastD += (shape[d] - 1) * ds[d];
  }
  const float *src = args.f32("src", lastS + 1);
  float *dst = args.f32("dst", lastD + 1);
  const int64_t inner = shape[rank - 1], is = ss[rank - 1], id = ds[rank - 1];
  const int64_t outer = n / inner;
  const int nt = n < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, offS = so, offD = doff;
    for (int d = rank - 2; d >= 0; --d) {
      const int64_t i = rem % shape[d];
      rem /= shape[d];
      offS += i * ss[d];
      offD += i * ds[d];
    }
    const float *ps = src + offS;
    float *pd = dst + offD;
    if (is == 1 && id == 1) {
      std::copy(ps, ps + inner, pd);
    } else {
      for (int64_t j = 0; j < inner; ++j) pd[j * id] = ps[j * is];
    }
  }
  return info.Env().Undefined();
}

// shortcutA({ src, dst, batch, height, width, channels, outChannels, backward }): option A's
// shortcut in one pass instead of reshape + slice + pad (and their gradients). height, width
// and channels are those of the block input x [N, H, W, C]; the output is
// [N, H/2, W/2, outChannels] with x's even pixels in channels [lo, lo + C) and zeros around,
// lo = (outChannels - C) / 2 rounded down. backward: src is dy of that output and dst is
// dx [N, H, W, C]: dy's middle channels at the even pixels, zero at the others. Optional
// layout as the batch-norm kernels' (both tensors in that layout).
Napi::Value ShortcutA(const Napi::CallbackInfo &info) {
  const Args args(info, "shortcutA");
  const int64_t n = args.integer("batch"), h = args.integer("height"), w = args.integer("width"),
                c = args.integer("channels"), co = args.integer("outChannels");
  const bool backward = args.flag("backward");
  if (n < 1 || h < 2 || w < 2 || h % 2 || w % 2 || c < 1 || co < c) {
    args.fail("needs even height and width and outChannels >= channels");
  }
  const int64_t oh = h / 2, ow = w / 2, lo = (co - c) / 2;
  const int64_t small = n * oh * ow * co, large = n * h * w * c;
  const float *src = args.f32("src", backward ? small : large);
  float *dst = args.f32("dst", backward ? large : small);
  const int nt = large < kParallelMin ? 1 : omp_get_max_threads();
  // layout "nChw16c" (both tensors; see Layout in common.h): the body kernel's activations.
  // Plane by plane (one image's block of 16 channels), in halves of 8 channels: the zero
  // padding lo = (outChannels - C) / 2 is a multiple of 8 when both counts are multiples
  // of 16, so each half comes whole from one half of one input block.
  const Layout in = readLayout(args, n * h * w, c, h * w), out = readLayout(args, n * oh * ow, co, oh * ow);
  if (in.blocked || out.blocked) {
    const int64_t ib = c / 16, ob = co / 16, ip = h * w, op = oh * ow;
    const int64_t planes = backward ? n * ib : n * ob;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      for (int64_t half = 0; half < 2; ++half) {
        if (backward) {
          // dx plane (image b, input block k): dy's channels ic + lo at even pixels.
          const int64_t b = plane / ib, oc = (plane % ib) * 16 + half * 8 + lo;
          const float *from = src + ((b * ob + oc / 16) * op) * 16 + oc % 16;
          float *to = dst + plane * ip * 16 + half * 8;
          for (int64_t y = 0; y < h; ++y) {
            for (int64_t x = 0; x < w; ++x) {
              float *d = to + (y * w + x) * 16;
              const float *f = from + ((y / 2) * ow + x / 2) * 16;
              const bool kept = y % 2 == 0 && x % 2 == 0;
              for (int j = 0; j < 8; ++j) d[j] = kept ? f[j] : 0.f;
            }
          }
        } else {
          // y plane (image b, output block k): x's channel ic = oc - lo at even pixels, or 0.
          const int64_t b = plane / ob, ic = (plane % ob) * 16 + half * 8 - lo;
          const bool inside = ic >= 0 && ic < c;
          const float *from = inside ? src + ((b * ib + ic / 16) * ip) * 16 + ic % 16 : nullptr;
          float *to = dst + plane * op * 16 + half * 8;
          for (int64_t y = 0; y < oh; ++y) {
            for (int64_t x = 0; x < ow; ++x) {
              float *d = to + (y * ow + x) * 16;
              if (!inside) {
                for (int j = 0; j < 8; ++j) d[j] = 0.f;
                continue;
              }
              const float *f = from + (2 * y * w + 2 * x) * 16;
              for (int j = 0; j < 8; ++j) d[j] = f[j];
            }
          }
        }
      }
    }
    return info.Env().Undefined();
  }
  // One input row (n, y) of x at a time: even y pairs with output row y / 2, odd y has no
  // output row (zero in dx).
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < n * h; ++r) {
    const int64_t b = r / h, y = r % h;
    float *xRow = backward ? dst + r * w * c : nullptr;
    const float *xIn = backward ? nullptr : src + r * w * c;
    if (y % 2) {
      if (backward) std::fill(xRow, xRow + w * c, 0.f);
      continue;
    }
    const int64_t orow = (b * oh + y / 2) * ow * co;
    for (int64_t x = 0; x < w; ++x) {
      if (backward) {
        float *px = xRow + x * c;
        if (x % 2) std::fill(px, px + c, 0.f);
        else std::copy(src + orow + (x / 2) * co + lo, src + orow + (x / 2) * co + lo + c, px);
      } else if (x % 2 == 0) {
        float *py = dst + orow + (x / 2) * co;
        std::fill(py, py + lo, 0.f);
        std::copy(xIn + x * c, xIn + x * c + c, py + lo);
        std::fill(py + lo + c, py + co, 0.f);
      }
    }
  }
  return info.Env().Undefined();
}

// convertLayout({ src, dst, rows, channels, imageSize, to }): dst = src with its layout
// changed, to "nChw16c" (from NHWC) or to "nhwc" (from nChw16c); see Layout in common.h.
// The body kernel's output and incoming gradient cross to tfjs's NHWC with it.
Napi::Value ConvertLayout(const Napi::CallbackInfo &info) {
  const Args args(info, "convertLayout");
  const int64_t M = args.integer("rows"), C = args.integer("channels"), HW = args.integer("imageSize");
  const bool toBlocked = readBlocked(args, "to", true);
  if (M < 1 || C < 1 || C % 16 != 0 || HW < 1 || M % HW != 0) {
    args.fail("needs channels divisible by 16 and imageSize (H*W) dividing the rows");
  }
  const float *src = args.f32("src", M * C);
  float *dst = args.f32("dst", M * C);
  const Layout nhwc{C, HW, false}, blocked{C, HW, true};
  const Layout &from = toBlocked ? nhwc : blocked, &into = toBlocked ? blocked : nhwc;
  const int nt = M * C < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < M; ++r) {
    const float *s = src + from.row(r);
    float *d = dst + into.row(r);
    for (int64_t b = 0; b < C / 16; ++b) {
      std::copy(s + b * from.block(), s + b * from.block() + 16, d + b * into.block());
    }
  }
  return info.Env().Undefined();
}

// matmul({ a, b, out, batch, M, N, K, aBatch, aM, aK, bBatch, bK, bN }): out[batch, M, N] =
// sum_k a[.., m, k] * b[.., k, n], inputs addressed by element strides (transposes and
// batch broadcasting are strides). Only the small FC layer uses it, so a plain loop with
// the output row kept contiguous is enough; k runs in order (deterministic).
Napi::Value Matmul(const Napi::CallbackInfo &info) {
  const Args args(info, "matmul");
  const int64_t batch = args.integer("batch"), M = args.integer("M"), N = args.integer("N"),
                K = args.integer("K"), aB = args.integer("aBatch"), aM = args.integer("aM"),
                aK = args.integer("aK"), bB = args.integer("bBatch"), bK = args.integer("bK"),
                bN = args.integer("bN");
  if (batch <= 0 || M <= 0 || N <= 0 || K <= 0) return info.Env().Undefined();
  float *out = args.f32("out", batch * M * N);
  const float *a = args.f32("a", (batch - 1) * aB + (M - 1) * aM + (K - 1) * aK + 1);
  const float *b = args.f32("b", (batch - 1) * bB + (K - 1) * bK + (N - 1) * bN + 1);
  const int nt = batch * M * N * K < (int64_t(1) << 22) ? 1 : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t bm = 0; bm < batch * M; ++bm) {
    const int64_t bi = bm / M, m = bm % M;
    float *row = out + bm * N;
    std::fill(row, row + N, 0.f);
    const float *arow = a + bi * aB + m * aM;
    const float *bmat = b + bi * bB;
    for (int64_t k = 0; k < K; ++k) {
      const float av = arow[k * aK];
      const float *brow = bmat + k * bK;
      if (bN == 1) {
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) row[n] += av * brow[n];
      } else {
        for (int64_t n = 0; n < N; ++n) row[n] += av * brow[n * bN];
      }
    }
  }
  return info.Env().Undefined();
}

// fill({ out, value, n })
Napi::Value Fill(const Napi::CallbackInfo &info) {
  const Args args(info, "fill");
  const int64_t n = args.integer("n");
  float *out = args.f32("out", n);
  const float v = float(args.number("value"));
  const int nt = n < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = v;
  return info.Env().Undefined();
}

}  // namespace

void initElementwise(Napi::Env env, Napi::Object exports) {
  exportFn<Binary>(env, exports, "binary");
  exportFn<UnaryRelu<false>>(env, exports, "relu");
  exportFn<UnaryRelu<true>>(env, exports, "step");
  exportFn<ReduceMiddle>(env, exports, "reduceMiddle");
  exportFn<StridedCopy>(env, exports, "stridedCopy");
  exportFn<ShortcutA>(env, exports, "shortcutA");
  exportFn<ConvertLayout>(env, exports, "convertLayout");
  exportFn<Fill>(env, exports, "fill");
  exportFn<Matmul>(env, exports, "matmul");
}

}  // namespace rn
