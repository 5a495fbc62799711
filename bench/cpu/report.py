"""Turns bench/cpu/out/*.json into ratios on stdout, docs/benchmarks.md and
docs/images/bench_cpu.png."""
import json
import os
import platform
import subprocess
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: E402
except ImportError:  # the tables still get written
    plt = None

out, S, H, D, window, docs, threads = sys.argv[1:8]
cpu_level = sys.argv[8] if len(sys.argv) > 8 else "native"
S, H, D, window, docs = int(S), int(H), int(D), int(window), int(docs)
root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


r = {n: load(n) for n in ["ort_dense", "ort_causal", "sgemm", "attnc_dense",
                          "attnc_causal", "attnc_window", "attnc_documents",
                          "attnc_softcap_causal", "attnc_moba", "check_dense",
                          "check_causal"]}
ms = {k: v["ms"] for k, v in r.items() if v and "ms" in v}

# Exact kept-entry counts: the ideal speedups of skipping masked work.
dense_entries = S * S
causal_entries = S * (S + 1) // 2
window_entries = sum(min(q + 1, window) for q in range(S))
doc_len = S // docs
doc_entries = docs * doc_len * doc_len
ideal = {
    "causal vs dense": dense_entries / causal_entries,
    "window vs causal": causal_entries / window_entries,
    "documents vs dense": dense_entries / doc_entries,
}
measured = {
    "causal vs dense": ms["attnc_dense"] / ms["attnc_causal"],
    "window vs causal": ms["attnc_causal"] / ms["attnc_window"],
    "documents vs dense": ms["attnc_dense"] / ms["attnc_documents"],
}

cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
flags = open("/proc/cpuinfo").read()
isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
machine = f"{cpu}, {threads} threads, {isa}, {platform.system()} {platform.release()}"

lines = []
def say(s=""):
    print(s)
    lines.append(s)

say(f"Machine: {machine}")
say(f"Shape: B=1, H={H}, S={S}, D={D}, f32; window {window}, {docs} documents")
say(f"attnc kernels compiled with --cpu {cpu_level}")
not_run = [name for key, name in
           [("ort_dense", "ONNX Runtime (node and onnxruntime-node)"),
            ("sgemm", "OpenBLAS (libopenblas-dev)")] if key not in ms]
if not_run:
    say("Not run here: " + "; ".join(not_run) + ".")

# The machine's own limits, measured in the same run (attn-bench-peak).
peak = load("peak")
flops = {}
for key in ms:
    if key.startswith("attnc") and r[key] and "tflops" in r[key]:
        flops[key] = r[key]["tflops"] * 1e3  # GFLOP/s on computed blocks
if peak:
    say()
    say(f"Peaks (`attn-bench-peak`, {peak['isa']}, {peak['threads']} threads, "
        f"same run): f32 FMA {peak['fma_gflops_core']:.1f} GFLOP/s per core, "
        f"{peak['fma_gflops']:.1f} in total; int8 dot products "
        f"({peak['dot']}) {peak['dot_gops_core']:.1f} G multiply-adds/s per "
        f"core, {peak['dot_gops']:.1f} in total; read bandwidth "
        f"{peak['read_gbps']:.1f} GB/s.")
say()
base = "ort_dense" if "ort_dense" in ms else None
say("| kernel | ms | " + ("vs ONNX Runtime dense | " if base else "") +
    ("of FMA peak (FLOPs on computed tiles) |" if peak else ""))
say("|---|---|" + ("---|" if base else "") + ("---|" if peak else ""))
rows = [("ONNX Runtime Attention, dense", "ort_dense"),
        ("ONNX Runtime Attention, is_causal=1", "ort_causal"),
        ("OpenBLAS sgemm QK^T + PV only (no softmax)", "sgemm"),
        ("attnc dense", "attnc_dense"),
        ("attnc causal", "attnc_causal"),
        (f"attnc sliding window {window}", "attnc_window"),
        (f"attnc {docs}-document mask", "attnc_documents"),
        ("attnc causal + tanh soft-cap", "attnc_softcap_causal"),
        ("attnc MoBA: causal, top-8 of 512-token blocks", "attnc_moba")]
for label, key in rows:
    if key in ms:
        cells = [f"{ms[key]:.1f}"]
        if base:
            cells.append(f"{ms[base] / ms[key]:.2f}x")
        if peak:
            cells.append(f"{flops[key] / peak['fma_gflops']:.2f}"
                         if key in flops else "")
        say(f"| {label} | " + " | ".join(cells) + " |")
say()
say("| ratio | measured | target |")
say("|---|---|---|")
if base:
    say(f"| attnc dense vs ONNX Runtime dense | {ms['ort_dense'] / ms['attnc_dense']:.2f}x | >= 1.3x |")
if "ort_causal" in ms:
    say(f"| attnc causal vs ONNX Runtime causal | {ms['ort_causal'] / ms['attnc_causal']:.2f}x | >= 3x |")
if peak and "attnc_dense" in flops:
    say(f"| attnc dense of the FMA peak | {flops['attnc_dense'] / peak['fma_gflops']:.2f} | >= 0.8 |")
for k in ideal:
    frac = measured[k] / ideal[k]
    say(f"| attnc {k} | {measured[k]:.2f}x (ideal {ideal[k]:.2f}x, {frac:.2f} of ideal) | >= 0.8 of ideal |")
for name in ("check_dense", "check_causal"):
    if r[name]:
        say(f"| max abs difference attnc vs ONNX Runtime ({name[6:]}, S=1024) | {r[name]['max_abs_diff']:.2e} | |")
density = {k: r[k]["density"] for k in r if k.startswith("attnc") and r[k]}
say()
say("Density (fraction of 64 x 64 tiles computed): " +
    ", ".join(f"{k[6:]} {v:.3f}" for k, v in density.items()))

decode = load("decode")
if decode:
    say()
    if cpu_level != "native":
        say("(attn-bench-decode compiles its kernels for this CPU, not "
            f"--cpu {cpu_level}.)")
    say(f"Decode (`attn-bench-decode`): B=1, Hq={decode['hq']}, "
        f"Hkv={decode['hkv']}, Sq=1, Skv={decode['skv']}, D={decode['d']}, "
        f"causal, {decode['threads']} threads; bf16 queries for the "
        "quantized caches. Bandwidth counts the bytes of K/V (codes and "
        "scales) the kernel reads; the copy column is a memcpy of the same "
        "bytes on as many threads, timed in the same run; for paged caches, "
        "\"page copy\" is a memcpy of the same pages in the order decode "
        "reads them (per kv head, page by page, without prefetching).")
    say()
    say("| K/V | ms | MB read | GB/s | copy GB/s | of copy bandwidth "
        "| page copy GB/s | of page copy |" +
        (" of read peak |" if peak else ""))
    say("|---|---|---|---|---|---|---|---|" + ("---|" if peak else ""))
    by = {}
    for row in decode["rows"]:
        by[row["kv"]] = row
        page = row.get("page_copy_gbps", 0)
        pageCells = (f"{page:.2f} | {row['gbps'] / page:.2f}" if page
                     else " | ")
        peakCell = (f" {row['gbps'] / peak['read_gbps']:.2f} |" if peak
                    else "")
        say(f"| {row['kv']} | {row['ms']:.2f} | {row['bytes'] / 1e6:.1f} | "
            f"{row['gbps']:.2f} | {row['copy_gbps']:.2f} | "
            f"{row['gbps'] / row['copy_gbps']:.2f} | {pageCells} |" +
            peakCell)
    if "int8" in by and "bf16" in by:
        say()
        say(f"int8 K/V decode time / bf16 K/V decode time: "
            f"{by['int8']['ms'] / by['bf16']['ms']:.2f} (target 0.5)")
        say()
        say("Unquantized caches stream at close to copy bandwidth. "
            "Quantized ones read 2-4x fewer bytes but the kernel still does "
            "all arithmetic in f32 (decode codes, Q.K^T and P.V as f32 "
            "FMAs: 2 x 4 x 64 x 128 per key tile for a GQA group of 4), so "
            "on 2 cores they are bound by FMA throughput, not memory; "
            "int8 dot-product instructions (AVX-512 VNNI) for Q.K^T are the "
            "next step.")

backward = load("backward")
if backward:
    say()
    say(f"### Backward (`attn-bench-backward`, B=1, H={backward['H']}, "
        f"S={backward['S']}, D={backward['D']}, f32)")
    say()
    say("Backward time over the same variant's forward time, and each "
        "backward over the dense backward (sparse masks must keep their "
        "speedup). FlashAttention-2 reports about 2.5x backward/forward on "
        "GPUs.")
    say()
    say("| variant | forward ms | backward ms | backward / forward | "
        "backward / dense backward |")
    say("|---|---|---|---|---|")
    dense_bwd = next((v["backward_ms"] for v in backward["variants"]
                      if v["name"] == "dense"), None)
    for v in backward["variants"]:
        rel = (f"{v['backward_ms'] / dense_bwd:.3f}"
               if dense_bwd and v["name"] != "dense" else "-")
        say(f"| {v['name']} | {v['forward_ms']:.1f} | {v['backward_ms']:.1f} "
            f"| {v['ratio']:.2f} | {rel} |")

if plt is None:
    say()
    say("(No matplotlib here: the plot was not redrawn.)")
else:
    os.makedirs(os.path.join(root, "docs", "images"), exist_ok=True)
    labels = [label for label, key in rows if key in ms]
    values = [ms[key] for label, key in rows if key in ms]
    colors = ["#999999" if not key.startswith("attnc") else "#1f77b4"
              for label, key in rows if key in ms]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:.0f} ms", va="center", fontsize=8)
    ax.set_xlabel("milliseconds (lower is better)")
    ax.set_title(f"Attention on the CPU: B=1, H={H}, S={S}, D={D}, f32\n{cpu}, {threads} threads")
    fig.tight_layout()
    fig.savefig(os.path.join(root, "docs", "images", "bench_cpu.png"), dpi=110)

with open(os.path.join(root, "docs", "benchmarks.md"), "w") as f:
    f.write("# Benchmarks\n\n## CPU (`bash bench/cpu/run.sh`)\n\n")
    f.write("One command builds everything, runs each kernel on the same "
            "inputs and writes this page. ONNX Runtime is the fused CPU "
            "`Attention` operator of ONNX opset 23 (onnxruntime-node 1.30.0, "
            "the kernel a CPU user would pick today); it computes masked "
            "entries too. OpenBLAS is two bare sgemms per head (QK^T, PV): "
            "the matmul work with no softmax, materializing the score "
            "matrix. attnc times are medians of `attnc bench`; the sparse "
            "variants skip EMPTY tiles and evaluate no mask on FULL ones.\n\n")
    f.write("\n".join(lines))
    if plt is not None:
        f.write("\n\n![CPU benchmark](images/bench_cpu.png)\n")
    else:
        f.write("\n")
print("\nwrote docs/benchmarks.md" +
      (" and docs/images/bench_cpu.png" if plt is not None else ""))
