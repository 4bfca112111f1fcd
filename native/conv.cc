// 2-D convolution (NHWC activations, HWIO filters, the tfjs layouts) forward, backward
// data and backward weights on oneDNN primitives.
//
// Each distinct geometry builds its primitives once (creating a primitive JIT-compiles
// code, far too slow to do per call) and caches them with the memory objects around them;
// a call only re-points those memory objects at the JS typed arrays and executes.
// Activations are used in place in the caller's layout: tfjs's nhwc, or oneDNN's blocked
// nChw16c (the body kernel's, see Layout in common.h). Every conv whose channel counts are
// multiples of 16 computes in nChw16c, whatever the caller's layout (the same kernels, so
// the same numbers either way); an nhwc caller pays a reorder in and out of it, except at
// 16 channels, where the two layouts are the same bytes. Filters are reordered to the
// layout the primitive prefers (they are small), and weight gradients back to hwio.
#include <array>
#include <memory>
#include <unordered_map>

#include "common.h"

namespace rn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// N, IH, IW, IC, OH, OW, OC, KH, KW, SH, SW, padTop, padLeft, padBottom, padRight, then
// 1 if the caller's activations are nChw16c (readGeom): the key of the primitive cache.
constexpr int kGeomLen = 15;
constexpr int kBlocked = kGeomLen;
using Geom = std::array<int32_t, kGeomLen + 1>;

struct GeomHash {
  size_t operator()(const Geom &g) const {
    size_t h = 1469598103934665603ull;
    for (int32_t v : g) h = (h ^ static_cast<uint32_t>(v)) * 1099511628211ull;
    return h;
  }
};

// The geometry arrives by name, as tfjs's Conv2DInfo names it ({ batch, inHeight, ...,
// padRight }), and the activations' layout as the optional field layout ("nhwc" or
// "nChw16c"); inside, they are the array above.
Geom readGeom(const Args &a) {
  static const char *names[kGeomLen] = {"batch",        "inHeight",    "inWidth",     "inChannels",
                                        "outHeight",    "outWidth",    "outChannels", "filterHeight",
                                        "filterWidth",  "strideHeight", "strideWidth", "padTop",
                                        "padLeft",      "padBottom",   "padRight"};
  const Args geometry = a.object("geometry");
  Geom g;
  for (int i = 0; i < kGeomLen; ++i) {
    const int64_t v = geometry.integer(names[i]);
    if (v < (i < 11 ? 1 : 0) || v > INT32_MAX) {
      geometry.fail(std::string(names[i]) + (i < 11 ? " must be positive" : " must not be negative"));
    }
    g[i] = int32_t(v);
  }
  g[kBlocked] = readBlocked(a, "layout");
  if (g[kBlocked] && (g[3] % 16 != 0 || g[6] % 16 != 0)) {
    a.fail("layout nChw16c needs input and output channels divisible by 16");
  }
  return g;
}

struct Descs {
  memory::desc src, dst, wUser, wAny;
  memory::dims strides, padL, padR;
};

Descs descsFor(const Geom &g) {
  const memory::dim N = g[0], IH = g[1], IW = g[2], IC = g[3], OH = g[4], OW = g[5], OC = g[6],
                    KH = g[7], KW = g[8];
  const tag user = g[kBlocked] ? tag::nChw16c : tag::nhwc;
  return Descs{memory::desc({N, IC, IH, IW}, dt::f32, user),
               memory::desc({N, OC, OH, OW}, dt::f32, user),
               memory::desc({OC, IC, KH, KW}, dt::f32, tag::hwio),
               memory::desc({OC, IC, KH, KW}, dt::f32, tag::any),
               {g[9], g[10]},
               {g[11], g[12]},
               {g[13], g[14]}};
}

dnnl::primitive_attr userScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

enum class Pass { forward, backwardData, backwardWeights };

// --precision bf16 (setConvPrecision); see bf16Pays.
bool gBf16 = false;

// Winograd F(4x4, 3x3) for the 3x3 stride-1 convs of stages 2 and 3 (16x16 maps with 32
// channels, 8x8 with 64). oneDNN's Winograd kernels need the blocked nChw16c layout, yet
// even with a reorder of each activation in and out they beat the direct nhwc kernels
// there. Mean of two runs at batch 128, 2 threads, ms per call (AMD EPYC Zen 5):
//
//                   forward        backward data   backward weights
//   32ch 16x16      1.28 vs 1.84   1.21 vs 1.70    2.26 vs 1.92  (Winograd vs direct)
//   64ch  8x8       0.96 vs 1.41   0.93 vs 1.70    1.44 vs 2.08
//   16ch 32x32      3.80 vs 2.68   3.75 vs 2.19    3.47 vs 2.05
//
// so Winograd runs forward and backward data from 32 channels up, and backward weights
// from 64 (on the earlier AMX Xeon all three passes together were 7.7 vs 11.5 ms at 64
// channels and even at 32). The reorders (~0.06 ms per tensor at 32 channels) are
// included in the win. A fixed rule of the geometry, so a run always takes the same
// kernels and stays reproducible.
bool winogradShape(const Geom &g, Pass pass) {
  const bool k3s1 = g[7] == 3 && g[8] == 3 && g[9] == 1 && g[10] == 1;
  const bool pad1 = g[11] == 1 && g[12] == 1 && g[13] == 1 && g[14] == 1;
  const int minChannels = pass == Pass::backwardWeights ? 64 : 32;
  return k3s1 && pad1 && g[3] >= minChannels && g[6] >= minChannels && g[3] % 16 == 0 &&
         g[6] % 16 == 0;
}

// What the three passes of one geometry are built on: the algorithm and, for every tensor,
// the type and layout inside the primitive (the user's are always f32 nhwc / hwio).
struct Plan {
  dnnl::algorithm alg;
  memory::desc src, dst, diffSrc, diffDst;
  dt weights;  // filter type for forward and backward data; weight gradients stay f32
  bool bf16;
};

// An activation of the geometry (its src or dst) in layout t and type ty.
memory::desc act(const Descs &d, bool src, tag t, dt ty = dt::f32) {
  return memory::desc(src ? d.src.dims() : d.dst.dims(), ty, t);
}

// The direct f32 kernels compute in nChw16c when both channel counts are multiples of 16
// (stages 2 and 3 and the stride-2 convs into them), so a body kept in nChw16c needs no
// reorder (ResNet-56 step, AMD EPYC Zen 5: 20-38 ms of reorders around the Winograd convs
// alone). At 16 -> 16 channels (stage 1) the bytes are the same either way and oneDNN's
// nhwc kernels are as fast or faster (batch 128, ms: forward 2.78 vs 2.67, backward data
// 2.06 vs 2.12), so they stay; so does nhwc in bf16 mode, the layout of the bf16 copies.
Plan directF32(const Geom &g, const Descs &d) {
  const bool blocked = !gBf16 && g[3] % 16 == 0 && g[6] % 16 == 0 && !(g[3] == 16 && g[6] == 16);
  const memory::desc src = act(d, true, blocked ? tag::nChw16c : tag::nhwc);
  const memory::desc dst = act(d, false, blocked ? tag::nChw16c : tag::nhwc);
  return {dnnl::algorithm::convolution_direct, src, dst, src, dst, dt::f32, false};
}

memory::desc withWeights(const Descs &d, dt t) { return memory::desc(d.wAny.dims(), t, tag::any); }

// prefer: the first implementation whose name starts so, if oneDNN has one for the
// description, else oneDNN's first choice.
dnnl::convolution_forward::primitive_desc forwardPd(const Descs &d, const Plan &p,
                                                     const char *prefer = nullptr) {
  auto desc = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, p.alg, p.src,
                                              withWeights(d, p.weights), p.dst, d.strides,
                                              d.padL, d.padR);
  dnnl::convolution_forward::primitive_desc pd(desc, userScratchpad(), cpuEngine());
  // (next_impl walks an iterator that reads `desc`, so only here, while it exists.)
  for (auto it = pd; prefer; ) {
    if (std::string(it.impl_info_str()).rfind(prefer, 0) == 0) return it;
    if (!it.next_impl()) break;
  }
  return pd;
}

// The CPUs three kernel rules were measured on (the two forward rules below and the
// layout of stage 1's backward weights in makeBwdWeights): AMD with AVX-512 (oneDNN's
// avx512_core kernels). Fixed for the process.
bool amdAvx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    const auto bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
    return __builtin_cpu_is("amd") && (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & bits) == bits;
  }();
  return yes;
}

// A CPU whose only bf16 arithmetic is AVX512-BF16's dot product, without AMX, and not AMD:
// Intel's Cooper Lake, or an AMX Xeon with AMX masked (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16).
// There oneDNN 2.6's bf16 convolutions take longer than its f32 ones (see bf16Pays).
bool bf16WithoutAmxIntel() {
  static const bool yes = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    const auto amx = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
    return (isa & bf16) == bf16 && (isa & amx) != amx && !amdAvx512();
  }();
  return yes;
}

// --precision bf16 (setConvPrecision): the convolutions multiply bf16 copies of their
// inputs (activations, filters, incoming gradients) and accumulate in f32; the backward
// passes write f32 gradients, the forward its output rounded to bf16 (forwardPlan), and
// the rest of the step -- batch norm, the loss, the f32 master weights and SGD -- computes
// in f32.
// The activations and incoming gradients mostly arrive already in bf16, written by the
// batch-norm kernel that produced them (Bf16Input below): a conv then reads 2 bytes per
// value instead of converting 4 (step medians: ResNet-20 137 vs 145 ms, ResNet-56 311 vs
// 335 ms on an AMD EPYC Zen 5).
// oneDNN 2.6's bf16 kernels, reorders included, take about half the f32 time for forward
// and backward data on both CPUs we measured (batch 128, ms per call: stage 1 forward 1.8
// vs 4.1 and backward data 2.2 vs 4.6 on an AMX Xeon; 1.1 vs 2.2 and 1.0 vs 1.8 on an AMD
// EPYC Zen 5 with AVX512-BF16). Its bf16 backward-weights kernel pays only on the larger
// stride-1 maps: it is slower than f32 on the 8x8 maps of stage 3 (Xeon: 4.5-10 vs 2.2-2.9
// ms; Zen 5: even with the f32 Winograd kernel), on the two stride-2 convs (Zen 5: 1.5-1.9
// vs 0.9-1.3 ms) and on the 3-channel stem, so those passes stay f32 -- a fixed rule of
// the geometry, like the Winograd one. So does any geometry whose bf16 forward kernel
// would be oneDNN's slow reference code. On an Intel CPU without AMX (bf16WithoutAmxIntel)
// every bf16 pass is slower than f32 (ResNet-20 step at batch 128, AMX Xeon with AMX masked,
// ms: forward 105-111 vs 61-72, backward data 93-99 vs 59-64, backward weights 95 vs 68-74),
// so there all weight gradients stay f32 (95 -> 68-72 ms); forward and backward data are
// what --precision bf16 means, so they stay bf16 and the engine warns (setConvPrecision).
bool bf16Pays(const Geom &g, Pass pass) {
  if (!gBf16) return false;
  if (pass == Pass::backwardWeights) {
    return !bf16WithoutAmxIntel() && g[3] >= 16 && g[4] * g[5] >= 16 * 16 && g[9] == 1 && g[10] == 1;
  }
  return true;
}

bool fastImpl(const std::string &impl) { return impl.find("ref") == std::string::npos; }

Plan planFor(const Geom &g, const Descs &d, Pass pass) {
  const Plan direct = directF32(g, d);
  if (bf16Pays(g, pass)) {
    const memory::desc srcB = act(d, true, tag::nhwc, dt::bf16), dstB = act(d, false, tag::nhwc, dt::bf16);
    const Plan bf{dnnl::algorithm::convolution_direct, srcB, act(d, false, tag::nhwc), act(d, true, tag::nhwc), dstB,
                  dt::bf16, true};
    try {
      if (fastImpl(forwardPd(d, bf).impl_info_str())) return bf;
    } catch (const dnnl::error &) {
    }
    return direct;
  }
  if (!winogradShape(g, pass)) return direct;
  const memory::desc srcW = act(d, true, tag::nChw16c), dstW = act(d, false, tag::nChw16c);
  const Plan wino{dnnl::algorithm::convolution_winograd, srcW, dstW, srcW, dstW, dt::f32, false};
  try {
    forwardPd(d, wino);  // CPUs without oneDNN's Winograd kernels (no AVX-512) refuse it
    return wino;
  } catch (const dnnl::error &) {
    return direct;
  }
}

// Whether two descriptions of a 16-channel activation are nhwc and nChw16c: one channel
// block, so the same bytes.
bool sameBytes(const memory::desc &a, const memory::desc &b) {
  if (a.dims().size() != 4 || a.dims() != b.dims() || a.dims()[1] != 16 || a.data_type() != b.data_type()) {
    return false;
  }
  auto either = [](const memory::desc &m) {
    return m == memory::desc(m.dims(), m.data_type(), tag::nhwc) ||
           m == memory::desc(m.dims(), m.data_type(), tag::nChw16c);
  };
  return either(a) && either(b);
}

// A tensor in the user's layout (nhwc or nChw16c activations, hwio filters) seen by a
// primitive that wants another layout: memory in the primitive's layout, owned and
// allocated once, and the reorder between the two. No reorder when the layouts are the
// same, or the same bytes (then the primitive's description is bound to the user's data).
struct LayoutBridge {
  memory user, internal;
  dnnl::reorder reorder;
  bool needed = false, alias = false;

  // intoPrimitive: the tensor is an input of the primitive (user -> internal), else an
  // output (internal -> user).
  void init(const memory::desc &userMd, const memory::desc &primMd, bool intoPrimitive) {
    auto &eng = cpuEngine();
    user = memory(userMd, eng, nullptr);
    alias = !(userMd == primMd) && sameBytes(userMd, primMd);
    needed = !(userMd == primMd) && !alias;
    if (needed) {
      internal = memory(primMd, eng);
      reorder = intoPrimitive ? dnnl::reorder(user, internal) : dnnl::reorder(internal, user);
    } else if (alias) {
      internal = memory(primMd, eng, nullptr);
    } else {
      internal = user;
    }
  }
  void bind(void *data) {
    user.set_data_handle(data);
    if (alias) internal.set_data_handle(data);
  }
  void in(dnnl::stream &s) {
    if (needed) reorder.execute(s, user, internal);
  }
  void out(dnnl::stream &s) {
    if (needed) reorder.execute(s, internal, user);
  }
};

// A caller's bf16 nhwc array bound to a primitive's input or output, usable when the
// primitive's description is exactly bf16 nhwc.
struct Bf16Array {
  memory mem;
  bool usable = false;

  void init(const memory::desc &primMd) {
    const memory::desc want(primMd.dims(), dt::bf16, tag::nhwc);
    usable = primMd == want;
    if (usable) mem = memory(want, cpuEngine(), nullptr);
  }
};

// The bf16 copy of an input that the caller already made (the batch-norm kernels write one
// beside their f32 output when the convolutions run in bf16): taken in place of the f32
// tensor and its reorder when the primitive reads exactly bf16 nhwc. The same conversion
// either way (toBf16 in common.h), so the same result, without a pass over the f32 tensor.
struct Bf16Input : Bf16Array {
  // The memory the primitive reads: the caller's bf16 copy if there is one, else the
  // bridge's (reordered from the f32 tensor now).
  const memory &pick(LayoutBridge &bridge, uint16_t *copy, dnnl::stream &s) {
    if (copy && usable) {
      mem.set_data_handle(copy);
      return mem;
    }
    bridge.in(s);
    return bridge.internal;
  }
};

// The forward's output written in bf16 straight into the caller's array (yBf16) when the
// primitive writes exactly bf16 nhwc; a caller that passes an f32 y gets the same values
// widened (an exact reorder), so both paths see the same numbers.
using Bf16Output = Bf16Array;

size_t inSize(const Geom &g) { return size_t(g[0]) * g[1] * g[2] * g[3]; }
size_t outSize(const Geom &g) { return size_t(g[0]) * g[4] * g[5] * g[6]; }
size_t filterSize(const Geom &g) { return size_t(g[7]) * g[8] * g[3] * g[6]; }

struct ConvFwd {
  // A convolution_forward, or a convolution_backward_data run as the forward
  // (forwardViaBackwardData): then src is bound as its diff_dst, dst as its diff_src, and w
  // to `flipped`, the filter turned around for it on every call.
  dnnl::primitive prim;
  bool viaBackwardData = false;
  std::vector<float> flipped;
  LayoutBridge src, w, dst;
  Bf16Input srcBf16;
  Bf16Output dstBf16;
  memory::desc scratch;
  std::string impl;
};

struct ConvBwdData {
  dnnl::convolution_backward_data prim;
  LayoutBridge diffDst, w, diffSrc;
  Bf16Input diffDstBf16;
  Bf16Output diffSrcBf16;
  memory::desc scratch;
  std::string impl;
};

struct ConvBwdWeights {
  dnnl::convolution_backward_weights prim;
  LayoutBridge src, diffDst, dw;
  Bf16Input srcBf16, diffDstBf16;
  memory::desc scratch;
  std::string impl;
};

template <typename T>
using Cache = std::unordered_map<Geom, std::unique_ptr<T>, GeomHash>;

// The primitives of geometry g for one pass, built by make(g) on first use. One cache per
// precision: switching precision never reuses the other's primitives.
template <typename T>
T &cached(const Geom &g, std::unique_ptr<T> (*make)(const Geom &)) {
  static Cache<T> caches[2];
  auto &cache = caches[gBf16 ? 1 : 0];
  auto it = cache.find(g);
  if (it == cache.end()) it = cache.emplace(g, make(g)).first;
  return *it->second;
}

// On AMD's AVX-512 CPUs (measured on an EPYC Zen 5) two of oneDNN 2.6's f32 forward
// kernels lag behind the same work done otherwise (batch 128, 2 threads, ms per call,
// median of 30, 4 repeats alternating):
// - stage 1's 16 -> 16 3x3 convs: the forward kernels (brgconv nhwc, jit nChw16c) take
//   2.46-2.68 ms, the backward-data kernel doing the same multiply-adds 2.03-2.08 (a 3x3
//   stride-1 conv with padding 1 is the backward data of the conv with the filter's in and
//   out channels swapped and its taps reversed). On the AMX Xeon we used before, the forward
//   kernel was the faster one (4.1 vs 4.6 ms), so Intel CPUs keep it.
// - the stem's 3 -> 16 conv: oneDNN picks brgconv, 0.79 ms; its jit kernel takes 0.42 (and
//   0.55 vs 0.36-0.41 ms in three later runs).
// Both fixed rules of the geometry and the CPU, so a run always takes the same kernels.
bool forwardViaBackwardData(const Geom &g, const Plan &p) {
  return amdAvx512() && !p.bf16 && p.alg == dnnl::algorithm::convolution_direct && g[3] == 16 && g[6] == 16 &&
         g[1] == g[4] && g[2] == g[5] && g[7] == 3 && g[8] == 3 && g[9] == 1 && g[10] == 1 && g[11] == 1 &&
         g[12] == 1 && g[13] == 1 && g[14] == 1;
}

bool preferJitForward(const Geom &g, const Plan &p) {
  return amdAvx512() && !p.bf16 && p.alg == dnnl::algorithm::convolution_direct && g[3] < 16;
}

// Plan p of a bf16 pass with its output `out` in bf16 nhwc (`act` below), unless oneDNN
// would write that only with a slow reference kernel (implOf: the implementation a plan
// gets); p itself for an f32 pass.
template <typename ImplOf>
Plan withBf16Output(const Plan &p, memory::desc Plan::*out, const memory::desc &bf16, ImplOf implOf) {
  if (!p.bf16) return p;
  Plan b = p;
  b.*out = bf16;
  try {
    if (fastImpl(implOf(b))) return b;
  } catch (const dnnl::error &) {
  }
  return p;
}

// A bf16 forward writes its output in bf16 (mixed precision as PyTorch's autocast: the
// batch norm that reads it computes in f32): 2 bytes a value for the conv to write and for
// the batch norm's four passes over it (forward and backward) to read. Batch norm forward +
// backward of a stage-1 unit (131072 x 16, bf16 copies, cold buffers), ms: 4.2-4.3 -> 3.8-4.05
// on the AMX Xeon.
Plan forwardPlan(const Geom &g, const Descs &d) {
  return withBf16Output(planFor(g, d, Pass::forward), &Plan::dst, act(d, false, tag::nhwc, dt::bf16),
                        [&](const Plan &b) { return std::string(forwardPd(d, b).impl_info_str()); });
}

std::unique_ptr<ConvFwd> makeFwd(const Geom &g) {
  const Descs d = descsFor(g);
  const Plan p = forwardPlan(g, d);
  auto pd = forwardPd(d, p, preferJitForward(g, p) ? "jit:" : nullptr);
  auto c = std::make_unique<ConvFwd>();
  if (forwardViaBackwardData(g, p)) {
    // In and out have the same shape here, so the forward's descriptions serve both ways.
    auto desc = dnnl::convolution_backward_data::desc(p.alg, p.dst, withWeights(d, p.weights), p.src,
                                                      d.strides, d.padL, d.padR);
    auto bpd = dnnl::convolution_backward_data::primitive_desc(desc, userScratchpad(), cpuEngine(), pd);
    c->prim = dnnl::convolution_backward_data(bpd);
    c->viaBackwardData = true;
    c->flipped.resize(filterSize(g));
    c->src.init(d.src, bpd.diff_dst_desc(), true);
    c->w.init(d.wUser, bpd.weights_desc(), true);
    c->dst.init(d.dst, bpd.diff_src_desc(), false);
    c->srcBf16.init(bpd.diff_dst_desc());
    c->scratch = bpd.scratchpad_desc();
    c->impl = std::string(bpd.impl_info_str()) + " (backward data)";
    return c;
  }
  c->prim = dnnl::convolution_forward(pd);
  c->src.init(d.src, pd.src_desc(), true);
  c->w.init(d.wUser, pd.weights_desc(), true);
  c->dst.init(d.dst, pd.dst_desc(), false);
  c->srcBf16.init(pd.src_desc());
  c->dstBf16.init(pd.dst_desc());
  c->scratch = pd.scratchpad_desc();
  c->impl = pd.impl_info_str();
  return c;
}

dnnl::convolution_backward_data::primitive_desc backwardDataPd(const Descs &d, const Plan &p) {
  auto desc = dnnl::convolution_backward_data::desc(p.alg, p.diffSrc, withWeights(d, p.weights),
                                                    p.diffDst, d.strides, d.padL, d.padR);
  return dnnl::convolution_backward_data::primitive_desc(desc, userScratchpad(), cpuEngine(),
                                                         forwardPd(d, p));
}

// A bf16 backward data writes its output, the gradient of the conv's input, in bf16 too, as
// under PyTorch's autocast (the batch norm before reads it and computes in f32): 2 bytes a
// value for the conv to write and for the batch norm's two backward passes to read.
Plan backwardDataPlan(const Geom &g, const Descs &d) {
  return withBf16Output(planFor(g, d, Pass::backwardData), &Plan::diffSrc, act(d, true, tag::nhwc, dt::bf16),
                        [&](const Plan &b) { return std::string(backwardDataPd(d, b).impl_info_str()); });
}

std::unique_ptr<ConvBwdData> makeBwdData(const Geom &g) {
  const Descs d = descsFor(g);
  const Plan p = backwardDataPlan(g, d);
  auto pd = backwardDataPd(d, p);
  auto c = std::make_unique<ConvBwdData>();
  c->prim = dnnl::convolution_backward_data(pd);
  c->diffDst.init(d.dst, pd.diff_dst_desc(), true);
  c->w.init(d.wUser, pd.weights_desc(), true);
  c->diffSrc.init(d.src, pd.diff_src_desc(), false);
  c->diffDstBf16.init(pd.diff_dst_desc());
  c->diffSrcBf16.init(pd.diff_src_desc());
  c->scratch = pd.scratchpad_desc();
  c->impl = pd.impl_info_str();
  return c;
}

std::unique_ptr<ConvBwdWeights> makeBwdWeights(const Geom &g) {
  const Descs d = descsFor(g);
  Plan p = planFor(g, d, Pass::backwardWeights);
  auto hint = forwardPd(d, p);
  // With exactly 16 channels an nhwc buffer *is* nChw16c (one channel block), and for that
  // blocked layout oneDNN's f32 backward-weights kernel was ~15% faster than its nhwc one
  // in our first measurements (stage 1's 32x32x16 convs, the AMX Xeon). Same bytes: no
  // reorder runs. On AMD's AVX-512 CPUs it is the other way round (EPYC Zen 5, batch 128,
  // alternating: nhwc 1.51-1.55 vs 1.71-1.79 ms alone; inside a ResNet-20 step the six
  // convs' share of the backward weights fell by 1.8 ms, 38.0 -> 36.2, 4 runs each).
  const bool block16 = !p.bf16 && !amdAvx512() && p.alg == dnnl::algorithm::convolution_direct &&
                       g[3] == 16 && g[6] == 16;
  if (block16) {
    p.src = act(d, true, tag::nChw16c);
    p.diffDst = act(d, false, tag::nChw16c);
  }
  auto desc = dnnl::convolution_backward_weights::desc(p.alg, p.src, d.wAny, p.diffDst,
                                                       d.strides, d.padL, d.padR);
  auto pd = dnnl::convolution_backward_weights::primitive_desc(desc, userScratchpad(),
                                                               cpuEngine(), hint);
  auto c = std::make_unique<ConvBwdWeights>();
  c->prim = dnnl::convolution_backward_weights(pd);
  c->src.init(d.src, pd.src_desc(), true);
  c->diffDst.init(d.dst, pd.diff_dst_desc(), true);
  c->dw.init(d.wUser, pd.diff_weights_desc(), false);
  c->srcBf16.init(pd.src_desc());
  c->diffDstBf16.init(pd.diff_dst_desc());
  c->scratch = pd.scratchpad_desc();
  c->impl = pd.impl_info_str();
  return c;
}

ConvFwd &getFwd(const Geom &g) { return cached(g, makeFwd); }
ConvBwdData &getBwdData(const Geom &g) { return cached(g, makeBwdData); }
ConvBwdWeights &getBwdWeights(const Geom &g) { return cached(g, makeBwdWeights); }

// An input (x or dy) may be left out when the pass reads the caller's bf16 copy instead
// (convImplInfo's takesBf16 says which passes do): the batch-norm kernel that wrote the
// copy then skips writing the f32 tensor. Anywhere else leaving it out is an error.
void needF32(const Args &a, const char *key, const float *p, const uint16_t *copy, const Bf16Input &in) {
  if (!p && !(copy && in.usable)) {
    a.fail(std::string("needs ") + key + ": this pass reads it in f32, not its bf16 copy");
  }
}

// convForward({ x?, filter, y | yBf16, geometry, layout?, xBf16? }): y = conv(x, filter);
// layout: of x and y ("nhwc", the default, or "nChw16c"); xBf16: x already in bf16 (used
// when the conv multiplies in bf16; then x may be left out, see needF32). yBf16 (instead of
// y): the output in bf16, where this forward writes bf16 (convImplInfo's writesBf16).
Napi::Value ConvForward(const Napi::CallbackInfo &info) {
  const Args a(info, "convForward");
  const Geom g = readGeom(a);
  float *x = a.optF32("x", inSize(g)), *filter = a.f32("filter", filterSize(g));
  uint16_t *xb = a.optU16("xBf16", inSize(g)), *yb = a.optU16("yBf16", outSize(g));
  float *y = yb ? nullptr : a.f32("y", outSize(g));
  if (yb && a.optF32("y", outSize(g))) a.fail("takes y or yBf16, not both");
  ConvFwd &c = getFwd(g);
  needF32(a, "x", x, xb, c.srcBf16);
  if (yb && !c.dstBf16.usable) a.fail("yBf16: this forward writes f32 (see convImplInfo's writesBf16)");
  auto &s = cpuStream();
  if (c.viaBackwardData) {
    // hwio [kh][kw][i][o] -> [KH-1-kh][KW-1-kw][o][i]: the backward data's filter.
    const int KH = g[7], KW = g[8], IC = g[3], OC = g[6];
    for (int kh = 0; kh < KH; ++kh)
      for (int kw = 0; kw < KW; ++kw)
        for (int i = 0; i < IC; ++i)
          for (int o = 0; o < OC; ++o)
            c.flipped[((size_t(KH - 1 - kh) * KW + (KW - 1 - kw)) * OC + o) * IC + i] =
                filter[((size_t(kh) * KW + kw) * IC + i) * OC + o];
    filter = c.flipped.data();
  }
  c.src.bind(x);
  c.w.bind(filter);
  c.dst.bind(y);
  if (yb) c.dstBf16.mem.set_data_handle(yb);
  const memory &src = c.srcBf16.pick(c.src, xb, s);
  c.w.in(s);
  c.prim.execute(s, {{c.viaBackwardData ? DNNL_ARG_DIFF_DST : DNNL_ARG_SRC, src},
                     {DNNL_ARG_WEIGHTS, c.w.internal},
                     {c.viaBackwardData ? DNNL_ARG_DIFF_SRC : DNNL_ARG_DST, yb ? c.dstBf16.mem : c.dst.internal},
                     {DNNL_ARG_SCRATCHPAD, scratchpad(c.scratch)}});
  if (!yb) c.dst.out(s);
  s.wait();
  return info.Env().Undefined();
}

// convBackwardData({ dy?, filter, dx | dxBf16, geometry, layout?, dyBf16? }): dx =
// d(loss)/dx (dy: see needF32). dxBf16 (instead of dx): the output in bf16, where this pass
// writes bf16 (convImplInfo's writesBf16); an f32 dx gets the same values widened.
Napi::Value ConvBackwardData(const Napi::CallbackInfo &info) {
  const Args a(info, "convBackwardData");
  const Geom g = readGeom(a);
  float *dy = a.optF32("dy", outSize(g)), *filter = a.f32("filter", filterSize(g));
  uint16_t *dyb = a.optU16("dyBf16", outSize(g)), *dxb = a.optU16("dxBf16", inSize(g));
  float *dx = dxb ? nullptr : a.f32("dx", inSize(g));
  if (dxb && a.optF32("dx", inSize(g))) a.fail("takes dx or dxBf16, not both");
  ConvBwdData &c = getBwdData(g);
  needF32(a, "dy", dy, dyb, c.diffDstBf16);
  if (dxb && !c.diffSrcBf16.usable) a.fail("dxBf16: this backward data writes f32 (see convImplInfo's writesBf16)");
  auto &s = cpuStream();
  c.diffDst.bind(dy);
  c.w.bind(filter);
  c.diffSrc.bind(dx);
  if (dxb) c.diffSrcBf16.mem.set_data_handle(dxb);
  const memory &diffDst = c.diffDstBf16.pick(c.diffDst, dyb, s);
  c.w.in(s);
  c.prim.execute(s, {{DNNL_ARG_DIFF_DST, diffDst},
                     {DNNL_ARG_WEIGHTS, c.w.internal},
                     {DNNL_ARG_DIFF_SRC, dxb ? c.diffSrcBf16.mem : c.diffSrc.internal},
                     {DNNL_ARG_SCRATCHPAD, scratchpad(c.scratch)}});
  if (!dxb) c.diffSrc.out(s);
  s.wait();
  return info.Env().Undefined();
}

// convBackwardWeights({ x?, dy?, dfilter, geometry, layout?, xBf16?, dyBf16? }):
// dfilter = d(loss)/dfilter, hwio (x, dy: see needF32)
Napi::Value ConvBackwardWeights(const Napi::CallbackInfo &info) {
  const Args a(info, "convBackwardWeights");
  const Geom g = readGeom(a);
  float *x = a.optF32("x", inSize(g)), *dy = a.optF32("dy", outSize(g));
  float *df = a.f32("dfilter", filterSize(g));
  uint16_t *xb = a.optU16("xBf16", inSize(g)), *dyb = a.optU16("dyBf16", outSize(g));
  ConvBwdWeights &c = getBwdWeights(g);
  needF32(a, "x", x, xb, c.srcBf16);
  needF32(a, "dy", dy, dyb, c.diffDstBf16);
  auto &s = cpuStream();
  c.src.bind(x);
  c.diffDst.bind(dy);
  c.dw.bind(df);
  const memory &src = c.srcBf16.pick(c.src, xb, s);
  const memory &diffDst = c.diffDstBf16.pick(c.diffDst, dyb, s);
  c.prim.execute(s, {{DNNL_ARG_SRC, src},
                     {DNNL_ARG_DIFF_DST, diffDst},
                     {DNNL_ARG_DIFF_WEIGHTS, c.dw.internal},
                     {DNNL_ARG_SCRATCHPAD, scratchpad(c.scratch)}});
  c.dw.out(s);
  s.wait();
  return info.Env().Undefined();
}

// convImplInfo({ geometry }): which oneDNN implementations the three passes use (for
// profiling; a "ref" implementation here would mean a slow fallback inside oneDNN), and
// takesBf16: which inputs a pass reads from the caller's bf16 copy when given one (never in
// fp32 mode), and writesBf16: whether the forward and the backward data can write their
// outputs in bf16 (yBf16, dxBf16).
Napi::Value ConvImplInfo(const Napi::CallbackInfo &info) {
  const Geom g = readGeom(Args(info, "convImplInfo"));
  const ConvFwd &f = getFwd(g);
  const ConvBwdData &d = getBwdData(g);
  const ConvBwdWeights &w = getBwdWeights(g);
  auto o = Napi::Object::New(info.Env());
  o.Set("forward", f.impl);
  o.Set("backwardData", d.impl);
  o.Set("backwardWeights", w.impl);
  auto bf = Napi::Object::New(info.Env());
  bf.Set("forwardX", f.srcBf16.usable);
  bf.Set("backwardDataDy", d.diffDstBf16.usable);
  bf.Set("backwardWeightsX", w.srcBf16.usable);
  bf.Set("backwardWeightsDy", w.diffDstBf16.usable);
  o.Set("takesBf16", bf);
  auto out = Napi::Object::New(info.Env());
  out.Set("forwardY", f.dstBf16.usable);
  out.Set("backwardDataDx", d.diffSrcBf16.usable);
  o.Set("writesBf16", out);
  return o;
}

// What setConvPrecision returns for bf16 on such a CPU (bf16WithoutAmxIntel), for the user.
constexpr const char *kBf16SlowerNote =
    "--precision bf16 is slower than fp32 on this CPU (AVX512-BF16 without AMX): oneDNN's bf16 "
    "convolutions take 1.5-1.8x the f32 time here; use --precision fp32 unless you want bf16's numbers";

// setConvPrecision("fp32" | "bf16") -> a note for the user, or "". bf16 needs a CPU with
// native bf16 arithmetic (AVX512-BF16 or AMX): elsewhere oneDNN would emulate it, slower
// than f32.
Napi::Value SetConvPrecision(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    throw std::runtime_error("resnet_native: precision must be a string");
  }
  const std::string p = info[0].As<Napi::String>();
  if (p != "fp32" && p != "bf16") {
    throw std::runtime_error("resnet_native: precision must be fp32 or bf16, not " + p);
  }
  // ISA values are nested bit sets: a CPU has an ISA when it has all of its bits.
  const auto bf16Bits = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  if (p == "bf16" && (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & bf16Bits) != bf16Bits) {
    throw std::runtime_error(
        "--precision bf16 needs a CPU with AVX512-BF16 or AMX instructions, and this one has "
        "neither; use --precision fp32");
  }
  gBf16 = p == "bf16";
  return Napi::String::New(info.Env(), gBf16 && bf16WithoutAmxIntel() ? kBf16SlowerNote : "");
}

}  // namespace

void initConv(Napi::Env env, Napi::Object exports) {
  exportFn<ConvForward>(env, exports, "convForward");
  exportFn<ConvBackwardData>(env, exports, "convBackwardData");
  exportFn<ConvBackwardWeights>(env, exports, "convBackwardWeights");
  exportFn<ConvImplInfo>(env, exports, "convImplInfo");
  exportFn<SetConvPrecision>(env, exports, "setConvPrecision");
}

}  // namespace rn
