// MPI for data-parallel training (src/distributed/): the few collectives one run needs,
// over the system's OpenMPI. Compiled only when its headers are present (RESNET_MPI, set by
// binding.gyp from scripts/build-native.js); otherwise the addon reports hasMpi = false.
//
// Every call is synchronous on the JS thread, like the kernels: the training step waits for
// its gradients anyway, and one thread calling MPI needs only MPI_THREAD_FUNNELED.
#include "common.h"

#ifdef RESNET_MPI
#include <dlfcn.h>
// The C API only: no libmpi_cxx.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace rn {
namespace {

#ifdef RESNET_MPI

bool gInitialized = false;

void ensureInit() {
  if (gInitialized) return;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    // Some OpenMPI builds dlopen their plugins expecting libmpi's symbols to be global;
    // node loaded this addon (and libmpi with it) RTLD_LOCAL. Promote it, if it is loaded.
    dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      throw std::runtime_error("resnet_native: MPI_Init_thread failed");
    }
  }
  gInitialized = true;
}

void check(int rc, const char *what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string("resnet_native: ") + what + " failed: " + std::string(msg, len));
}

// mpiInit() -> { rank, size, host }: initializes MPI once (later calls only query).
Napi::Value MpiInit(const Napi::CallbackInfo &info) {
  ensureInit();
  int rank = 0, size = 1, len = 0;
  char host[MPI_MAX_PROCESSOR_NAME];
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  auto out = Napi::Object::New(info.Env());
  out.Set("rank", rank);
  out.Set("size", size);
  out.Set("host", std::string(host, len));
  return out;
}

// mpiAllreduceF32({buffer}): in-place sum over ranks of a Float32Array (gradients).
Napi::Value MpiAllreduceF32(const Napi::CallbackInfo &info) {
  const Args a(info, "mpiAllreduceF32");
  size_t n = 0;
  float *buf = a.wholeF32("buffer", n);
  if (n > size_t(INT32_MAX)) a.fail("buffer is too large for one MPI_Allreduce");
  ensureInit();
  check(MPI_Allreduce(MPI_IN_PLACE, buf, int(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  return info.Env().Undefined();
}

// mpiAllreduceF64({buffer, op}): in place over ranks, op 'sum', 'min' or 'max' (counts,
// checksums, agreement checks).
Napi::Value MpiAllreduceF64(const Napi::CallbackInfo &info) {
  const Args a(info, "mpiAllreduceF64");
  size_t n = 0;
  double *buf = a.f64("buffer", n);
  const std::string name = a.text("op");
  MPI_Op op = MPI_SUM;
  if (name == "min") op = MPI_MIN;
  else if (name == "max") op = MPI_MAX;
  else if (name != "sum") a.fail("op must be 'sum', 'min' or 'max' (got '" + name + "')");
  if (n > size_t(INT32_MAX)) a.fail("buffer is too large for one MPI_Allreduce");
  ensureInit();
  check(MPI_Allreduce(MPI_IN_PLACE, buf, int(n), MPI_DOUBLE, op, MPI_COMM_WORLD), "MPI_Allreduce");
  return info.Env().Undefined();
}

// mpiBcast({buffer, root}): the bytes of any typed array, from rank `root` to every rank.
Napi::Value MpiBcast(const Napi::CallbackInfo &info) {
  const Args a(info, "mpiBcast");
  size_t n = 0;
  uint8_t *data = a.bytes("buffer", n);
  const int64_t root = a.integer("root");
  if (n > size_t(INT32_MAX)) a.fail("buffer is too large for one MPI_Bcast");
  ensureInit();
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (root < 0 || root >= size) a.fail("root must be a rank in 0.." + std::to_string(size - 1));
  check(MPI_Bcast(data, int(n), MPI_BYTE, int(root), MPI_COMM_WORLD), "MPI_Bcast");
  return info.Env().Undefined();
}

Napi::Value MpiBarrier(const Napi::CallbackInfo &info) {
  ensureInit();
  check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  return info.Env().Undefined();
}

// mpiAbort({code}): ends every rank of the job (a failure on one rank must not leave the
// others waiting in a collective forever).
Napi::Value MpiAbort(const Napi::CallbackInfo &info) {
  const Args a(info, "mpiAbort");
  const int64_t code = a.integer("code");
  if (code < 0 || code > 255) a.fail("code must be an exit status in 0..255");
  if (gInitialized) MPI_Abort(MPI_COMM_WORLD, int(code));
  std::exit(int(code));
}

// mpiFinalize(): at a clean exit of every rank; a no-op if MPI was never used.
Napi::Value MpiFinalize(const Napi::CallbackInfo &info) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (gInitialized && !finalized) MPI_Finalize();
  return info.Env().Undefined();
}

#endif  // RESNET_MPI

}  // namespace

void initMpi(Napi::Env env, Napi::Object exports) {
#ifdef RESNET_MPI
  exports.Set("hasMpi", Napi::Boolean::New(env, true));
  exportFn<MpiInit>(env, exports, "mpiInit");
  exportFn<MpiAllreduceF32>(env, exports, "mpiAllreduceF32");
  exportFn<MpiAllreduceF64>(env, exports, "mpiAllreduceF64");
  exportFn<MpiBcast>(env, exports, "mpiBcast");
  exportFn<MpiBarrier>(env, exports, "mpiBarrier");
  exportFn<MpiAbort>(env, exports, "mpiAbort");
  exportFn<MpiFinalize>(env, exports, "mpiFinalize");
#else
  exports.Set("hasMpi", Napi::Boolean::New(env, false));
#endif
}

}  // namespace rn
