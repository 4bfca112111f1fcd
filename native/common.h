// Shared helpers for the oneDNN engine: argument unpacking, the oneDNN engine/stream
// singletons and the thread partitioning used by the hand-written loops.
#pragma once

#include <napi.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
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

// Named arguments. Every kernel takes one object holding its inputs, outputs and attributes
// by name, as tfjs's kernels take {inputs, attrs}: a call site reads like the signature,
// optional fields are just absent, and a wrong call is a one-line error naming the function
// and the field rather than a value silently read from the wrong position.
class Args {
 public:
  Args(const Napi::CallbackInfo &info, const char *fn) : fn_(fn) {
    if (info.Length() != 1 || !info[0].IsObject()) fail("takes one object of named arguments");
    o_ = info[0].As<Napi::Object>();
  }
  Args(const Napi::Object &o, std::string fn) : fn_(std::move(fn)), o_(o) {}

  // A Float32Array of at least n elements: its own storage, written in place.
  float *f32(const char *key, size_t n) const { return typed<float, napi_float32_array>(key, n, false); }
  // The same, or nullptr when the field is absent, null or undefined.
  float *optF32(const char *key, size_t n) const { return typed<float, napi_float32_array>(key, n, true); }
  uint16_t *optU16(const char *key, size_t n) const { return typed<uint16_t, napi_uint16_array>(key, n, true); }
  // A whole Float32Array, for kernels whose sizes come from the arrays themselves; n
  // receives its length (one read of the field, like f64 and ints).
  float *wholeF32(const char *key, size_t &n) const { return typed<float, napi_float32_array>(key, 0, false, &n); }
  // An Int32Array's values: a shape or element strides.
  std::vector<int64_t> ints(const char *key) const {
    size_t n = 0;
    const int32_t *p = typed<int32_t, napi_int32_array>(key, 0, false, &n);
    return std::vector<int64_t>(p, p + n);
  }
  // A whole Float64Array (MPI reductions of counts and checksums); n receives its length.
  double *f64(const char *key, size_t &n) const { return typed<double, napi_float64_array>(key, 0, false, &n); }
  // The bytes of any typed array (MPI broadcasts); n receives the byte length.
  uint8_t *bytes(const char *key, size_t &n) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsTypedArray()) fail(std::string(key) + " must be a typed array");
    auto a = v.As<Napi::TypedArray>();
    n = a.ByteLength();
    return static_cast<uint8_t *>(a.ArrayBuffer().Data()) + a.ByteOffset();
  }
  double number(const char *key) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsNumber()) fail(std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t integer(const char *key) const {
    const double v = number(key);
    // (Written so that NaN fails too; only then is the conversion defined.)
    if (!(std::abs(v) <= 9007199254740992.0) || v != std::floor(v)) fail(std::string(key) + " must be an integer");
    return int64_t(v);
  }
  std::string text(const char *key) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsString()) fail(std::string(key) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  // Whether an optional field is given (present and neither null nor undefined).
  bool has(const char *key) const {
    const Napi::Value v = o_.Get(key);
    return !v.IsNull() && !v.IsUndefined();
  }
  // Booleans must be given: a misspelt flag is an error, not a silent false.
  bool flag(const char *key) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsBoolean()) fail(std::string(key) + " must be true or false");
    return v.As<Napi::Boolean>().Value();
  }
  // An array of objects of named fields (e.g. every parameter of one SGD step).
  std::vector<Args> list(const char *key) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsArray()) fail(std::string(key) + " must be an array");
    const auto a = v.As<Napi::Array>();
    std::vector<Args> out;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      const Napi::Value e = a.Get(i);
      const std::string name = std::string(key) + "[" + std::to_string(i) + "]";
      if (!e.IsObject()) fail(name + " must be an object");
      out.emplace_back(e.As<Napi::Object>(), fn_ + " " + name);
    }
    return out;
  }
  // A nested object of named fields (e.g. a convolution's geometry).
  Args object(const char *key) const {
    const Napi::Value v = o_.Get(key);
    if (!v.IsObject()) fail(std::string(key) + " must be an object");
    return Args(v.As<Napi::Object>(), fn_ + " " + key);
  }
  [[noreturn]] void fail(const std::string &what) const {
    throw std::runtime_error("resnet_native: " + fn_ + ": " + what);
  }

 private:
  template <typename T, napi_typedarray_type Type>
  T *typed(const char *key, size_t n, bool optional, size_t *length = nullptr) const {
    const Napi::Value v = o_.Get(key);
    if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
    static const char *names[] = {"Int8Array",   "Uint8Array", "Uint8ClampedArray", "Int16Array",  "Uint16Array",
                                  "Int32Array",  "Uint32Array", "Float32Array",     "Float64Array"};
    const char *want = size_t(Type) < 9 ? names[Type] : "typed array";
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Type) {
      fail(std::string(key) + " must be a " + want + (optional ? " (or null)" : ""));
    }
    auto a = v.As<Napi::TypedArrayOf<T>>();
    if (a.ElementLength() < n) {
      fail(std::string(key) + " must be a " + want + " of at least " + std::to_string(n) + " elements (it has " +
           std::to_string(a.ElementLength()) + ")");
    }
    if (length) *length = a.ElementLength();
    return a.Data();
  }

  std::string fn_;
  Napi::Object o_;
};

// Contiguous [begin, end) share of n items for thread t of nt. Static and independent of
// timing, so every reduction adds the same partial sums in the same order on every run.
inline void threadRange(int64_t n, int t, int nt, int64_t &begin, int64_t &end) {
  const int64_t q = n / nt, r = n % nt;
  begin = t * q + (t < r ? t : r);
  end = begin + q + (t < r ? 1 : 0);
}

// Where an activation's values live, the tensor viewed as [M = N*H*W rows, C channels]:
// NHWC (tfjs's layout: a row's channels contiguous) or oneDNN's nChw16c (channels in blocks
// of 16, each block an [H*W, 16] plane per image), the layout oneDNN's Winograd and blocked
// direct convolutions compute in. The body kernel (src/engine/native/kernels-body.ts) keeps
// its activations in nChw16c, so no reorder runs around those convolutions. Channels
// [16b, 16b + 16) of row r start at row(r) + b * block(); in NHWC that is r * C + 16b, so
// one loop over runs of 16 serves both. With C = 16 the two layouts are the same bytes.
struct Layout {
  int64_t C = 0, HW = 1;
  bool blocked = false;
  int64_t row(int64_t r) const { return blocked ? (r / HW) * HW * C + (r % HW) * 16 : r * C; }
  int64_t block() const { return blocked ? HW * 16 : 16; }
  int64_t at(int64_t r, int64_t c) const { return row(r) + (c / 16) * block() + c % 16; }
};

// Field `key` naming a layout, "nhwc" or "nChw16c": whether it is nChw16c (absent: nhwc,
// unless required).
inline bool readBlocked(const Args &a, const char *key, bool required = false) {
  if (!required && !a.has(key)) return false;
  const std::string name = a.text(key);
  if (name != "nhwc" && name != "nChw16c") {
    a.fail(std::string(key) + " must be \"nhwc\" or \"nChw16c\", not \"" + name + "\"");
  }
  return name == "nChw16c";
}

// The optional field layout ("nhwc", the default, or "nChw16c") of an activation of M rows
// and C channels (a multiple of 16 for nChw16c), whose images have HW = H*W rows: given by
// the caller, or else (HW = 0) read from the field imageSize.
inline Layout readLayout(const Args &a, int64_t M, int64_t C, int64_t HW = 0) {
  Layout l;
  l.C = C;
  if (!readBlocked(a, "layout")) return l;
  l.HW = HW > 0 ? HW : a.integer("imageSize");
  if (C % 16 != 0 || l.HW < 1 || M % l.HW != 0) {
    a.fail("layout nChw16c needs channels divisible by 16 and imageSize (H*W) dividing the rows");
  }
  l.blocked = C != 16;  // 16 channels: the same bytes as NHWC, read the faster way
  return l;
}

// f32 -> bf16 exactly as oneDNN's reorders convert on CPUs with bf16 instructions
// (VCVTNEPS2BF16: round to nearest even, denormals to a signed zero, NaN stays NaN), n
// values. The batch-norm kernels write the next convolution's bf16 input with it, in place
// of that reorder, so both must agree bit for bit (test/native-kernels.test.ts checks).
// bf16 convolutions are only enabled on CPUs with those instructions (setConvPrecision).
void toBf16(const float *src, uint16_t *dst, int64_t n);

// Whether a batch-norm call runs the AVX-512 copy of our loops (batchnorm-loops-avx512.cc)
// rather than the baseline one; bf16: the call reads or writes a bf16 array. Needs a CPU
// with AVX-512 F, BW, DQ and VL, and oneDNN allowed to use AVX-512 too (its
// ONEDNN_MAX_CPU_ISA, e.g. AVX2, caps both). The default rule is in addon.cc;
// RESNET_EXP_LOOPS=avx512, =generic or =avx512-bf16 (AVX-512 for bf16 calls only)
// overrides it, to measure or compare. Fixed for the process.
bool avx512Loops(bool bf16);

// Batch-norm calls so far in this process by copy of the loops (bnLoopsCalls() in JS).
void countLoopsCall(bool avx512);

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
void initHead(Napi::Env env, Napi::Object exports);
void initSgd(Napi::Env env, Napi::Object exports);
void initMpi(Napi::Env env, Napi::Object exports);
void initPeak(Napi::Env env, Napi::Object exports);

}  // namespace rn
