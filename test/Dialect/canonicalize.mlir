// RUN: attn-opt %s -canonicalize | FileCheck %s

// CHECK-LABEL: func.func @folds
func.func @folds() -> (i32, i32, i32, i32) {
  %a = arith.constant -7 : i32
  %b = arith.constant 2 : i32
  %z = arith.constant 0 : i32
  // Python semantics: -7 // 2 == -4, -7 % 2 == 1; a zero divisor gives 0
  // and the dividend.
  // CHECK-DAG: %[[D:.+]] = arith.constant -4 : i32
  // CHECK-DAG: %[[M:.+]] = arith.constant 1 : i32
  // CHECK-DAG: %[[DZ:.+]] = arith.constant 0 : i32
  // CHECK-DAG: %[[MZ:.+]] = arith.constant -7 : i32
  // CHECK: return %[[D]], %[[M]], %[[DZ]], %[[MZ]]
  %d = attn.floordiv %a, %b
  %m = attn.floormod %a, %b
  %dz = attn.floordiv %a, %z
  %mz = attn.floormod %a, %z
  return %d, %m, %dz, %mz : i32, i32, i32, i32
}

// CHECK-LABEL: func.func @min_over_minus_one
func.func @min_over_minus_one() -> (i32, i32) {
  %a = arith.constant -2147483648 : i32
  %b = arith.constant -1 : i32
  // INT_MIN / -1 wraps instead of trapping; the remainder is 0.
  // CHECK-DAG: %[[D:.+]] = arith.constant -2147483648 : i32
  // CHECK-DAG: %[[M:.+]] = arith.constant 0 : i32
  // CHECK: return %[[D]], %[[M]]
  %d = attn.floordiv %a, %b
  %m = attn.floormod %a, %b
  return %d, %m : i32, i32
}
