// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-tile))' | attn-opt --attn-cpu-lower-to-llvm | FileCheck %s

// The whole CPU pipeline ends in the LLVM dialect: memrefs expand to
// descriptors, the work range to two i64 arguments, math to polynomials.

// CHECK-LABEL: llvm.func @causal(
// CHECK-SAME: %{{.+}}: !llvm.ptr
// CHECK-NOT: scf.
// CHECK-NOT: memref.
// CHECK-NOT: math.
// CHECK-NOT: attn.floordiv
// CHECK: llvm.alloca
// CHECK: llvm.fmul
// CHECK: llvm.return
func.func @causal(%q: memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>,
                  %o: memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>,
                  %w: i32) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>, memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>, memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>)
      outs(%o : memref<?x?x?x64xbf16, strided<[?, ?, ?, 1], offset: ?>>) params(%w : i32)
      normalize = softmax scale = 0.125
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %d = attn.floordiv %qi, %w
    %e = attn.floordiv %kv, %w
    %c = arith.cmpi eq, %d, %e : i32
    attn.yield %c : i1
  }
  return
}
