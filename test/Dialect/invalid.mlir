// RUN: attn-opt %s -split-input-file -verify-diagnostics

func.func @mask_reads_score(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected mask region arguments (b, h, q, kv: i32); a mask must not read the score, got 5 arguments}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  mask {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.constant true
    attn.yield %c : i1
  }
  return
}

// -----

func.func @score_not_f32(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected score region to yield one 'f32', got ('i32')}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %b : i32
  }
  return
}

// -----

func.func @mask_not_bool(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected mask region to yield one 'i1', got ('i32')}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %b : i32
  }
  return
}

// -----

func.func @index_count(%q: memref<?x?x?x64xf32>, %doc: memref<?x?xi32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) captures(%doc : memref<?x?xi32>) normalize = softmax
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    // expected-error @+1 {{expected 2 indices for a rank-2 tensor, got 3}}
    %d = attn.load %doc[%b, %qi, %kv] : memref<?x?xi32>
    %c = arith.cmpi eq, %d, %b : i32
    attn.yield %c : i1
  }
  return
}

// -----

func.func @head_dims(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x32xf32>) {
  // expected-error @+1 {{expected k's last dim to be 64, got 32}}
  attn.attention ins(%q, %k, %q : memref<?x?x?x64xf32>, memref<?x?x?x32xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  return
}

// -----

func.func @dynamic_head_dim(%q: memref<?x?x?x?xf32>) {
  // expected-error @+1 {{expected a static head dim D on q and k}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x?xf32>, memref<?x?x?x?xf32>, memref<?x?x?x?xf32>)
      outs(%q : memref<?x?x?x?xf32>) normalize = softmax
  return
}

// -----

func.func @mixed_dtypes(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xf16>) {
  // expected-error @+1 {{expected k and v of element type 'f32', got 'f16' and 'f32'}}
  attn.attention ins(%q, %k, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf16>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  return
}

// -----

func.func @lse_with_sigmoid(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>) {
  // expected-error @+1 {{expected no lse output with normalize = sigmoid (lse exists for softmax and softplus only)}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) normalize = sigmoid
  return
}

// -----

func.func @sink_with_relu(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected normalize = softmax with a sink, got relu}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = relu
  sink {
  ^bb0(%h: i32):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @both_scales(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected either a scale attribute or a scale_expr region, got both}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax scale = 1.0
  scale_expr {
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @undeclared_use(%q: memref<?x?x?x64xf32>, %w: i32) {
  // expected-error @+1 {{expected regions to use only the op's params, captures and constants from above}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  mask {
  ^bb0(%b: i32, %h: i32, %qi: i32, %kv: i32):
    %c = arith.cmpi slt, %kv, %w : i32
    attn.yield %c : i1
  }
  return
}

// -----

func.func @sink_args(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected sink region arguments (h: i32), got 2 arguments}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  sink {
  ^bb0(%h: i32, %x: i32):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @codes_without_quant(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>) {
  // expected-error @+1 {{expected k and v of element type 'f32', got 'i8' and 'i8'}}
  attn.attention ins(%q, %k, %k : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  return
}

// -----

func.func @int4_unpacked(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>,
                         %ks: memref<?x?x?x64xf32>, %vs: memref<?x?x?xf32>) {
  // expected-error @+1 {{expected k's last dim to be 32, got 64}}
  attn.attention ins(%q, %k, %k : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%q : memref<?x?x?x64xf32>)
      kv_scales(%ks, %vs : memref<?x?x?x64xf32>, memref<?x?x?xf32>)
      normalize = softmax kv_quant int4 group 64
  return
}

// -----

func.func @quant_without_scales(%q: memref<?x?x?x64xf32>, %k: memref<?x?x?x64xi8>) {
  // expected-error @+1 {{expected kv_scales and a group exactly with kv_quant}}
  attn.attention ins(%q, %k, %k : memref<?x?x?x64xf32>, memref<?x?x?x64xi8>, memref<?x?x?x64xi8>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax {kvQuant = 0 : i32}
  return
}

// -----

func.func @pages_without_size(%q: memref<?x?x?x64xf32>, %pt: memref<?x?xi32>, %sl: memref<?xi32>) {
  // expected-error @+1 {{expected pages(...) exactly with page_size}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) pages(%pt, %sl : memref<?x?xi32>, memref<?xi32>)
      normalize = softmax
  return
}

// -----

func.func @score_grad_without_g(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected score_grad region arguments (s: f32, b, h, q, kv: i32, g: f32), got 5 arguments}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %s : f32
  } score_grad {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @sink_grad_yields(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected sink_grad region to yield nothing, got ('f32')}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  sink {
  ^bb0(%h: i32):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  } sink_grad {
  ^bb0(%h: i32, %g: f32):
    attn.yield %g : f32
  }
  return
}

// -----

func.func @grad_of_missing_region(%q: memref<?x?x?x64xf32>) {
  // expected-error @+1 {{expected score_grad, sink_grad and scale_grad only with the score, sink and scale_expr regions they differentiate}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) normalize = softmax
  score_grad {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32, %g: f32):
    attn.yield %g : f32
  }
  return
}

// -----

func.func @accumulate_into_i32_param(%q: memref<?x?x?x64xf32>, %w: i32) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) params(%w : i32) normalize = softmax
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %s : f32
  } score_grad {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32, %g: f32):
    // expected-error @+1 {{expected an f32 param and no indices}}
    attn.accumulate_grad %g to %w : i32
    attn.yield %g : f32
  }
  return
}

// -----

func.func @accumulate_into_f16_tensor(%q: memref<?x?x?x64xf32>, %t: memref<?xf16>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) captures(%t : memref<?xf16>) normalize = softmax
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    attn.yield %s : f32
  } score_grad {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32, %g: f32):
    // expected-error @+1 {{expected an f32 captured tensor, got 'memref<?xf16>'}}
    attn.accumulate_grad %g to %t[%h] : memref<?xf16>
    attn.yield %g : f32
  }
  return
}

// -----

func.func @accumulate_in_a_forward_region(%q: memref<?x?x?x64xf32>, %t: memref<?xf32>) {
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) captures(%t : memref<?xf32>) normalize = softmax
  score {
  ^bb0(%s: f32, %b: i32, %h: i32, %qi: i32, %kv: i32):
    // expected-error @+1 {{expected to be in a score_grad, sink_grad or scale_grad region of attn.attention}}
    attn.accumulate_grad %s to %t[%h] : memref<?xf32>
    attn.yield %s : f32
  }
  return
}

// -----

func.func @backward_without_lse(%q: memref<?x?x?x64xf32>, %i: i32) {
  // expected-error @+1 {{expected the forward's lse with backward exactly when the normalizer has a row sum}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>)
      backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%i)
      normalize = softmax
  return
}

// -----

func.func @backward_missing_param_gradient(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>, %a: f32, %i: i32) {
  // expected-error @+1 {{expected one param gradient per f32 param (1), got 0}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) params(%a : f32)
      backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%i)
      normalize = softmax
  return
}

// -----

func.func @phase_without_backward(%q: memref<?x?x?x64xf32>, %g: memref<?xf32>) {
  // expected-error @+1 {{expected phase, param_grads and capture_grads only with backward}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) param_grads(%g : memref<?xf32>)
      normalize = softmax
  return
}

// -----

func.func @backward_select_without_map(%q: memref<?x?x?x64xf32>, %lse: memref<?x?x?xf32>, %k: i32, %i: i32) {
  // expected-error @+1 {{expected the forward's tile_classes with select and backward (select's choices are constants of the backward)}}
  attn.attention ins(%q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>)
      outs(%q : memref<?x?x?x64xf32>) lse(%lse : memref<?x?x?xf32>) params(%k : i32)
      backward(%q, %q, %q, %q : memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>, memref<?x?x?x64xf32>) phase(%i)
      normalize = softmax select topk block 64
  select_arg {
    %f = arith.sitofp %k : i32 to f32
    attn.yield %f : f32
  }
  return
}
