// Re-creates the kernels of llvm-project
//   mlir/test/Integration/GPU/CUDA/sm90/tma_load_64x64_swizzle128b.mlir
//   mlir/test/Integration/GPU/CUDA/sm90/tma_load_128x64_swizzle128b.mlir
// in one: the second loads the same 128x64 f16 box from the same matrix as
// the first's left-hand side, so one launch reproduces both tests' printed
// shared memory.
//
// Covers: TMA with CU_TENSOR_MAP_SWIZZLE_128B (16-byte chunk c of row r
// lands in chunk c ^ (r % 8) of that 128-byte row), a 128x64 box and two
// 64x64 boxes of a 64x128 matrix at columns 0 and 64 placed side by side
// (the second box's destination 8 KiB into a 1024-byte aligned buffer),
// all three completing on one mbarrier whose leader announces the 32768
// bytes after issuing the copies, so the transaction count may go negative
// before the expect_tx brings it back to zero.
//
// The 128x64 test announced 8192 bytes for its 16384-byte box, which lets
// its phase complete only when hardware happens to see the expect_tx
// before half of the data; here the count is the three boxes' size.
//
// Host side: lhs[128][64] = (64r + c) / 8 and rhs[64][128] = (128r + c) / 8
// as f16 (integers, exact); boxes [128, 64] and [64, 64], 128B swizzle;
// one CTA of 128 threads. The host compares both shared buffers, as raw
// row-major memory, with every row the upstream tests printed.
!mapLhs = !nvgpu.tensormap.descriptor<tensor = memref<128x64xf16, 3>,
    swizzle = swizzle_128b, l2promo = none, oob = zero, interleave = none>
!mapRhs = !nvgpu.tensormap.descriptor<tensor = memref<64x64xf16, 3>,
    swizzle = swizzle_128b, l2promo = none, oob = zero, interleave = none>
!barrier = !nvgpu.mbarrier.group<memorySpace = #gpu.address_space<workgroup>>

module attributes {gpu.container_module} {
  gpu.module @upstream {
    memref.global "private" @lhsTile : memref<128x64xf16, 3> {alignment = 1024 : i64}
    memref.global "private" @rhsTile : memref<64x128xf16, 3> {alignment = 1024 : i64}

    // The tensor maps arrive as the device addresses of their 128 bytes.
    gpu.func @tma_swizzle128b(%lhsMapPtr: !llvm.ptr, %rhsMapPtr: !llvm.ptr,
                              %lhsOut: memref<8192xf16>,
                              %rhsOut: memref<8192xf16>) kernel {
      %c0 = arith.constant 0 : index
      %c64 = arith.constant 64 : index
      %c8192 = arith.constant 8192 : index
      %bytes = arith.constant 32768 : index
      %ticks = arith.constant 10000000 : index
      %phase0 = arith.constant false
      %lhsMap = builtin.unrealized_conversion_cast %lhsMapPtr : !llvm.ptr to !mapLhs
      %rhsMap = builtin.unrealized_conversion_cast %rhsMapPtr : !llvm.ptr to !mapRhs
      %lhsTile = memref.get_global @lhsTile : memref<128x64xf16, 3>
      %rhsTile = memref.get_global @rhsTile : memref<64x128xf16, 3>
      // The rhs buffer as two 64x64 boxes of 128-byte rows, 8 KiB apart.
      %rhsBoxes = memref.reinterpret_cast %rhsTile to offset: [0],
          sizes: [2, 64, 64], strides: [4096, 64, 1]
          : memref<64x128xf16, 3> to memref<2x64x64xf16, 3>
      %rhsLeft = memref.subview %rhsBoxes[0, 0, 0] [1, 64, 64] [1, 1, 1]
          : memref<2x64x64xf16, 3> to memref<64x64xf16, strided<[64, 1]>, 3>
      %rhsRight = memref.subview %rhsBoxes[1, 0, 0] [1, 64, 64] [1, 1, 1]
          : memref<2x64x64xf16, 3> to memref<64x64xf16, strided<[64, 1], offset: 4096>, 3>
      %tid = gpu.thread_id x
      %threads = gpu.block_dim x
      %leader = arith.cmpi eq, %tid, %c0 : index

      %bar = nvgpu.mbarrier.create -> !barrier
      nvgpu.mbarrier.init %bar[%c0], %threads, predicate = %leader : !barrier
      gpu.barrier

      scf.if %leader {
        // Coordinates are innermost first: (column, row).
        nvgpu.tma.async.load %lhsMap[%c0, %c0], %bar[%c0] to %lhsTile
            : !mapLhs, !barrier -> memref<128x64xf16, 3>
        nvgpu.tma.async.load %rhsMap[%c0, %c0], %bar[%c0] to %rhsLeft
            : !mapRhs, !barrier -> memref<64x64xf16, strided<[64, 1]>, 3>
        nvgpu.tma.async.load %rhsMap[%c64, %c0], %bar[%c0] to %rhsRight
            : !mapRhs, !barrier -> memref<64x64xf16, strided<[64, 1], offset: 4096>, 3>
        nvgpu.mbarrier.arrive.expect_tx %bar[%c0], %bytes : !barrier
      } else {
        nvgpu.mbarrier.arrive.expect_tx %bar[%c0], %c0 : !barrier
      }
      nvgpu.mbarrier.try_wait.parity %bar[%c0], %phase0, %ticks : !barrier

      // Both buffers out as they lie in shared memory.
      %lhsFlat = memref.collapse_shape %lhsTile [[0, 1]]
          : memref<128x64xf16, 3> into memref<8192xf16, 3>
      %rhsFlat = memref.collapse_shape %rhsTile [[0, 1]]
          : memref<64x128xf16, 3> into memref<8192xf16, 3>
      scf.for %i = %tid to %c8192 step %threads {
        %l = memref.load %lhsFlat[%i] : memref<8192xf16, 3>
        memref.store %l, %lhsOut[%i] : memref<8192xf16>
        %r = memref.load %rhsFlat[%i] : memref<8192xf16, 3>
        memref.store %r, %rhsOut[%i] : memref<8192xf16>
      }
      gpu.return
    }
  }
}
