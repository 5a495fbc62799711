// RUN: attn-opt %s --pass-pipeline='builtin.module(func.func(attn-tile,attn-cpu-work-range))' | FileCheck %s

// The CPU runtime hands each call a range of (b, h, query tile) items: the
// work loop becomes an scf.for over [work_begin, work_end), delinearized,
// and the per-item stack buffers move to the entry block.

// CHECK-LABEL: func.func @plain(
// CHECK-SAME: %[[BEGIN:[a-z0-9]+]]: index {attn.name = "work_begin"}, %[[END:[a-z0-9]+]]: index {attn.name = "work_end"})
// CHECK-DAG: memref.alloca() {alignment = 64 : i64} : memref<64x64xf32>
// CHECK-DAG: memref.alloca() {alignment = 64 : i64} : memref<64xf32>
// CHECK-NOT: scf.parallel
// CHECK-NOT: memref.alloca_scope
// CHECK: %[[PER_B:.+]] = arith.muli %{{.+}}, %[[NQT:[0-9]+]] : index
// CHECK-NEXT: scf.for %[[W:.+]] = %[[BEGIN]] to %[[END]] step %{{.+}} {
// CHECK:   %[[BI:.+]] = arith.divui %[[W]], %[[PER_B]]
// CHECK:   %[[REST:.+]] = arith.remui %[[W]], %[[PER_B]]
// CHECK:   %[[HI:.+]] = arith.divui %[[REST]], %[[NQT]]
//          Query tiles run last first (heaviest first under causal masks).
// CHECK:   %[[LAST:.+]] = arith.subi %[[NQT]], %{{.+}}
// CHECK:   %[[R:.+]] = arith.remui %[[REST]], %[[NQT]]
// CHECK:   %[[QT:.+]] = arith.subi %[[LAST]], %[[R]]
// CHECK-NOT: memref.alloca(
// CHECK: return
func.func @plain(%q: memref<?x?x?x64xf32>, %o: memref<?x?x?x64xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%o : memref<?x?x?x64xf32>) normalize = softmax scale = 0.125
  return
}
