// ONNX Runtime's CPU Attention operator (ONNX opset 23) on .npy inputs:
// builds the one-node model, runs it, checks it against an expected output
// and times it.
//
//   node ort_attention.mjs --q q.npy --k k.npy --v v.npy [--causal]
//        [--softcap C] [--mask mask.npy] [--expect o.npy] [--reps N]
//
// Prints one JSON object: {"ms": median, "max_abs_diff": vs --expect}.
import fs from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const ort = require("onnxruntime-node");
const protobuf = require("protobufjs");

// The few messages of onnx.proto a one-node model needs (field numbers as
// in onnx/onnx.proto).
const ONNX_PROTO = `
syntax = "proto2";
package onnx;
message AttributeProto {
  optional string name = 1; optional float f = 2; optional int64 i = 3;
  optional int32 type = 20;
}
message NodeProto {
  repeated string input = 1; repeated string output = 2; optional string name = 3;
  optional string op_type = 4; repeated AttributeProto attribute = 5;
  optional string domain = 7;
}
message TensorShapeProto {
  message Dimension { optional int64 dim_value = 1; optional string dim_param = 2; }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { optional int32 elem_type = 1; optional TensorShapeProto shape = 2; }
  optional Tensor tensor_type = 1;
}
message ValueInfoProto { optional string name = 1; optional TypeProto type = 2; }
message GraphProto {
  repeated NodeProto node = 1; optional string name = 2;
  repeated ValueInfoProto input = 11; repeated ValueInfoProto output = 12;
}
message OperatorSetIdProto { optional string domain = 1; optional int64 version = 2; }
message ModelProto {
  optional int64 ir_version = 1; optional string producer_name = 2;
  optional GraphProto graph = 7; repeated OperatorSetIdProto opset_import = 8;
}`;

function parseArgs(argv) {
  const args = { reps: 5, causal: false, softcap: 0 };
  for (let i = 2; i < argv.length; ++i) {
    const a = argv[i];
    if (a === "--causal") args.causal = true;
    else args[a.replace(/^--/, "").replace(/-/g, "_")] = argv[++i];
  }
  return args;
}

function readNpy(path) {
  const buf = fs.readFileSync(path);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString("latin1", 10, 10 + headerLen);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1]
    .split(",").map(s => s.trim()).filter(s => s).map(Number);
  const descr = header.match(/'descr': '([^']*)'/)[1];
  const data = buf.subarray(10 + headerLen);
  const copy = new Uint8Array(data.length);
  copy.set(data);
  if (descr === "<f4") return { shape, data: new Float32Array(copy.buffer) };
  if (descr === "|b1" || descr === "<i4") return { shape, data: copy, descr };
  throw new Error(`${path}: unsupported dtype ${descr}`);
}

function valueInfo(name, elemType, shape) {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: shape.map(d => ({ dimValue: d })) } } },
  };
}

const args = parseArgs(process.argv);
const q = readNpy(args.q), k = readNpy(args.k), v = readNpy(args.v);
const [B, Hq, Sq, D] = q.shape, [, Hkv, Skv] = k.shape, Dv = v.shape[3];
const FLOAT = 1, BOOL = 9;
const attrs = [
  { name: "q_num_heads", i: Hq, type: 2 },
  { name: "kv_num_heads", i: Hkv, type: 2 },
  { name: "is_causal", i: args.causal ? 1 : 0, type: 2 },
];
if (Number(args.softcap) > 0)
  attrs.push({ name: "softcap", f: Number(args.softcap), type: 1 });
const inputs = [valueInfo("Q", FLOAT, q.shape), valueInfo("K", FLOAT, k.shape),
                valueInfo("V", FLOAT, v.shape)];
const nodeInputs = ["Q", "K", "V"];
let mask = null;
if (args.mask) {
  const m = readNpy(args.mask); // int32 0/1 of [Sq, Skv]
  mask = new Uint8Array(m.shape[0] * m.shape[1]);
  const ints = new Int32Array(m.data.buffer);
  for (let i = 0; i < mask.length; ++i) mask[i] = ints[i] ? 1 : 0;
  inputs.push(valueInfo("mask", BOOL, m.shape));
  nodeInputs.push("mask");
}
const root = protobuf.parse(ONNX_PROTO, { keepCase: false }).root;
const Model = root.lookupType("onnx.ModelProto");
const model = Model.encode(Model.fromObject({
  irVersion: 10, producerName: "attnc-bench",
  opsetImport: [{ domain: "", version: 23 }],
  graph: {
    name: "attention",
    node: [{ opType: "Attention", input: nodeInputs, output: ["Y"], attribute: attrs }],
    input: inputs,
    output: [valueInfo("Y", FLOAT, [B, Hq, Sq, Dv])],
  },
})).finish();

const threads = Number(process.env.ATTN_NUM_THREADS || 0);
const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: threads, interOpNumThreads: 1,
  graphOptimizationLevel: "all",
});
const feeds = {
  Q: new ort.Tensor("float32", q.data, q.shape),
  K: new ort.Tensor("float32", k.data, k.shape),
  V: new ort.Tensor("float32", v.data, v.shape),
};
if (mask) feeds.mask = new ort.Tensor("bool", mask, [Sq, Skv]);
let out = await session.run(feeds); // warm-up
const times = [];
for (let r = 0; r < Number(args.reps); ++r) {
  const t0 = process.hrtime.bigint();
  out = await session.run(feeds);
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
times.sort((a, b) => a - b);
const result = { ms: times[Math.floor(times.length / 2)] };
if (args.expect) {
  const e = readNpy(args.expect).data, y = out.Y.data;
  let diff = 0;
  for (let i = 0; i < y.length; ++i) diff = Math.max(diff, Math.abs(y[i] - e[i]));
  result.max_abs_diff = diff;
}
console.log(JSON.stringify(result));
