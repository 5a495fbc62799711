// RUN: attn-opt %s -attn-expand-floordiv | FileCheck %s

// Floor division guards the two divisors that trap a hardware divide:
// 0 (result 0) and -1 (result -a, wrapping for INT_MIN).

// CHECK-LABEL: func.func @div(
// CHECK-SAME: %[[A:.+]]: i32, %[[B:.+]]: i32)
// CHECK-DAG: %[[C0:.+]] = arith.constant 0 : i32
// CHECK-DAG: %[[C1:.+]] = arith.constant 1 : i32
// CHECK-DAG: %[[CM1:.+]] = arith.constant -1 : i32
// CHECK: %[[ISZ:.+]] = arith.cmpi eq, %[[B]], %[[C0]]
// CHECK: %[[ISM1:.+]] = arith.cmpi eq, %[[B]], %[[CM1]]
// CHECK: %[[TRAP:.+]] = arith.ori %[[ISZ]], %[[ISM1]]
// CHECK: %[[SAFE:.+]] = arith.select %[[TRAP]], %[[C1]], %[[B]]
// CHECK: %[[Q:.+]] = arith.floordivsi %[[A]], %[[SAFE]]
// CHECK: %[[NEG:.+]] = arith.subi %{{.+}}, %[[A]]
// CHECK: %[[Q1:.+]] = arith.select %[[ISM1]], %[[NEG]], %[[Q]]
// CHECK: %[[Q2:.+]] = arith.select %[[ISZ]], %{{.+}}, %[[Q1]]
// CHECK: return %[[Q2]]
// CHECK-NOT: attn.floordiv
func.func @div(%a: i32, %b: i32) -> i32 {
  %r = attn.floordiv %a, %b
  return %r : i32
}

// Floor modulo: C remainder, plus the divisor when the signs differ; a zero
// divisor returns the dividend.

// CHECK-LABEL: func.func @mod(
// CHECK-SAME: %[[A:.+]]: i32, %[[B:.+]]: i32)
// CHECK: %[[R:.+]] = arith.remsi %[[A]], %{{.+}}
// CHECK: arith.cmpi ne, %[[R]]
// CHECK: arith.cmpi slt, %[[R]]
// CHECK: arith.cmpi slt, %[[B]]
// CHECK: arith.xori
// CHECK: %[[ADJ:.+]] = arith.addi %[[R]], %[[B]]
// CHECK: arith.select %{{.+}}, %[[ADJ]], %[[R]]
// CHECK: %[[OUT:.+]] = arith.select %{{.+}}, %[[A]], %{{.+}}
// CHECK: return %[[OUT]]
// CHECK-NOT: attn.floormod
func.func @mod(%a: i32, %b: i32) -> i32 {
  %r = attn.floormod %a, %b
  return %r : i32
}
