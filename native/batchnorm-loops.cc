// The loops of batch normalization over the rows of an NHWC (or nChw16c: Layout in
// common.h) tensor viewed as [M = N*H*W, C], with the ReLU that follows it fused in
// (forward: clamp; backward: mask by the saved output), and at the end of a residual block
// the shortcut's addition too. The functions and their arguments are in batchnorm.cc
// (the N-API side) and batchnorm-loops.h.
//
// Hand-written OpenMP loops rather than oneDNN's batch_normalization: with channels
// innermost each row is one or a few SIMD vectors, so every pass is a plain streaming
// loop, and we control the reduction order. Each thread reduces a fixed contiguous range
// of rows into its own partial sums (float within short blocks, double across blocks),
// and the partials are added in thread order, so results are bit-identical run to run for
// a given thread count.
//
// This file is compiled twice: as itself, for any x86-64 CPU (SSE2), in namespace
// rn::generic, and by batchnorm-loops-avx512.cc, for AVX-512, in rn::avx512. The SIMD loops
// are vectorized across channels, never across the rows of a sum, and the build never
// contracts a * b + c into one rounding (-ffp-contract=off in binding.gyp), so the two
// copies compute the same bits (test/native-kernels.test.ts compares them). Include
// headers in batchnorm-loops.h only (see there).
#include "batchnorm-loops.h"

#ifndef RN_LOOPS_ISA
#define RN_LOOPS_ISA generic
#endif

namespace rn {
namespace RN_LOOPS_ISA {
namespace {

constexpr int64_t kBlock = 64;  // rows summed in float before folding into double
// Rows per step of the elementwise passes that also write a bf16 copy: the f32 results of
// a step are converted while they are still in L1 (one call of the vector converter).
constexpr int64_t kCopyRows = 64;

// This thread's buffer of at least n floats, kept across calls (the OpenMP threads persist).
float *stepBuffer(int64_t n) {
  static thread_local std::vector<float> buffer;
  if (int64_t(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// x[i], or with X16 the bf16 value xb[i] widened to f32 (exact): the convolution's output
// z written in bf16 by a bf16 convolution (--precision bf16), read by both passes of the
// forward and both of the backward. 2 bytes instead of 4 per read (see BnTrainForward).
template <bool X16>
inline float loadX(const float *x, const uint16_t *xb, int64_t i) {
  if constexpr (X16) {
    const uint32_t u = uint32_t(xb[i]) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  } else {
    return x[i];
  }
}

// Calls f(BLOCKED, X16) for the three input forms: nhwc f32, nChw16c f32, nhwc bf16 (bf16
// arrays are nhwc only, so the fourth is never instantiated).
template <typename F>
void withInput(bool blocked, bool x16, F &&f) {
  if (x16) return f(std::false_type{}, std::true_type{});
  if (blocked) return f(std::true_type{}, std::false_type{});
  f(std::false_type{}, std::false_type{});
}

int teamSize(int64_t elements) { return elements < kParallelMin ? 1 : omp_get_max_threads(); }

// The channel count as a compile-time constant when it is one of the CIFAR nets' widths
// (16, 32, 64), else 0 and read at run time. With a constant width the per-row loops
// unroll fully (the statistics pass alone: 1.7x faster at 131072 x 16 in a standalone
// test on an AMD EPYC Zen 5), and the running sums can stay in registers (forSumChunks).
template <int64_t W>
struct Width {
  int64_t runtime;
  int64_t operator()() const { return W > 0 ? W : runtime; }
  operator int64_t() const { return (*this)(); }
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

// The loops over an [M, C] tensor in either layout go by runs: f(o, c0, n, rows, stride)
// handles `rows` consecutive rows whose channels [c0, c0 + n) sit at o + i * stride for the
// run's i-th row: in NHWC all channels of a range of rows; in nChw16c 16 channels of rows
// of one image, contiguous in memory. (c0, n and stride are compile-time constants where
// they can be, so the loops unroll; see forSumChunks for the sums.)
//
// The elementwise passes: every row, spread over the team in steps of kCopyRows rows; in
// nChw16c the steps follow memory order, plane by plane, so each array is one stream (a
// first version that visited each row's channel blocks in turn made batch norm ~30 %
// slower at 16x16x32). step(r0, r1) runs after each NHWC step (the bf16 copies).
template <bool BLOCKED, typename Wd, typename F, typename Step>
void forAllRuns(const Layout &l, int64_t M, Wd width, int nt, F &&f, Step &&step) {
  const int64_t steps = (M + kCopyRows - 1) / kCopyRows;
  if constexpr (!BLOCKED) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t r0 = s * kCopyRows, r1 = std::min(M, r0 + kCopyRows);
      f(r0 * width(), std::integral_constant<int64_t, 0>{}, width, r1 - r0, width);
      step(r0, r1);
    }
  } else {
    // Memory position q (in rows of 16 floats) of plane p = q / HW: image p / (C / 16),
    // channel block p % (C / 16).
    const int64_t blocks = width() / 16, total = M * blocks;
    const int64_t memSteps = (total + kCopyRows - 1) / kCopyRows;
    constexpr std::integral_constant<int64_t, 16> sixteen;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t s = 0; s < memSteps; ++s) {
      const int64_t q1 = std::min(total, (s + 1) * kCopyRows);
      for (int64_t q = s * kCopyRows; q < q1;) {
        const int64_t p = q / l.HW, end = std::min(q1, (p + 1) * l.HW);
        f(q * 16, (p % blocks) * 16, sixteen, end - q, sixteen);
        q = end;
      }
    }
  }
}

// sums[t*2C + c] += f(row, c) and sums[t*2C + C + c] += g(row, c) over thread t's rows,
// in float over blocks of kBlock rows (counted from the thread's first row), in double
// across blocks. runFn(o, c0, n, rows, stride, f1, f2) adds one run of rows (as above)
// into the float sums f1[c0, c0 + n), f2[c0, c0 + n). In nChw16c the runs follow memory
// order, plane by plane; a block that spans two images is finished in the next image's
// plane, so every channel still sums the same rows in the same order as in NHWC.
template <bool BLOCKED, typename Wd, typename RunFn>
void reduceRows(const Layout &l, int64_t M, Wd width, std::vector<double> &partials, int nt, RunFn runFn) {
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
    // Zeroes channels [c0, c0 + n) of the float sums, or folds them into the double ones.
    auto zero = [&](int64_t c0, int64_t n) {
      for (int64_t c = c0; c < c0 + n; ++c) f1[c] = f2[c] = 0.f;
    };
    auto fold = [&](int64_t c0, int64_t n) {
      for (int64_t c = c0; c < c0 + n; ++c) {
        s1[c] += f1[c];
        s2[c] += f2[c];
      }
    };
    if constexpr (!BLOCKED) {
      for (int64_t b = begin; b < end; b += kBlock) {
        zero(0, C);
        const int64_t e = std::min(end, b + kBlock);
        runFn(b * C, std::integral_constant<int64_t, 0>{}, width, e - b, width, f1, f2);
        fold(0, C);
      }
    } else {
      constexpr std::integral_constant<int64_t, 16> sixteen;
      for (int64_t img = begin / l.HW; img * l.HW < end; ++img) {
        const int64_t r0 = std::max(begin, img * l.HW), r1 = std::min(end, (img + 1) * l.HW);
        for (int64_t cb = 0; cb < C / 16; ++cb) {
          for (int64_t r = r0; r < r1;) {
            const int64_t blockEnd = std::min(end, begin + ((r - begin) / kBlock + 1) * kBlock);
            const int64_t e = std::min(r1, blockEnd);
            if ((r - begin) % kBlock == 0) zero(cb * 16, 16);
            runFn((img * C + cb * 16) * l.HW + (r - img * l.HW) * 16, cb * 16, sixteen, e - r, sixteen, f1, f2);
            if (e == blockEnd) fold(cb * 16, 16);
            r = e;
          }
        }
      }
    }
  }
}

// A run's float sums go through f(k, m, s1, s2), Chunk channels [k, k + m) at a time,
// where s1 and s2 are local copies of those channels' sums, written back after: their
// addresses never escape, so the compiler keeps them in registers across the run's rows
// instead of storing and reloading them every row (the caller's arrays might alias the
// data, as far as it can tell). Each channel's additions are the same, in the same order.
// The forward's statistics take kSumChunk channels at a time, the sums that fit in the
// vector registers (two sums of 4 vectors: 16 channels in the baseline copy, 64 in the
// AVX-512 one); it loops over a block's rows once per chunk, in L1. Forward at 131072 x 16,
// 32768 x 32, 8192 x 64 (median of 8 alternating processes, AMX Xeon): baseline copy
// 1.18, 0.54, 0.25 -> 0.87, 0.47, 0.20 ms, AVX-512 copy 0.98, 0.45, 0.17 -> 0.86, 0.40,
// 0.13. The backward's first pass keeps whole runs (Chunk = a run's width): its rows read
// three or four arrays each, and in 16-channel chunks the baseline copy was slower at 64
// channels (0.49 vs 0.45 ms) and no faster elsewhere. A width known only at run time keeps
// the caller's arrays.
#ifndef RN_LOOPS_VECTOR_FLOATS
#define RN_LOOPS_VECTOR_FLOATS 4
#endif
constexpr int64_t kSumChunk = 4 * RN_LOOPS_VECTOR_FLOATS;
constexpr int64_t kWholeRun = 1 << 30;

// A run's width when the compiler knows it (Width<W> in NHWC, 16 in nChw16c), else 0.
template <typename N>
constexpr int64_t kConstWidth = 0;
template <int64_t W>
constexpr int64_t kConstWidth<Width<W>> = W;
template <int64_t W>
constexpr int64_t kConstWidth<std::integral_constant<int64_t, W>> = W;

template <int64_t Chunk, typename N, typename F>
inline void forSumChunks(N n, float *s1, float *s2, F &&f) {
  constexpr int64_t W = kConstWidth<std::remove_cv_t<std::remove_reference_t<N>>>;
  if constexpr (W == 0) {
    f(0, int64_t(n), s1, s2);
  } else {
    constexpr int64_t K = std::min(W, Chunk);
    static_assert(W % K == 0);
    for (int64_t k = 0; k < W; k += K) {
      float l1[K], l2[K];
      for (int64_t c = 0; c < K; ++c) l1[c] = s1[k + c], l2[c] = s2[k + c];
      f(k, std::integral_constant<int64_t, K>{}, l1, l2);
      for (int64_t c = 0; c < K; ++c) s1[k + c] = l1[c], s2[k + c] = l2[c];
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

// A withFlag / withInput flag as a constant. (remove_reference_t: GCC types a flag named
// inside a nested lambda, with the enclosing lambda's capture, as a reference.)
template <typename T>
constexpr bool on = std::remove_reference_t<T>::value;

// y = x * scale[c] + shift[c] (+ res, the residual block's shortcut), optionally clamped at
// 0; with BF16 also yb = bf16(y), the next convolution's input (see toBf16).
template <bool RELU, bool RES, bool BF16, bool BLOCKED, bool X16, typename Wd>
void affineT(const float *x, const uint16_t *xb, const float *scale, const float *shift, const float *res,
             float *y, uint16_t *yb, int64_t M, Wd width, const Layout &l, int nt) {
  const int64_t C = width();
  // Without y (BF16 only, so NHWC): each step's f32 results go to a per-thread buffer, as in
  // the backward's dx.
  forAllRuns<BLOCKED>(
      l, M, width, nt,
      [&](int64_t o, auto c0, auto n, int64_t rows, auto stride) {
        const float *k = scale + c0, *b = shift + c0;
        float *buffer = y ? nullptr : stepBuffer(kCopyRows * C);
        for (int64_t i = 0; i < rows; ++i) {
          const float *xr = X16 ? nullptr : x + o + i * stride;
          const uint16_t *xbr = X16 ? xb + o + i * stride : nullptr;
          const float *rr = RES ? res + o + i * stride : nullptr;
          float *yr = y ? y + o + i * stride : buffer + i * stride;
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) {
            float v = loadX<X16>(xr, xbr, c) * k[c] + b[c];
            if constexpr (RES) v += rr[c];
            yr[c] = RELU ? std::max(v, 0.f) : v;
          }
        }
      },
      // (bf16 copies are NHWC only: readBf16Out refuses them with nChw16c.)
      [&](int64_t r0, int64_t r1) {
        if constexpr (BF16 && !BLOCKED) {
          toBf16(y ? y + r0 * C : stepBuffer(kCopyRows * C), yb + r0 * C, (r1 - r0) * C);
        }
      });
}

// x (f32) or xb (bf16, nhwc) is the input.
void affine(const float *x, const uint16_t *xb, const float *scale, const float *shift, const float *res,
            float *y, uint16_t *yb, int64_t M, int64_t C, const Layout &l, bool relu, int nt) {
  withWidth(C, [&](auto w) {
    withFlag(relu, [&](auto R) {
      withFlag(res != nullptr, [&](auto S) {
        withFlag(yb != nullptr, [&](auto B) {
          withInput(l.blocked, xb != nullptr, [&](auto L, auto X) {
            // (yBf16 is written in nhwc only: batchnorm.cc refuses it with nChw16c.)
            if constexpr (!(on<decltype(B)> && on<decltype(L)>)) {
              affineT<on<decltype(R)>, on<decltype(S)>, on<decltype(B)>, on<decltype(L)>, on<decltype(X)>>(
                  x, xb, scale, shift, res, y, yb, M, w, l, nt);
            }
          });
        });
      });
    });
  });
}

// The forward: the batch's statistics in one pass, then y in a second.
void trainForward(const BnForwardArgs &p) {
  const int64_t M = p.rows, C = p.channels;
  const Layout &l = p.layout;
  const float *x = p.x;
  const uint16_t *xb = p.xBf16;
  // Sums of (x - x[0]) rather than of x: shifting by a sample keeps the one-pass variance
  // E[d^2] - E[d]^2 free of cancellation when |mean| >> std.
  std::vector<float> shift(C);
  for (int64_t c = 0; c < C; ++c) shift[c] = xb ? loadX<true>(nullptr, xb, l.at(0, c)) : x[l.at(0, c)];
  const int nt = teamSize(M * C);
  std::vector<double> partials, s1, s2;
  withWidth(C, [&](auto w) {
    withInput(l.blocked, xb != nullptr, [&](auto L, auto X) {
      constexpr bool X16 = decltype(X)::value;
      reduceRows<decltype(L)::value>(
          l, M, w, partials, nt,
          [&](int64_t o, auto c0, auto n, int64_t rows, auto stride, float *f1, float *f2) {
            forSumChunks<kSumChunk>(n, f1 + c0, f2 + c0, [&](int64_t k, auto m, float *__restrict g1, float *__restrict g2) {
              const float *__restrict sh = shift.data() + c0 + k;
              for (int64_t i = 0; i < rows; ++i) {
                const int64_t at = o + i * stride + k;
                const float *__restrict xr = X16 ? nullptr : x + at;
                const uint16_t *__restrict xbr = X16 ? xb + at : nullptr;
#pragma omp simd
                for (int64_t c = 0; c < m; ++c) {
                  const float d = loadX<X16>(xr, xbr, c) - sh[c];
                  g1[c] += d;
                  g2[c] += d * d;
                }
              }
            });
          });
    });
  });
  combine(partials, nt, C, s1, s2);

  std::vector<float> scale(C), bias(C);
  for (int64_t c = 0; c < C; ++c) {
    const double m1 = s1[c] / M;
    const double v = std::max(s2[c] / M - m1 * m1, 0.0);
    const double mu = shift[c] + m1;
    const double k = p.gamma[c] / std::sqrt(v + p.epsilon);
    p.mean[c] = float(mu);
    p.variance[c] = float(v);
    scale[c] = float(k);
    bias[c] = float(p.beta[c] - mu * k);
  }
  affine(x, xb, scale.data(), bias.data(), p.residual, p.y, p.yBf16, M, C, l, p.relu, nt);
}

// The two passes of the backward, templated on the ReLU so the inner loops are
// branch-free: g = dy * mask with mask = (y > 0) as 0/1. EMIT: also store g in gOut (the
// gradient of a residual input), inside the first pass's SIMD loop (a separate loop made
// the call 8x slower: 8.1 vs 1.0 ms at 131072 x 16 on an AMD EPYC); the second pass then
// reads g instead of dy, dyAdd and y, and gOut may be dy or dyAdd itself, overwritten in
// place (no read for ownership of a fresh array): a block's last unit in stage 1 moves 64
// instead of 88 MB.
// BF16: also store dx in bf16 in dxb (the incoming gradient of the convolution before).
// ADD: the incoming gradient is dy + dyAdd, summed as it is read (a residual block's input
// feeds its conv and its shortcut: the two gradients meet here instead of in a separate
// add over the whole tensor).
// D16: dy is read from dyb, in bf16 (a bf16 convolution's backward data writes its output
// so, as under PyTorch's autocast); widened to f32 exactly (loadX), everything else as
// before. 2 bytes instead of 4 per read, in both passes.
// y > 0 of the forward's output, from y or, when Y16, from its bf16 copy: a positive
// finite bf16 value is 0x0001..0x7f80 as a signed 16-bit integer (NaN and -0 fail as in
// f32). The two masks agree except where y is a positive f32 denormal, which the
// conversion (toBf16) rounds or flushes to 0.
template <bool Y16>
inline bool positive(const float *y, const uint16_t *yb, int64_t i) {
  if constexpr (Y16) {
    const int16_t v = int16_t(yb[i]);
    return v > 0 && v <= 0x7f80;
  } else {
    return y[i] > 0.f;
  }
}

// g at i: dy (+ dyAdd), masked by the forward's y > 0 with RELU; the same float operations
// in both passes.
template <bool RELU, bool ADD, bool Y16, bool D16>
inline float maskedGradient(const float *dy, const uint16_t *dyb, const float *dyAdd, const float *y,
                            const uint16_t *yb, int64_t i) {
  float g = loadX<D16>(dy, dyb, i);
  if constexpr (ADD) g += dyAdd[i];
  if constexpr (RELU) g = positive<Y16>(y, yb, i) ? g : 0.f;
  return g;
}

template <bool RELU, bool EMIT, bool BF16, bool BLOCKED, bool ADD, bool Y16, bool X16, bool D16, typename Wd>
void bnBackwardPasses(const float *dy, const uint16_t *dyb, const float *dyAdd, const float *x, const uint16_t *xb,
                      const float *y, const uint16_t *yb,
                      const float *mean, int64_t M, Wd width, const Layout &l, int nt,
                      std::vector<double> &partials, std::vector<double> &sg, std::vector<double> &sgx,
                      const std::function<void(std::vector<float> &, std::vector<float> &,
                                               std::vector<float> &)> &fold,
                      float *dx, float *gOut, uint16_t *dxb) {
  const int64_t C = width();
  reduceRows<BLOCKED>(
      l, M, width, partials, nt,
      [&](int64_t o, auto c0, auto n, int64_t rows, auto stride, float *f1, float *f2) {
        forSumChunks<kWholeRun>(n, f1 + c0, f2 + c0, [&](int64_t k, auto m, float *__restrict g1, float *__restrict g2) {
          const float *__restrict mu = mean + c0 + k;
          for (int64_t i = 0; i < rows; ++i) {
            const int64_t at = o + i * stride + k;
            // (gOut may be dy or dyAdd itself: each element is read, then written, by its own
            // iteration only, so they are not __restrict.)
            const float *dyr = D16 ? nullptr : dy + at, *__restrict xr = X16 ? nullptr : x + at;
            const uint16_t *__restrict dybr = D16 ? dyb + at : nullptr;
            const uint16_t *__restrict xbr = X16 ? xb + at : nullptr;
            const float *__restrict yr = RELU && !Y16 ? y + at : nullptr;
            const uint16_t *__restrict ybr = RELU && Y16 ? yb + at : nullptr;
            const float *ar = ADD ? dyAdd + at : nullptr;
            float *gr = EMIT ? gOut + at : nullptr;
#pragma omp simd
            for (int64_t c = 0; c < m; ++c) {
              const float g = maskedGradient<RELU, ADD, Y16, D16>(dyr, dybr, ar, yr, ybr, c);
              if constexpr (EMIT) gr[c] = g;
              g1[c] += g;
              g2[c] += g * (loadX<X16>(xr, xbr, c) - mu[c]);
            }
          }
        });
      });
  combine(partials, nt, C, sg, sgx);
  std::vector<float> k(C), b(C), d(C);
  fold(k, b, d);
  const float *kp = k.data(), *bp = b.data(), *dp = d.data();
  // Without dx (BF16 only, so NHWC: one call of f per step, at o = r0 * C) each step's f32
  // results go to a per-thread buffer of one step, converted from there.
  forAllRuns<BLOCKED>(
      l, M, width, nt,
      [&](int64_t o, auto c0, auto n, int64_t rows, auto stride) {
        const float *kc = kp + c0, *bc = bp + c0, *dc = dp + c0;
        float *buffer = dx ? nullptr : stepBuffer(kCopyRows * C);
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t at = o + i * stride;
          const float *dyr = D16 ? nullptr : dy + at, *xr = X16 ? nullptr : x + at;
          const uint16_t *dybr = D16 ? dyb + at : nullptr, *xbr = X16 ? xb + at : nullptr;
          const float *yr = RELU && !Y16 ? y + at : nullptr;
          const uint16_t *ybr = RELU && Y16 ? yb + at : nullptr;
          const float *ar = ADD ? dyAdd + at : nullptr;
          const float *gr = EMIT ? gOut + at : nullptr;
          float *dxr = dx ? dx + at : buffer + (at - o);
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) {
            // With EMIT, the first pass's g.
            const float g = EMIT ? gr[c] : maskedGradient<RELU, ADD, Y16, D16>(dyr, dybr, ar, yr, ybr, c);
            dxr[c] = kc[c] * g + bc[c] * loadX<X16>(xr, xbr, c) + dc[c];
          }
        }
      },
      [&](int64_t r0, int64_t r1) {
        if constexpr (BF16 && !BLOCKED) {
          toBf16(dx ? dx + r0 * C : stepBuffer(kCopyRows * C), dxb + r0 * C, (r1 - r0) * C);
        }
      });
}

// The backward's two passes, with g = relu ? dy * (y > 0) : dy and
// xhat = (x - mean) / sqrt(var + eps):
//   dbeta = sum g, dgamma = sum g * xhat,
//   dx = gamma / sqrt(var + eps) * (g - dbeta / M - xhat * dgamma / M).
void trainBackward(const BnBackwardArgs &p) {
  const int64_t M = p.rows, C = p.channels;
  const bool y16 = p.relu && !p.y;
  const int nt = teamSize(M * C);
  std::vector<double> partials, sg, sgx;
  // dx = k*g + b*x + d per channel, folded once from the reductions.
  auto fold = [&](std::vector<float> &k, std::vector<float> &b, std::vector<float> &d) {
    for (int64_t c = 0; c < C; ++c) {
      const double inv = 1.0 / std::sqrt(double(p.variance[c]) + p.epsilon);
      const double kc = p.gamma[c] * inv;
      const double bc = -kc * inv * inv * sgx[c] / M;
      p.dbeta[c] = float(sg[c]);
      p.dgamma[c] = float(sgx[c] * inv);
      k[c] = float(kc);
      b[c] = float(bc);
      d[c] = float(-kc * sg[c] / M - bc * p.mean[c]);
    }
  };
  withWidth(C, [&](auto w) {
    withFlag(p.relu, [&](auto R) {
      withFlag(p.g != nullptr, [&](auto E) {
        withFlag(p.dxBf16 != nullptr, [&](auto B) {
          withInput(p.layout.blocked, p.xBf16 != nullptr, [&](auto L, auto X) {
            withFlag(p.dyAdd != nullptr, [&](auto A) {
              withFlag(y16, [&](auto Y) {
                withFlag(p.dyBf16 != nullptr, [&](auto D) {
                  constexpr bool relu = on<decltype(R)>, dxb = on<decltype(B)>, blocked = on<decltype(L)>,
                                 ym16 = on<decltype(Y)>, dyb = on<decltype(D)>;
                  // Only what batchnorm.cc lets through is compiled: bf16 arrays are nhwc
                  // only, yBf16 comes with relu, dyBf16 with dxBf16. (The other third of the
                  // instances was never called, and compiling it took 40 % of this file's
                  // build: 178 -> 104 s a copy.)
                  if constexpr (!(blocked && (dxb || ym16 || dyb)) && !(ym16 && !relu) && !(dyb && !dxb)) {
                    bnBackwardPasses<relu, on<decltype(E)>, dxb, blocked, on<decltype(A)>, ym16, on<decltype(X)>,
                                     dyb>(p.dy, p.dyBf16, p.dyAdd, p.x, p.xBf16, p.y, p.yBf16, p.mean, M, w,
                                          p.layout, nt, partials, sg, sgx, fold, p.dx, p.g, p.dxBf16);
                  }
                });
              });
            });
          });
        });
      });
    });
  });
}

// Inference: one affine pass with the given statistics.
void infer(const BnInferArgs &p) {
  const int64_t C = p.channels;
  std::vector<float> k(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    const double kc = (p.scale ? p.scale[c] : 1.0) / std::sqrt(double(p.variance[c]) + p.epsilon);
    k[c] = float(kc);
    b[c] = float((p.offset ? p.offset[c] : 0.0) - p.mean[c] * kc);
  }
  affine(p.x, p.xBf16, k.data(), b.data(), p.residual, p.y, nullptr, p.rows, C, Layout{C}, p.relu,
         teamSize(p.rows * C));
}

}  // namespace

extern const BnLoops kBnLoops = {trainForward, trainBackward, infer};

}  // namespace RN_LOOPS_ISA
}  // namespace rn
