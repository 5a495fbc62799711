// Cross-lane operations of one wave (64 work-items), each kernel reading
// in[lane] and writing what its lane receives to out[lane]: gpu.shuffle
// (xor, idx: ds_bpermute / ds_swizzle), amdgpu.dpp (quad_perm, row_shr with
// bound_ctrl, row_bcast:15 under a row mask, wave_shr), amdgpu.swizzle_bitmode
// (ds_swizzle_b32's bitmask mode) and rocdl.readlane. The expected values
// (AmdUpstreamTest.cpp) follow the ops' definitions in MLIR's AMDGPU and GPU
// dialects and the CDNA3 ISA's DPP and DS_SWIZZLE_B32 descriptions.
module attributes {gpu.container_module} {
  gpu.module @lanes {
    gpu.func @shuffle_xor(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %c5 = arith.constant 5 : i32
      %c64 = arith.constant 64 : i32
      %r, %ok = gpu.shuffle xor %v, %c5, %c64 : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @shuffle_idx(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %c63 = arith.constant 63 : index
      %src = arith.subi %c63, %l : index
      %s = arith.index_cast %src : index to i32
      %c64 = arith.constant 64 : i32
      %r, %ok = gpu.shuffle idx %v, %s, %c64 : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @dpp_quad_perm(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %r = amdgpu.dpp %v %v quad_perm([3 : i32, 2 : i32, 1 : i32, 0 : i32]) : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @dpp_row_shr(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %old = arith.constant -1 : i32
      %r = amdgpu.dpp %old %v row_shr(1 : i32) { bound_ctrl = true } : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @dpp_row_bcast15(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %k = arith.constant 1000 : i32
      %old = arith.addi %v, %k : i32
      %r = amdgpu.dpp %old %v row_bcast_15 { row_mask = 0xa : i32 } : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @dpp_wave_shr(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %k = arith.constant 1000 : i32
      %old = arith.addi %v, %k : i32
      %r = amdgpu.dpp %old %v wave_shr : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @swizzle(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %r = amdgpu.swizzle_bitmode %v 31 0 16 : i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
    gpu.func @readlane(%in: memref<64xi32>, %out: memref<64xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %in[%l] : memref<64xi32>
      %c5 = arith.constant 5 : i32
      %r = rocdl.readlane %v, %c5 : (i32, i32) -> i32
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
  }
}
