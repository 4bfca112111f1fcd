// Shared helpers for the oneDNN engine: argument unpacking, the oneDNN engine/stream
// singletons and the thread partitioning used by the hand-written loops.
#pragma once

#include <napi.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

namespace rn {

// One CPU engine and one in-order stream for the whole process: primitives are created
// against it once and reused, and every call is synchronous (we wait on the stream), so
// JS never sees a buffer that is still being written.
dnnl::engine &cpuEngine();
dnnl::stream &cpuStream();

// A user-mode scratchpad shared by every primitive: primitives run one at a time on the
// JS thread, so one growing buffer avoids a malloc/free per primitive execution.
dnnl::memory scratchpad(const dnnl::memory::desc &md);

// The Float32Array's own storage (no copy): tfjs's cpu storage is typed arrays, and the
// native kernels read and write them in place.
inline float *f32(const Napi::Value &v, const char *what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw std::runtime_error(std::string("resnet_native: ") + what + " must be a Float32Array");
  }
  auto a = v.As<Napi::Float32Array>();
  return a.Data();
}

inline size_t f32len(const Napi::Value &v) { return v.As<Napi::Float32Array>().ElementLength(); }

inline int64_t intArg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw std::runtime_error(std::string("resnet_native: argument ") + what + " must be a number");
  }
  return info[i].As<Napi::Number>().Int64Value();
}

inline double numArg(const Napi::CallbackInfo &info, size_t i, const char *what) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw std::runtime_error(std::string("resnet_native: argument ") + what + " must be a number");
  }
  return info[i].As<Napi::Number>().DoubleValue();
}

inline void requireLen(const Napi::Value &v, size_t n, const char *what) {
  if (f32len(v) < n) {
    throw std::runtime_error(std::string("resnet_native: ") + what + " is too short (" +
                             std::to_string(f32len(v)) + " < " + std::to_string(n) + ")");
  }
}

// Contiguous [begin, end) share of n items for thread t of nt. Static and independent of
// timing, so every reduction adds the same partial sums in the same order on every run.
inline void threadRange(int64_t n, int t, int nt, int64_t &begin, int64_t &end) {
  const int64_t q = n / nt, r = n % nt;
  begin = t * q + (t < r ? t : r);
  end = begin + q + (t < r ? 1 : 0);
}

// f32 -> bf16 exactly as oneDNN's reorders convert on CPUs with bf16 instructions
// (VCVTNEPS2BF16: round to nearest even, denormals to a signed zero, NaN stays NaN), n
// values. The batch-norm kernels write the next convolution's bf16 input with it, in place
// of that reorder, so both must agree bit for bit (test/native-kernels.test.ts checks).
// bf16 convolutions are only enabled on CPUs with those instructions (setConvPrecision).
void toBf16(const float *src, uint16_t *dst, int64_t n);

// An optional typed-array argument: null/undefined/absent -> nullptr, else its storage.
inline uint16_t *optionalU16(const Napi::CallbackInfo &info, size_t i, size_t n, const char *what) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array ||
      info[i].As<Napi::Uint16Array>().ElementLength() < n) {
    throw std::runtime_error(std::string("resnet_native: ") + what + " must be a Uint16Array of at least " +
                             std::to_string(n) + " elements");
  }
  return info[i].As<Napi::Uint16Array>().Data();
}

// Calls f with std::true_type or std::false_type: turns a run-time flag into a template
// argument, so the hot loops are compiled once per combination without branches inside.
template <typename F>
void withFlag(bool v, F &&f) {
  if (v) f(std::true_type{});
  else f(std::false_type{});
}

// Elementwise loops below this size are not worth waking the OpenMP team for.
constexpr int64_t kParallelMin = 1 << 15;

// Turns any C++ failure (bad argument, oneDNN status) into a JS Error with a one-line
// message; node-addon-api on its own only forwards Napi::Error.
template <Napi::Value (*F)(const Napi::CallbackInfo &)>
Napi::Value guarded(const Napi::CallbackInfo &info) {
  try {
    return F(info);
  } catch (const Napi::Error &) {
    throw;
  } catch (const dnnl::error &e) {
    throw Napi::Error::New(info.Env(), std::string("resnet_native: oneDNN error: ") + e.what());
  } catch (const std::exception &e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

template <Napi::Value (*F)(const Napi::CallbackInfo &)>
void exportFn(Napi::Env env, Napi::Object exports, const char *name) {
  exports.Set(name, Napi::Function::New(env, guarded<F>, name));
}

// Registration of each concern's functions on the module exports.
void initConv(Napi::Env env, Napi::Object exports);
void initBatchNorm(Napi::Env env, Napi::Object exports);
void initElementwise(Napi::Env env, Napi::Object exports);
void initSgd(Napi::Env env, Napi::Object exports);
void initMpi(Napi::Env env, Napi::Object exports);
void initPeak(Napi::Env env, Napi::Object exports);

}  // namespace rn
