{
  # mpi=1 (with mpi_cflags / mpi_libs from `mpicc --showme:compile` / `--showme:link`) is
  # passed by scripts/build-native.js when OpenMPI's headers are installed.
  "variables": {"mpi%": "0", "mpi_cflags%": "", "mpi_libs%": ""},
  "targets": [
    {
      "target_name": "resnet_native",
      "sources": [
        "native/addon.cc",
        "native/conv.cc",
        "native/batchnorm.cc",
        "native/batchnorm-loops.cc",
        "native/batchnorm-loops-avx512.cc",
        "native/elementwise.cc",
        "native/head.cc",
        "native/sgd.cc",
        "native/mpi.cc",
        "native/peak.cc",
        "native/bf16.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2", "-std=gnu++17"],
      # -fno-trapping-math: we never enable floating-point traps, so GCC may compute a float
      # operation whose result a select then drops; without it, batch norm's backward with two
      # incoming gradients (dy + dyAdd under the ReLU mask) was not vectorized, 17x slower.
      # It changes no value: no reassociation, no contraction.
      # -ffp-contract=off: a * b + c is always two roundings, never one FMA (GCC's default
      # for C++ fuses them wherever the target has FMA), so the AVX-512 copy of our loops
      # (native/batchnorm-loops-avx512.cc) computes the same bits as the baseline one. No
      # -march: the addon runs on any x86-64 CPU; faster ISAs by run-time choice.
      "cflags": ["-O3", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off"],
      "cflags_cc": ["-O3", "-std=c++17", "-fexceptions", "-fopenmp", "-fno-trapping-math", "-ffp-contract=off"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl"],
      "conditions": [
        [
          "mpi==1",
          {
            "defines": ["RESNET_MPI"],
            "cflags_cc": ["<@(mpi_cflags)"],
            "libraries": ["<@(mpi_libs)"]
          }
        ]
      ]
    }
  ]
}
