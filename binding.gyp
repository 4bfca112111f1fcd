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
        "native/elementwise.cc",
        "native/sgd.cc",
        "native/mpi.cc",
        "native/peak.cc",
        "native/bf16.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-O2"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-O2", "-std=gnu++17"],
      "cflags": ["-O3", "-fopenmp"],
      "cflags_cc": ["-O3", "-std=c++17", "-fexceptions", "-fopenmp"],
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
