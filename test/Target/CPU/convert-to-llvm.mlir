// RUN: attn-opt %s -split-input-file -verify-diagnostics -allow-unregistered-dialect --attn-cpu-convert-to-llvm | FileCheck %s

// One conversion lowers func, cf, arith, memref, vector and math together:
// the memref descriptor is built from the unpacked arguments and no
// unrealized_conversion_cast is left. math.erf has no LLVM intrinsic and
// becomes a libm call.

// CHECK: llvm.func @erff(f32) -> f32
// CHECK-LABEL: llvm.func @scale(
// CHECK-SAME: %[[ALLOC:[a-z0-9]+]]: !llvm.ptr, %[[ALIGNED:[a-z0-9]+]]: !llvm.ptr, %{{.+}}: i64, %{{.+}}: i64, %{{.+}}: i64, %[[I:[a-z0-9]+]]: i64, %[[N:[a-z0-9]+]]: i64, %[[S:[a-z0-9]+]]: f32) -> vector<8xf32>
// CHECK-NOT: unrealized_conversion_cast
// CHECK: %[[P:.+]] = llvm.icmp "ult" %[[I]], %[[N]] : i64
// CHECK: llvm.cond_br %[[P]], ^bb1, ^bb2
// CHECK: ^bb1:
// CHECK: %[[ADDR:.+]] = llvm.getelementptr %[[ALIGNED]][%[[I]]] : (!llvm.ptr, i64) -> !llvm.ptr, f32
// CHECK: %[[V:.+]] = llvm.load %[[ADDR]] {alignment = 4 : i64} : !llvm.ptr -> vector<8xf32>
// CHECK: %[[B:.+]] = llvm.shufflevector
// CHECK: %[[M:.+]] = llvm.fmul %[[V]], %[[B]] : vector<8xf32>
// CHECK: %[[R:.+]] = llvm.intr.fma(%[[M]], %[[B]], %[[V]])
// CHECK: llvm.br ^bb3(%[[R]] : vector<8xf32>)
// CHECK: ^bb2:
// CHECK: llvm.mlir.constant(dense<0.000000e+00> : vector<8xf32>)
// CHECK: ^bb3(%[[OUT:.+]]: vector<8xf32>):
// CHECK: llvm.return %[[OUT]] : vector<8xf32>
// CHECK-LABEL: llvm.func @erf(
// CHECK: llvm.call @erff(%{{.+}}) : (f32) -> f32
// CHECK-NOT: unrealized_conversion_cast
func.func @scale(%buf: memref<?xf32>, %i: index, %n: index, %s: f32) -> vector<8xf32> {
  %p = arith.cmpi ult, %i, %n : index
  cf.cond_br %p, ^load, ^zero
^load:
  %v = vector.load %buf[%i] : memref<?xf32>, vector<8xf32>
  %b = vector.broadcast %s : f32 to vector<8xf32>
  %m = arith.mulf %v, %b : vector<8xf32>
  %r = math.fma %m, %b, %v : vector<8xf32>
  cf.br ^done(%r : vector<8xf32>)
^zero:
  %z = arith.constant dense<0.0> : vector<8xf32>
  cf.br ^done(%z : vector<8xf32>)
^done(%out: vector<8xf32>):
  return %out : vector<8xf32>
}

func.func @erf(%x: f32) -> f32 {
  %y = math.erf %x : f32
  return %y : f32
}

// -----

// Every op must have been lowered to a dialect with LLVM patterns before
// (tensors bufferized, scf lowered to cf): an op left over is an error, not a
// silent leftover.
func.func @leftover() {
  // expected-error @+1 {{'tensor.empty' op was not lowered to the LLVM dialect}}
  %t = tensor.empty() : tensor<4xf32>
  return
}

// -----

// An unregistered op has no dialect: reported, not a crash.
func.func @unregistered() {
  // expected-error @+1 {{'foo.bar' op was not lowered to the LLVM dialect}}
  "foo.bar"() : () -> ()
  return
}
