// RUN: attn-opt %s -split-input-file -attn-cpu-approximate-math | FileCheck %s

// exp, log and tanh become polynomials, exp2 of other types exp(x * ln 2):
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

// -----

// f32 exp2 (the softmax's) reduces to 2^n * p(f) itself: x clamped to
// [-127, 128] by compare-and-select (one vmaxps / vminps each), n rounded by
// adding and taking off 1.5 * 2^23, a degree-6 polynomial of f = x - n, and
// 2^n from n's low bits shifted into the exponent field plus the bias.

// CHECK-LABEL: func.func @exp2_vector(
// CHECK-SAME: %[[X:.+]]: vector<16xf32>
// CHECK-DAG: %[[BIAS:.+]] = arith.constant dense<1065353216> : vector<16xi32>
// CHECK-DAG: %[[C23:.+]] = arith.constant dense<23> : vector<16xi32>
// CHECK-DAG: %[[ONE:.+]] = arith.constant dense<1.000000e+00> : vector<16xf32>
// CHECK-DAG: %[[C6:.+]] = arith.constant dense<1.53458124E-4> : vector<16xf32>
// CHECK-DAG: %[[MAGIC:.+]] = arith.constant dense<0x4B400000> : vector<16xf32>
// CHECK-DAG: %[[HI:.+]] = arith.constant dense<1.280000e+02> : vector<16xf32>
// CHECK-DAG: %[[LO:.+]] = arith.constant dense<-1.270000e+02> : vector<16xf32>
// CHECK: %[[BELOW:.+]] = arith.cmpf ogt, %[[LO]], %[[X]]
// CHECK: %[[X1:.+]] = arith.select %[[BELOW]], %[[LO]], %[[X]]
// CHECK: %[[ABOVE:.+]] = arith.cmpf olt, %[[HI]], %[[X1]]
// CHECK: %[[X2:.+]] = arith.select %[[ABOVE]], %[[HI]], %[[X1]]
// CHECK: %[[SHIFTED:.+]] = arith.addf %[[X2]], %[[MAGIC]]
// CHECK: %[[N:.+]] = arith.subf %[[SHIFTED]], %[[MAGIC]]
// CHECK: %[[F:.+]] = arith.subf %[[X2]], %[[N]]
// CHECK: %[[P6:.+]] = math.fma %[[C6]], %[[F]]
// CHECK-COUNT-4: math.fma
// CHECK: %[[P:.+]] = math.fma %{{.+}}, %[[F]], %[[ONE]]
// CHECK: %[[BITS:.+]] = arith.bitcast %[[SHIFTED]] : vector<16xf32> to vector<16xi32>
// CHECK: %[[EXP:.+]] = arith.shli %[[BITS]], %[[C23]]
// CHECK: %[[BIASED:.+]] = arith.addi %[[EXP]], %[[BIAS]]
// CHECK: %[[SCALE:.+]] = arith.bitcast %[[BIASED]] : vector<16xi32> to vector<16xf32>
// CHECK: %[[R:.+]] = arith.mulf %[[P]], %[[SCALE]]
// CHECK: return %[[R]]
func.func @exp2_vector(%x: vector<16xf32>) -> vector<16xf32> {
  %a = math.exp2 %x : vector<16xf32>
  return %a : vector<16xf32>
}

// -----

// CHECK-LABEL: func.func @exp2_f16(
// CHECK: arith.mulf
// CHECK: math.exp
func.func @exp2_f16(%x: f16) -> f16 {
  %a = math.exp2 %x : f16
  return %a : f16
}
