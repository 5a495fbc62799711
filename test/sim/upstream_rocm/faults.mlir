// Kernels with defects the AMD simulator must report, each as a launch
// error naming the kernel, workgroup, wave, lane and instruction
// (AmdUpstreamTest.cpp, Faults): a store past its buffer, a read of LDS
// another wave writes with no barrier between (with ATTNSIM_RACECHECK=1),
// a register read before the s_waitcnt for its load, an instruction the
// simulator does not model, a wave that never ends, s_barrier with an LDS
// store in flight, an LDS access past the workgroup's LDS. The last four
// and the load use inline assembly, which LLVM passes through unchecked.
module attributes {gpu.container_module} {
  gpu.module @faults {
    gpu.func @oob_store(%out: memref<?xf32>) kernel {
      %l = gpu.thread_id x
      %c100 = arith.constant 100 : index
      %i = arith.addi %l, %c100 : index
      %one = arith.constant 1.0 : f32
      memref.store %one, %out[%i] : memref<?xf32>
      gpu.return
    }
    gpu.func @lds_exchange(%out: memref<128xf32>, %sync: i32)
        workgroup(%buf: memref<128xf32, #gpu.address_space<workgroup>>)
        kernel {
      %l = gpu.thread_id x
      %li = arith.index_cast %l : index to i32
      %f = arith.sitofp %li : i32 to f32
      memref.store %f, %buf[%l] : memref<128xf32, #gpu.address_space<workgroup>>
      %c0 = arith.constant 0 : i32
      %wait = arith.cmpi ne, %sync, %c0 : i32
      scf.if %wait {
        gpu.barrier
      }
      %c64 = arith.constant 64 : index
      %c128 = arith.constant 128 : index
      %s = arith.addi %l, %c64 : index
      %j = arith.remui %s, %c128 : index
      %r = memref.load %buf[%j] : memref<128xf32, #gpu.address_space<workgroup>>
      memref.store %r, %out[%l] : memref<128xf32>
      gpu.return
    }
    gpu.func @unwaited_load(%buf: memref<?xi32>) kernel {
      %p = memref.extract_aligned_pointer_as_index %buf : memref<?xi32> -> index
      %a = arith.index_cast %p : index to i64
      %r = llvm.inline_asm has_side_effects
          "global_load_dword $0, $1, off\0Av_add_u32 $0, 1, $0\0As_waitcnt vmcnt(0)",
          "=&v,v" %a : (i64) -> i32
      %l = gpu.thread_id x
      memref.store %r, %buf[%l] : memref<?xi32>
      gpu.return
    }
    gpu.func @unmodelled(%buf: memref<?xi32>) kernel {
      %l = gpu.thread_id x
      %v = memref.load %buf[%l] : memref<?xi32>
      %r = llvm.inline_asm has_side_effects "v_cvt_pkrtz_f16_f32 $0, $1, $1",
          "=v,v" %v : (i32) -> i32
      memref.store %r, %buf[%l] : memref<?xi32>
      gpu.return
    }
    gpu.func @spin(%flag: memref<?xi32>) kernel {
      %c0 = arith.constant 0 : index
      %z = arith.constant 0 : i32
      scf.while : () -> () {
        %v = memref.load %flag[%c0] : memref<?xi32>
        %go = arith.cmpi eq, %v, %z : i32
        scf.condition(%go)
      } do {
        llvm.inline_asm has_side_effects "s_nop 0", "" : () -> ()
        scf.yield
      }
      gpu.return
    }
    gpu.func @barrier_inflight(%buf: memref<?xi32>)
        workgroup(%lds: memref<64xi32, #gpu.address_space<workgroup>>)
        kernel {
      %l = gpu.thread_id x
      %v = memref.load %buf[%l] : memref<?xi32>
      memref.store %v, %lds[%l] : memref<64xi32, #gpu.address_space<workgroup>>
      %z = arith.constant 0 : i32
      llvm.inline_asm has_side_effects "ds_write_b32 $0, $1\0As_barrier",
          "v,v" %z, %v : (i32, i32) -> ()
      %back = memref.load %lds[%l] : memref<64xi32, #gpu.address_space<workgroup>>
      memref.store %back, %buf[%l] : memref<?xi32>
      gpu.return
    }
    gpu.func @lds_out_of_range(%buf: memref<?xi32>) kernel {
      %l = gpu.thread_id x
      %z = arith.constant 64 : i32
      %r = llvm.inline_asm has_side_effects
          "ds_read_b32 $0, $1\0As_waitcnt lgkmcnt(0)", "=v,v" %z
          : (i32) -> i32
      memref.store %r, %buf[%l] : memref<?xi32>
      gpu.return
    }
  }
}
