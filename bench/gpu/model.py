#!/usr/bin/env python3
"""A performance model of attnc's GPU kernels, checkable without a GPU.

It runs each variant on the functional simulator (`attnc run --simulate`)
with ATTNSIM_PROFILE set, which records per launch what the kernel did:
warp instructions by class, tensor-core FLOPs, shared-memory bytes read by
wgmma/ldmatrix, global bytes, TMA and cp.async requests and bytes. It then
divides each quantity by the rate an H100 SXM5 sustains for it (published
peaks, and the assumptions marked below) and reports the resource that
bounds each launch and the TFLOP/s that bound allows.

This is a model, not a measurement: it assumes every resource runs at its
peak and overlaps perfectly with the others, ignores latency, occupancy
and tail effects (bank conflicts count for ld/st.shared, ldmatrix and
cp.async, not for wgmma or TMA), and scales a small simulated problem's
per-tile costs to the whole GPU. It says which resource a kernel's
instruction mix saturates first; only a GPU says how fast it runs.

    python3 bench/gpu/model.py --build build --target sm_90a \
        --variants causal,sliding_sink@window=512 --seq 2048 --head-dim 128
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

# H100 SXM5 (NVIDIA H100 datasheet; SM counts and per-SM rates from the
# Hopper tuning guide). Clock: the boost clock the datasheet's tensor peak
# is quoted at.
SMS = 132
CLOCK_HZ = 1.83e9
PEAK = {
    # Dense bf16/f16 tensor FLOP/s through wgmma (989.4 TFLOP/s).
    "tensor_wgmma": 989.4e12,
    # ASSUMPTION: mma.sync on Hopper reaches about 2/3 of the wgmma peak
    # (FlashAttention-2's mma.sync kernels top out near 350-400 TFLOP/s on
    # H100 while FlashAttention-3 reaches 740).
    "tensor_mma_sync": 989.4e12 * 2 / 3,
    # One warp instruction per scheduler per clock, 4 schedulers per SM.
    "issue": SMS * 4 * CLOCK_HZ,
    # MUFU (ex2, lg2, rcp, ...): 16 lanes per clock per SM.
    "sfu": SMS * 16 * CLOCK_HZ,
    # Shared memory: 128 bytes per clock per SM.
    "shared": SMS * 128 * CLOCK_HZ,
    # ASSUMPTION: L2 to SM bandwidth about 5.5 TB/s.
    "l2": 5.5e12,
    # HBM3: 3.35 TB/s.
    "hbm": 3.35e12,
}


def shared_bytes(launch):
    """Bytes' worth of shared-memory bandwidth a launch uses: operand reads
    of the tensor cores, other loads and stores, and the async copies that
    fill it. Where the simulator counted wavefronts (ld/st.shared, ldmatrix,
    cp.async; PtxMachine.cpp states the bank rule), those accesses cost 128
    bytes per wavefront, so bank conflicts show; wgmma and TMA stay bytes."""
    # A TMA multicast reads L2 once but writes every destination CTA's
    # shared memory: tma_shared_bytes counts each copy (older profiles
    # without it had no multicast).
    landed = launch.get("tma_shared_bytes", launch["tma_bytes"])
    moved = (launch["tensor_shared_bytes"] + launch["shared_bytes"] +
             landed + launch["cp_async_bytes"])
    if "shared_wavefronts" not in launch:
        return moved
    return (moved - launch["shared_wavefront_bytes"] +
            128 * launch["shared_wavefronts"])


def model_launch(launch):
    """Seconds each resource needs for one launch, and the bound."""
    warp = launch["warp_instructions"]
    thread = launch["by_class"]
    wgmma = launch.get("wgmma_flops", 0)
    times = {
        "tensor": wgmma / PEAK["tensor_wgmma"] +
                  (launch["tensor_flops"] - wgmma) / PEAK["tensor_mma_sync"],
        "issue": sum(warp.values()) / PEAK["issue"],
        "sfu": thread.get("sfu", 0) / PEAK["sfu"],
        "shared": shared_bytes(launch) / PEAK["shared"],
        "l2": (launch["global_read_bytes"] + launch["global_write_bytes"]) /
              PEAK["l2"],
    }
    bound = max(times, key=times.get)
    return times, bound


def run_variant(args, variant, workdir):
    spec, *sets = variant.split("@")
    path, _, name = spec.partition(":")
    source = os.path.join(args.examples, path + ".attn")
    bin_dir = os.path.join(args.build, "bin")
    q, k, v = (os.path.join(workdir, n) for n in ("q.npy", "k.npy", "v.npy"))
    shape_q = "%d,%d,%d,%d" % (args.batch, args.heads, args.seq, args.head_dim)
    shape_kv = "%d,%d,%d,%d" % (args.batch, args.kv_heads, args.seq,
                                args.head_dim)
    for out, shape, seed in ((q, shape_q, 1), (k, shape_kv, 2),
                             (v, shape_kv, 3)):
        subprocess.run([os.path.join(bin_dir, "attn-npy"), "rand", out,
                        args.dtype, shape, str(seed)], check=True)
    profile = os.path.join(workdir, path + "_" + (name or "") + ".jsonl")
    if os.path.exists(profile):
        os.remove(profile)
    cmd = [args.attnc or os.path.join(bin_dir, "attnc"), "run", source,
           "--target",
           args.target, "--simulate", "--dtype", args.dtype, "--q", q, "--k",
           k, "--v", v, "-o", os.path.join(workdir, "o.npy")]
    if name:
        cmd += ["--variant", name]
    # Long prefills fill the GPU without split-KV; the small simulated
    # problem stands in for their interior.
    cmd += ["--split-kv", args.split_kv]
    if args.target == "sm_90a":
        cmd += ["--gpu-loads", args.gpu_loads]
    if args.kv_dtype != "same":
        cmd += ["--kv-dtype", args.kv_dtype]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, ATTNSIM_PROFILE=profile)
    subprocess.run(cmd, check=True, env=env)
    with open(profile) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(root, "build"))
    p.add_argument("--examples", default=os.path.join(root, "examples"))
    p.add_argument("--attnc", help="the attnc to simulate with (default: "
                   "--build's), e.g. an older build for a before/after")
    p.add_argument("--target", default="sm_90a", choices=["sm_80", "sm_90a"])
    p.add_argument("--gpu-loads", default="tma", choices=["tma", "cp.async"])
    p.add_argument("--variants", default="causal",
                   help="comma-separated FILE[:VARIANT][@NAME=VALUE...] of "
                        "examples/")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    p.add_argument("--kv-dtype", default="same",
                   choices=["same", "int8", "int4", "fp8e4m3", "fp8e5m2"],
                   help="attnc's --kv-dtype: quantized K/V codes")
    p.add_argument("--split-kv", default="1",
                   help="attnc's --split-kv for the simulated runs")
    p.add_argument("--project-seq", type=int, default=0, metavar="S",
                   help="also simulate at --seq / 2 and project each "
                   "launch's resource times to sequence length S (see "
                   "project())")
    p.add_argument("--json", help="write the table's rows here")
    args = p.parse_args()
    if args.project_seq:
        return project_main(args)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for variant in args.variants.split(","):
            launches = run_variant(args, variant, work)
            total = {"tensor": 0, "issue": 0, "sfu": 0, "shared": 0, "l2": 0}
            bound_time = 0.0
            bounds = []
            for launch in launches:
                times, bound = model_launch(launch)
                for r in total:
                    total[r] += times[r]
                bound_time += times[bound]
                bounds.append("%s:%s" % (launch["kernel"].split("_")[-1]
                                         if launch["kernel"].endswith(
                                             ("merge", "pool", "select"))
                                         else "main", bound))
            # Compulsory HBM traffic: q, k, v read once, o written once.
            elem = 2
            hbm_bytes = elem * args.batch * args.seq * args.head_dim * (
                2 * args.heads + 2 * args.kv_heads)
            t_hbm = hbm_bytes / PEAK["hbm"]
            bound_time = max(bound_time, t_hbm)
            # Executed tensor FLOPs: the masked part of partial tiles
            # counts (as it costs), skipped tiles do not.
            flops = sum(l["tensor_flops"] for l in launches)
            main_launch = launches[0] if len(launches) == 1 else max(
                launches, key=lambda l: l["tensor_flops"])
            warp = main_launch["warp_instructions"]
            row = {
                "variant": variant, "target": args.target,
                "loads": args.gpu_loads if args.target == "sm_90a" else "",
                "seq": args.seq, "head_dim": args.head_dim,
                "launches": len(launches), "bounds": " ".join(bounds),
                "tensor_share": total["tensor"] / bound_time,
                "issue_per_tensor": sum(warp.values()) /
                                    max(1, warp.get("tensor_core", 0)),
                "est_tflops": flops / bound_time / 1e12,
                "times_us": {r: t * 1e6 for r, t in total.items()},
                # Async copies into shared memory (the TMA unit or the
                # LSU issues each): fewer, larger requests cost less.
                "tma_requests": sum(l["tma_requests"] for l in launches),
                "tma_bytes": sum(l["tma_bytes"] for l in launches),
                "cp_async_requests": sum(l["cp_async_requests"]
                                         for l in launches),
                # Bank conflicts: wavefronts taken per conflict-free one.
                # None where no request was counted (wgmma and TMA only).
                "wavefronts_per_ideal": (
                    sum(l.get("shared_wavefronts", 0) for l in launches) /
                    sum(l.get("shared_ideal_wavefronts", 0) for l in launches)
                    if any(l.get("shared_ideal_wavefronts") for l in launches)
                    else None),
            }
            rows.append(row)
    print("Model (H100 SXM5 peaks; not a measurement): %s%s, B=%d H=%d "
          "Hkv=%d S=%d D=%d %s" % (
              args.target, " " + args.gpu_loads if args.target == "sm_90a"
              else "", args.batch, args.heads, args.kv_heads, args.seq,
              args.head_dim, args.dtype))
    print("| variant | bound per launch | tensor / bound | warp instr per "
          "tensor instr | TMA requests (bytes each) | shared wavefronts "
          "per ideal | est. tensor TFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        tma = "%d (%d)" % (r["tma_requests"], r["tma_bytes"] //
                           max(1, r["tma_requests"]))
        per_ideal = r["wavefronts_per_ideal"]
        print("| %s | %s | %.2f | %.1f | %s | %s | %.0f |" % (
            r["variant"], r["bounds"], r["tensor_share"],
            r["issue_per_tensor"], tma,
            "-" if per_ideal is None else "%.2f" % per_ideal,
            r["est_tflops"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


RESOURCES = ("tensor", "issue", "sfu", "shared", "l2")


def fit_quadratic(s1, t1, s2, t2):
    """a, b with a s + b s^2 through (s1, t1) and (s2, t2)."""
    b = (t2 / s2 - t1 / s1) / (s2 - s1)
    return t1 / s1 - b * s1, b


def project(args, variant, work):
    """Each launch's time per resource, fitted as a S + b S^2 over two
    simulated lengths and evaluated at --project-seq.

    With Sq = Skv = S a prefill has S / BQ CTAs per (batch, head), each
    paying a fixed cost (Q in, epilogue, O out) plus a cost per kept key
    tile; dense and causal keep a number of tiles proportional to S per
    CTA, windows a constant number, so every resource's total is a S +
    b S^2 (b = 0 for windows). The two lengths must have the same launches
    (no split-KV), and the projection inherits the model's assumptions."""
    seq = args.seq
    runs = []
    for s in (seq // 2, seq):
        args.seq = s
        launches = run_variant(args, variant, work)
        runs.append((s, [(model_launch(l)[0], l["tensor_flops"])
                         for l in launches]))
    args.seq = seq
    (s1, first), (s2, second) = runs
    if len(first) != len(second):
        raise SystemExit("%s: %d launches at S = %d, %d at S = %d: cannot "
                         "project" % (variant, len(first), s1, len(second),
                                      s2))
    target = args.project_seq
    total_time, flops, bounds, shares = 0.0, 0.0, [], {}
    for (t1, f1), (t2, f2) in zip(first, second):
        times = {}
        for r in RESOURCES:
            a, b = fit_quadratic(s1, t1[r], s2, t2[r])
            times[r] = max(0.0, a * target + b * target * target)
        a, b = fit_quadratic(s1, f1, s2, f2)
        flops += a * target + b * target * target
        bound = max(times, key=times.get)
        bounds.append(bound)
        total_time += times[bound]
        for r in RESOURCES:
            shares[r] = shares.get(r, 0.0) + times[r]
    elem = 2
    hbm = elem * args.batch * target * args.head_dim * (
        2 * args.heads + 2 * args.kv_heads) / PEAK["hbm"]
    total_time = max(total_time, hbm)
    return {
        "variant": variant, "target": args.target,
        "loads": args.gpu_loads if args.target == "sm_90a" else "",
        "fitted_seq": [s1, s2], "seq": target, "head_dim": args.head_dim,
        "bounds": " ".join(bounds),
        "tensor_share": shares["tensor"] / total_time,
        "times_us": {r: t * 1e6 for r, t in shares.items()},
        "est_tflops": flops / total_time / 1e12,
        "tensor_peak_fraction": flops / total_time / PEAK["tensor_wgmma"],
    }


def project_main(args):
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for variant in args.variants.split(","):
            rows.append(project(args, variant, work))
    print("Model projected to S=%d from S=%d and %d (H100 SXM5 peaks; not a "
          "measurement): %s%s, B=%d H=%d Hkv=%d D=%d %s" % (
              args.project_seq, args.seq // 2, args.seq, args.target,
              " " + args.gpu_loads if args.target == "sm_90a" else "",
              args.batch, args.heads, args.kv_heads, args.head_dim,
              args.dtype))
    print("| variant | bound per launch | tensor / bound | est. tensor "
          "TFLOP/s | of the wgmma peak |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %.2f | %.0f | %.2f |" % (
            r["variant"], r["bounds"], r["tensor_share"], r["est_tflops"],
            r["tensor_peak_fraction"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
