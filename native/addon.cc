// Module entry of the oneDNN engine: process-wide oneDNN state, threading and version
// queries; the kernels themselves live in conv.cc, batchnorm.cc (its loops in
// batchnorm-loops.cc, compiled twice: avx512Loops below), elementwise.cc, sgd.cc,
// the MPI collectives of data-parallel training in mpi.cc, and the
// FMA peak measurement of the bench in peak.cc.
#include <atomic>
#include <cstdlib>
#include <memory>

#include "common.h"

namespace rn {

dnnl::engine &cpuEngine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream &cpuStream() {
  static dnnl::stream s(cpuEngine());
  return s;
}

dnnl::memory scratchpad(const dnnl::memory::desc &md) {
  // Grows to the largest request and stays: the set of primitives is fixed after the first
  // training step, so this allocates a handful of times per process, not per step.
  struct Buffer {
    void *ptr = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(ptr); }
  };
  static Buffer buf;
  const size_t need = md.get_size();
  if (need > buf.size) {
    std::free(buf.ptr);
    const size_t size = (need + 4095) / 4096 * 4096;
    buf.ptr = std::aligned_alloc(64, size);
    if (!buf.ptr) throw std::runtime_error("resnet_native: out of memory for the scratchpad");
    buf.size = size;
  }
  return dnnl::memory(md, cpuEngine(), buf.ptr);
}

namespace {

// Which batch-norm calls run the AVX-512 copy of the loops (avx512Loops).
struct LoopsRule {
  bool f32, bf16;
};

LoopsRule loopsRule() {
  static const LoopsRule rule = []() -> LoopsRule {
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const char *env = std::getenv("RESNET_EXP_LOOPS");
    const std::string choice = env ? env : "";
    if (choice == "avx512") return {cpu, cpu};
    if (choice == "generic") return {false, false};
    if (choice == "avx512-bf16") return {false, cpu};
    if (!choice.empty()) {
      throw std::runtime_error("resnet_native: RESNET_EXP_LOOPS must be avx512, generic or avx512-bf16, not \"" +
                               choice + "\" (unset it for the default)");
    }
    // The default, on CPUs with AVX-512 whose oneDNN may use it (ONEDNN_MAX_CPU_ISA below
    // AVX512_CORE caps our loops too): the AVX-512 copy, except for f32 calls on AMD CPUs.
    // - bf16 calls (--precision bf16) everywhere: in the baseline copy they are bound by
    //   its 4-float SSE instructions (widening bf16, the mask, the conversions), not by
    //   memory: on the AMX Xeon its bf16 backward at 131072 x 16 moves a third of the f32
    //   one's bytes and takes 0.8-0.9 of its time (1.79 vs 2.26 and 1.23 vs 1.38 ms in two
    //   runs of bench/loops.ts, 4 and 8 pairs). The AVX-512 copy takes 0.47-0.73 of the
    //   baseline's time in bf16 at the three stage shapes, 0.71-1.04 in f32. Every CPU with bf16
    //   convolutions has AVX-512 (AVX512-BF16 or AMX); on a Zen 5 EPYC the AVX-512 copy
    //   takes 0.52-0.70 of the baseline's time in bf16 (bench/loops.ts, 8 pairs).
    // - f32 calls not on AMD's: on a Zen 5 EPYC an earlier version of these loops, compiled
    //   for AVX-512, ran batch norm's f32 backward slower (18.5 vs 14.2 ms a ResNet-20 step;
    //   forward 9.5 vs 10.4); the current ones still take 0.89-1.24 of the baseline's time
    //   there in f32 (the same bench/loops.ts run, 2026-12-03).
    const auto bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
    const bool allowed = cpu && (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & bits) == bits;
    return {allowed && !__builtin_cpu_is("amd"), allowed};
#else
    return {false, false};
#endif
  }();
  return rule;
}

std::atomic<uint64_t> loopsCalls[2];

}  // namespace

bool avx512Loops(bool bf16) {
  const LoopsRule r = loopsRule();
  return bf16 ? r.bf16 : r.f32;
}

void countLoopsCall(bool avx512) { loopsCalls[avx512].fetch_add(1, std::memory_order_relaxed); }

namespace {

const char *isaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    default: return "unknown";
  }
}

// setThreads({threads}): the OpenMP team size for oneDNN and our own loops (one runtime: oneDNN is
// built against the same GNU OpenMP).
Napi::Value SetThreads(const Napi::CallbackInfo &info) {
  const Args a(info, "setThreads");
  const int64_t n = a.integer("threads");
  if (n < 1 || n > 1024) a.fail("threads must be in 1..1024");
  omp_set_num_threads(int(n));
  return info.Env().Undefined();
}

Napi::Value GetThreads(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

Napi::Value NumProcs(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), omp_get_num_procs());
}

// version(): e.g. "oneDNN 2.6.3 (ISA avx512_core_amx), batch-norm loops avx512": oneDNN's ISA and
// which copy of our batch-norm loops runs (avx512Loops): avx512, generic, or
// "generic (avx512 for bf16)".
Napi::Value Version(const Napi::CallbackInfo &info) {
  const dnnl_version_t *v = dnnl_version();
  const LoopsRule r = loopsRule();
  const char *loops = r.f32 ? "avx512" : r.bf16 ? "generic (avx512 for bf16)" : "generic";
  std::string s = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                  std::to_string(v->patch) + " (ISA " + isaName(dnnl::get_effective_cpu_isa()) +
                  "), batch-norm loops " + loops;
  return Napi::String::New(info.Env(), s);
}

// bnLoopsCalls(): {generic, avx512}, the batch-norm calls of this process so far by copy of
// the loops that ran them (bench/profile.ts prints them for a step).
Napi::Value BnLoopsCalls(const Napi::CallbackInfo &info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("generic", Napi::Number::New(info.Env(), double(loopsCalls[0].load())));
  o.Set("avx512", Napi::Number::New(info.Env(), double(loopsCalls[1].load())));
  return o;
}

// alignedFloat32({length}): a Float32Array of `length` floats (contents arbitrary) whose
// storage starts on a 64-byte boundary, for the backend's storage pool. V8's own large
// ArrayBuffers start 16 bytes into a page (malloc's header), so every AVX-512 load of a row of
// 16 channels would straddle two cache lines. oneDNN asks for 64-byte alignment; measured on an
// AMD EPYC (Zen 5), the three passes of a stage-1 conv took 6.14 vs 6.32 ms aligned vs 16 bytes
// off (mean of 5 alternating runs), a gain a whole step's timing here is too noisy to resolve.
Napi::Value AlignedFloat32(const Napi::CallbackInfo &info) {
  const Args a(info, "alignedFloat32");
  const int64_t n = a.integer("length");
  if (n <= 0) a.fail("length must be positive");
  const size_t bytes = (size_t(n) * sizeof(float) + 63) / 64 * 64;
  void *data = std::aligned_alloc(64, bytes);
  if (!data) throw std::runtime_error("resnet_native: out of memory for a " + std::to_string(bytes) + "-byte tensor");
  Napi::Env env = info.Env();
  // V8 counts this memory towards its GC heuristics, as it would its own backing store.
  Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(bytes));
  auto buffer = Napi::ArrayBuffer::New(
      env, data, bytes, [bytes](Napi::Env e, void *p) {
        std::free(p);
        Napi::MemoryManagement::AdjustExternalMemory(e, -int64_t(bytes));
      });
  return Napi::Float32Array::New(env, size_t(n), buffer, 0);
}

}  // namespace
}  // namespace rn

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  rn::exportFn<rn::SetThreads>(env, exports, "setThreads");
  rn::exportFn<rn::GetThreads>(env, exports, "getThreads");
  rn::exportFn<rn::NumProcs>(env, exports, "numProcs");
  rn::exportFn<rn::Version>(env, exports, "version");
  rn::exportFn<rn::BnLoopsCalls>(env, exports, "bnLoopsCalls");
  rn::exportFn<rn::AlignedFloat32>(env, exports, "alignedFloat32");
  rn::initConv(env, exports);
  rn::initBatchNorm(env, exports);
  rn::initElementwise(env, exports);
  rn::initHead(env, exports);
  rn::initSgd(env, exports);
  rn::initMpi(env, exports);
  rn::initPeak(env, exports);
  return exports;
}

NODE_API_MODULE(resnet_native, Init)
