// Re-creates the kernels of llvm-project
//   mlir/test/Integration/GPU/ROCM/vector-transferops.mlir
// (amdgpu.raw_buffer_load / raw_buffer_store: MUBUF loads and stores
// through a buffer resource, with and without bounds checking).
//
// Host side (AmdUpstreamTest.cpp): arg0 = arg1 = [1.23, 1.23, 1.23, 1.23],
// one work-item each. vectransferx2 loads arg0[0:2], doubles it and stores
// it at arg1[1:3]: the upstream test printed [1.23, 2.46, 2.46, 1.23];
// vectransferx4 then doubles arg0[0:4] into arg1: [2.46, 2.46, 2.46, 2.46].
module attributes {gpu.container_module} {
  gpu.module @upstream {
    gpu.func @vectransferx2(%arg0: memref<?xf32>, %arg1: memref<?xf32>)
        kernel {
      %base = arith.constant 0 : i32
      %f = amdgpu.raw_buffer_load {boundsCheck = true} %arg0[%base]
          : memref<?xf32>, i32 -> vector<2xf32>
      %c = arith.addf %f, %f : vector<2xf32>
      %base1 = arith.constant 1 : i32
      amdgpu.raw_buffer_store {boundsCheck = false} %c -> %arg1[%base1]
          : vector<2xf32> -> memref<?xf32>, i32
      gpu.return
    }
    gpu.func @vectransferx4(%arg0: memref<?xf32>, %arg1: memref<?xf32>)
        kernel {
      %base = arith.constant 0 : i32
      %f = amdgpu.raw_buffer_load {boundsCheck = false} %arg0[%base]
          : memref<?xf32>, i32 -> vector<4xf32>
      %c = arith.addf %f, %f : vector<4xf32>
      amdgpu.raw_buffer_store {boundsCheck = false} %c -> %arg1[%base]
          : vector<4xf32> -> memref<?xf32>, i32
      gpu.return
    }
  }
}
