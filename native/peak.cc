// fmaPeak({ seconds }): the FP32 fused multiply-add peak of this process's OpenMP team,
// measured, not read from a data sheet: `npm run bench` states each engine's GFLOP/s as a
// share of it, on whatever CPU the run is on.
//
// Every thread runs independent chains of vector FMAs on registers (no memory traffic). The
// chains must outnumber FMA latency x FMA ports (4 cycles x 2 ports on Zen 4/5 and recent
// Xeons: 8 in flight); 12 covers that. Widest vectors the CPU has: AVX-512, else AVX2+FMA,
// else plain SSE (picked at run time: the addon is built without -march).
#include <chrono>
#include <cstdint>

#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace rn {
namespace {

constexpr int kChains = 12;

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

// One thread: `iters` rounds of kChains FMAs, FMA(x, a, b) = x * a + b, on vectors of type
// V; returns a value that depends on every chain so the compiler cannot drop the work. A
// macro, not a template: GCC does not inline a generic function into a target("avx512f")
// one, and the vectors must stay in registers of the target's width. The FMA is spelled
// out: the build does not contract a * b + c (-ffp-contract=off, binding.gyp).
#define RN_CHAINS(V, LANES, FMA)                                            \
  V acc[kChains];                                                           \
  for (int c = 0; c < kChains; ++c) acc[c] = V{} + seed * float(c + 1);     \
  const V a = V{} + 0.999999f, b = V{} + 1e-7f;                             \
  for (int64_t i = 0; i < iters; ++i) {                                     \
    _Pragma("GCC unroll 12") for (int c = 0; c < kChains; ++c) acc[c] = FMA(acc[c], a, b); \
  }                                                                         \
  float s = 0;                                                              \
  for (int c = 0; c < kChains; ++c)                                         \
    for (int l = 0; l < LANES; ++l) s += acc[c][l];                         \
  return s;

#define RN_MUL_ADD(x, a, b) ((x) * (a) + (b))
__attribute__((target("avx512f"))) float chains16(int64_t iters, float seed) {
  RN_CHAINS(v16, 16, _mm512_fmadd_ps)
}
__attribute__((target("avx2,fma"))) float chains8(int64_t iters, float seed) { RN_CHAINS(v8, 8, _mm256_fmadd_ps) }
// (No FMA in baseline x86-64: a multiply and an add, counted as the two flops of an FMA.)
float chains4(int64_t iters, float seed) { RN_CHAINS(v4, 4, RN_MUL_ADD) }

struct Isa {
  int lanes;
  float (*run)(int64_t, float);
  const char *name;
};

Isa widest() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {16, chains16, "avx512"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {8, chains8, "avx2"};
  return {4, chains4, "sse"};
}

// Runs `iters` rounds on every thread of the team; seconds of the slowest.
double timed(const Isa &isa, int64_t iters, float &sink) {
  const auto t0 = std::chrono::steady_clock::now();
  float total = 0;
#pragma omp parallel reduction(+ : total)
  total += isa.run(iters, 1e-3f * float(omp_get_thread_num() + 1));
  sink += total;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// fmaPeak({ seconds }) -> { gflops, threads, isa, seconds }
Napi::Value FmaPeak(const Napi::CallbackInfo &info) {
  const Args args(info, "fmaPeak");
  const double target = args.number("seconds");
  if (!(target > 0 && target <= 60)) args.fail("seconds must be in (0, 60]");
  const Isa isa = widest();
  float sink = 0;
  // Slices of a tenth to a fifth of `seconds`, 5 of them, the best kept: the 2-core machine has
  // other tenants, and a slice they interrupted is not the peak.
  int64_t iters = 1 << 12;
  while (timed(isa, iters, sink) < target / 10) iters *= 2;
  double best = 1e30;
  for (int k = 0; k < 5; ++k) best = std::min(best, timed(isa, iters, sink));
  const int threads = omp_get_max_threads();
  const double flops = 2.0 * isa.lanes * kChains * double(iters) * threads;
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("gflops", flops / best * 1e-9);
  out.Set("threads", threads);
  out.Set("isa", isa.name);
  out.Set("seconds", best);
  out.Set("sink", sink);  // keeps the work observable
  return out;
}

}  // namespace

void initPeak(Napi::Env env, Napi::Object exports) { exportFn<FmaPeak>(env, exports, "fmaPeak"); }

}  // namespace rn
