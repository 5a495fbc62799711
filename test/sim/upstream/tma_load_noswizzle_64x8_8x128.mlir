// Re-creates the kernel of llvm-project
//   mlir/test/Integration/GPU/CUDA/sm90/tma_load_64x8_8x128_noswizzle.mlir
//
// Covers: unswizzled TMA of two f32 boxes of different shapes (64x8: 32-byte
// rows; 8x128: 512-byte rows) from tensor maps in global memory
// (cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes),
// one mbarrier expecting one arrival per thread of the CTA
// (mbarrier.init), the leader's mbarrier.arrive.expect_tx for both boxes'
// 6144 bytes and everyone else's for 0, then mbarrier.try_wait.parity on
// phase 0.
//
// Upstream printed two shared-memory values before the loads (both 0) and
// lhs[45][7] = 7 and rhs[7][0] = 3 after them; here every thread copies
// part of both tiles out, so the host checks all 1536 loaded values as well
// as the two read before the loads.
//
// Host side: lhs[64][8] = column index, rhs[8][128] = 3.0 (f32); tensor maps
// encoded as MLIR's CUDA runtime does for boxes [64, 8] and [8, 128]
// (no swizzle, no interleave, zero OOB fill); one CTA of 128 threads.
!mapLhs = !nvgpu.tensormap.descriptor<tensor = memref<64x8xf32, 3>,
    swizzle = none, l2promo = none, oob = zero, interleave = none>
!mapRhs = !nvgpu.tensormap.descriptor<tensor = memref<8x128xf32, 3>,
    swizzle = none, l2promo = none, oob = zero, interleave = none>
!barrier = !nvgpu.mbarrier.group<memorySpace = #gpu.address_space<workgroup>>

module attributes {gpu.container_module} {
  gpu.module @upstream {
    memref.global "private" @lhsTile : memref<64x8xf32, 3> {alignment = 128 : i64}
    memref.global "private" @rhsTile : memref<8x128xf32, 3> {alignment = 128 : i64}

    // The tensor maps arrive as the device addresses of their 128 bytes.
    gpu.func @tma_noswizzle(%lhsMapPtr: !llvm.ptr, %rhsMapPtr: !llvm.ptr,
                            %lhsOut: memref<64x8xf32>, %rhsOut: memref<8x128xf32>,
                            %before: memref<2xf32>) kernel {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c8 = arith.constant 8 : index
      %c128 = arith.constant 128 : index
      %c512 = arith.constant 512 : index
      %c1024 = arith.constant 1024 : index
      %bytes = arith.constant 6144 : index
      %ticks = arith.constant 10000000 : index
      %phase0 = arith.constant false
      %lhsMap = builtin.unrealized_conversion_cast %lhsMapPtr : !llvm.ptr to !mapLhs
      %rhsMap = builtin.unrealized_conversion_cast %rhsMapPtr : !llvm.ptr to !mapRhs
      %lhsTile = memref.get_global @lhsTile : memref<64x8xf32, 3>
      %rhsTile = memref.get_global @rhsTile : memref<8x128xf32, 3>
      %tid = gpu.thread_id x
      %threads = gpu.block_dim x
      %leader = arith.cmpi eq, %tid, %c0 : index

      %bar = nvgpu.mbarrier.create -> !barrier
      nvgpu.mbarrier.init %bar[%c0], %threads, predicate = %leader : !barrier
      gpu.barrier

      scf.if %leader {
        nvgpu.mbarrier.arrive.expect_tx %bar[%c0], %bytes : !barrier
        %l = memref.load %lhsTile[%c0, %c0] : memref<64x8xf32, 3>
        %r = memref.load %rhsTile[%c0, %c0] : memref<8x128xf32, 3>
        memref.store %l, %before[%c0] : memref<2xf32>
        memref.store %r, %before[%c1] : memref<2xf32>
        nvgpu.tma.async.load %lhsMap[%c0, %c0], %bar[%c0] to %lhsTile
            : !mapLhs, !barrier -> memref<64x8xf32, 3>
        nvgpu.tma.async.load %rhsMap[%c0, %c0], %bar[%c0] to %rhsTile
            : !mapRhs, !barrier -> memref<8x128xf32, 3>
      } else {
        nvgpu.mbarrier.arrive.expect_tx %bar[%c0], %c0 : !barrier
      }
      nvgpu.mbarrier.try_wait.parity %bar[%c0], %phase0, %ticks : !barrier

      // Element i of a tile goes to thread i % 128.
      scf.for %i = %tid to %c512 step %threads {
        %row = arith.divui %i, %c8 : index
        %col = arith.remui %i, %c8 : index
        %v = memref.load %lhsTile[%row, %col] : memref<64x8xf32, 3>
        memref.store %v, %lhsOut[%row, %col] : memref<64x8xf32>
      }
      scf.for %i = %tid to %c1024 step %threads {
        %row = arith.divui %i, %c128 : index
        %col = arith.remui %i, %c128 : index
        %v = memref.load %rhsTile[%row, %col] : memref<8x128xf32, 3>
        memref.store %v, %rhsOut[%row, %col] : memref<8x128xf32>
      }
      gpu.return
    }
  }
}
