// Flat addressing: a workgroup buffer cast to the generic address space or
// a global buffer, chosen at run time (so LLVM cannot infer the address
// space and uses flat instructions, LDS addresses built from
// src_shared_base, the shared aperture); lane l stores 3l + 1 and, after a
// barrier, reads lane (l + 1) % 64's value.
module attributes {gpu.container_module} {
  gpu.module @flat {
    gpu.func @flat_lds(%out: memref<64xi32>, %other: memref<64xi32>,
                       %useLds: i32)
        workgroup(%buf: memref<64xi32, #gpu.address_space<workgroup>>)
        kernel {
      %l = gpu.thread_id x
      %cast = memref.memory_space_cast %buf
          : memref<64xi32, #gpu.address_space<workgroup>> to memref<64xi32>
      %z = arith.constant 0 : i32
      %lds = arith.cmpi ne, %useLds, %z : i32
      %g = arith.select %lds, %cast, %other : memref<64xi32>
      %li = arith.index_cast %l : index to i32
      %c3 = arith.constant 3 : i32
      %c1 = arith.constant 1 : i32
      %m = arith.muli %li, %c3 : i32
      %v = arith.addi %m, %c1 : i32
      memref.store %v, %g[%l] : memref<64xi32>
      gpu.barrier
      %one = arith.constant 1 : index
      %c64 = arith.constant 64 : index
      %n = arith.addi %l, %one : index
      %j = arith.remui %n, %c64 : index
      %r = memref.load %g[%j] : memref<64xi32>
      memref.store %r, %out[%l] : memref<64xi32>
      gpu.return
    }
  }
}
