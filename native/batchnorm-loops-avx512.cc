// batchnorm-loops.cc compiled for AVX-512 (F, BW, DQ, VL: x86-64-v4), as rn::avx512. The
// addon is otherwise built for any x86-64 CPU (no -march), where GCC vectorizes batch
// norm's loops with 4-float SSE vectors; 16-float ones take 0.71-1.04 of their time with
// f32 arrays (bound by memory) and 0.47-0.73 with bf16 ones, where the SSE copy is bound by
// its instructions (each kernel at 131072 x 16, 32768 x 32 and 8192 x 64, two runs of
// bench/loops.ts on an AMX Xeon; the whole addon built for AVX2 was in between).
// Which copy runs is a fixed rule of the CPU and of the call, bf16 or f32 (avx512Loops() in
// addon.cc).
//
// The headers come first, before the pragma, so that everything they define stays
// compiled for the baseline (see batchnorm-loops.h); the pragma then applies to the
// functions of batchnorm-loops.cc alone.
#include "batchnorm-loops.h"

#define RN_LOOPS_ISA avx512
#define RN_LOOPS_VECTOR_FLOATS 16  // floats in a vector register
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl")
#endif
#include "batchnorm-loops.cc"
