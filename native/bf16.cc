// f32 -> bf16 conversion of the batch-norm kernels' bf16 copies (declared in common.h).
#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace rn {
namespace {

// Round to nearest even, denormals to a signed zero, NaN stays (a quiet) NaN: what
// VCVTNEPS2BF16 does, for CPUs without it.
uint16_t toBf16Scalar(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0) return uint16_t((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#if defined(__x86_64__)
// Compiled for AVX512-BF16 whatever the build's baseline ISA, and called only on CPUs that
// have it: 16 values per instruction, where the portable loop above does not vectorize.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void toBf16Avx512(const float *src,
                                                                                uint16_t *dst,
                                                                                int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), (__m256i)h);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, (__m256i)h);
  }
}
#endif

}  // namespace

void toBf16(const float *src, uint16_t *dst, int64_t n) {
#if defined(__x86_64__)
  static const bool hasBf16 = __builtin_cpu_supports("avx512bf16");
  if (hasBf16) return toBf16Avx512(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = toBf16Scalar(src[i]);
}

}  // namespace rn
