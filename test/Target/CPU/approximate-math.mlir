// RUN: attn-opt %s -attn-cpu-approximate-math | FileCheck %s

// exp2 becomes exp(x * ln 2), and exp, log and tanh become polynomials:
// no libm calls remain, so loops using them vectorize.

// CHECK-LABEL: func.func @math(
// CHECK-NOT: math.exp
// CHECK-NOT: math.log
// CHECK-NOT: math.tanh
// CHECK: math.fma
// CHECK-NOT: math.exp
// CHECK-NOT: math.log
// CHECK-NOT: math.tanh
// CHECK: return
func.func @math(%x: f32) -> (f32, f32, f32, f32) {
  %a = math.exp2 %x : f32
  %b = math.exp %x : f32
  %c = math.log %x : f32
  %d = math.tanh %x : f32
  return %a, %b, %c, %d : f32, f32, f32, f32
}
