#!/usr/bin/env python3
"""What bench.py's backward section computes, checked on the CPU (no GPU,
no flex_attention; Debian's python3-torch 1.13 is enough):

- reference_backward's chunked float32 gradients equal one unchunked
  autograd pass (chunking and the dk/dv sums over chunks);
- for every backward row, attnc's CPU backward of the same .attn variant
  (compiled --backward --lse, bf16 like the GPU bundles) with the row's
  params and captured tensors matches reference_backward within --bwd-tol
  (so the Case math the reference and flex use is the variant's, and the
  bound has room for bf16 gradients); for the select rows (moba,
  flex_prefill, block_theta) the reference takes the blocks bench.py's
  torch rule chooses (with_selection, as the worker does) while attnc's
  CPU backward runs its own pre-pass, at S = 1024 where each rule drops
  blocks (checked: the selected density is below the mask's alone, and
  attnc's gradients are beyond --bwd-tol from the unselected reference's);
- the FLOP convention: backward = 2.5x the forward's 4*B*H*S*S*D*density;
- the worker's backward stages themselves (bench.Worker.run_backward with
  b_attnc and b_flex) on the CPU: CPU bundles laid out as prepare.sh's,
  eager torch math standing in for flex_attention, CPU clocks for CUDA
  events.

    python3 bench/gpu/test_backward_cpu.py ATTNC    # ATTNRT_LIB set

Exits 77 (skipped) where torch is not importable.
"""
import dataclasses
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

try:
    import torch
except ImportError:
    print("torch not importable: skipped")
    sys.exit(77)

import attnrt  # noqa: E402
import bench  # noqa: E402

bench.torch, bench.F = torch, torch.nn.functional
torch.manual_seed(0)
SELECT_BUILDS = (bench.b_moba, bench.b_flex_prefill, bench.b_block_theta)
B, H, S, D = 1, 2, 96, 32
# The select rows' length: 16 blocks of 64, so that top-4 (moba), 0.9 of
# the pooled mass (flex_prefill) and the threshold (block_theta) all drop
# blocks (at S = 96 there are two).
S_SELECT = 1024


def check_chunking(fails):
    """Chunks of 16 queries (6 of them, dk and dv summed over them) against
    one autograd pass over all queries, for B = 2."""
    case = bench.b_softcap(bench.Ctx(2, H, S, D, seed=3, dev="cpu"))
    q, k, v, do = (torch.randn(2, H, S, D) for _ in range(4))
    o, grads, density = bench.reference_backward(case, q, k, v, do,
                                                 chunk_elems=H * S * 16)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    s = leaves[0] @ leaves[1].transpose(-1, -2) / math.sqrt(D)
    idx = torch.arange(S)
    s = case.score(s, 0, torch.arange(H).view(H, 1, 1), idx.view(S, 1),
                   idx.view(1, S))
    keep = case.mask(0, 0, idx.view(S, 1), idx.view(1, S))
    s = s.masked_fill(~keep, float("-inf"))
    ref_o = torch.softmax(s, -1) @ leaves[2]
    ref_o.backward(do)
    errs = [(o - ref_o.detach()).abs().max().item()] + [
        (g - x.grad).abs().max().item() for g, x in zip(grads, leaves)]
    want_density = keep.float().mean().item()
    print("reference_backward in 6 chunks vs one autograd pass: max |diff| "
          "o %.1e, dq %.1e, dk %.1e, dv %.1e; density %.4f"
          % (*errs, density))
    if max(errs) > 1e-5 or abs(density - want_density) > 1e-6:
        fails.append("reference_backward differs from plain autograd")


def check_attnc(attnc, work, fails):
    """attnc's CPU backward of each row's variant against the reference."""
    a = bench.parse_args([])
    for b in bench.BACKWARD:
        spec = bench.BY_NAME[b.catalog]
        out = os.path.join(work, spec.variant)
        subprocess.run([attnc, "compile", os.path.join(ROOT, spec.source),
                        "--variant", spec.variant, "--head-dim", str(D),
                        "--dtype", "bf16", "--backward", "--lse", "-o", out],
                       check=True)
        kernel = attnrt.load(out + ".attnpkg").kernel(spec.variant)
        S_ = S_SELECT if spec.build in SELECT_BUILDS else S
        ctx = bench.Ctx(B, H, S_, D, seed=1 + bench.CATALOG.index(spec),
                        dev="cpu")
        q, k, v, do = (torch.randn(B, H, S_, D).to(torch.bfloat16)
                       for _ in range(4))
        unselected = spec.build(ctx)
        case = bench.with_selection(unselected, q, k)
        if case is not unselected:
            # The same mask without the selection: the density the rule
            # must lower (or the check would not tell selected from not).
            _, base_grads, base = bench.reference_backward(
                dataclasses.replace(unselected, select=None), q, k, v, do)
        kwargs = dict(case.params, **case.captures)
        o, lse = kernel(q, k, v, **kwargs)
        dq, dk, dv, _ = kernel.backward(q, k, v, o, lse, do, **kwargs)
        ref, grads, density = bench.reference_backward(case, q, k, v, do)
        o_err = bench.max_error(o, ref) / ref.abs().max().item()
        errs = [bench.rel_l1(x, g) for x, g in zip((dq, dk, dv), grads)]
        flops = 2 * (D + D) * B * H * S_ * S_ * density
        if case is not unselected:
            # attnc's gradients must be far from the unselected reference's
            # (the check tells a selection from none).
            off = min(bench.rel_l1(x, g) for x, g in zip((dq, dk, dv),
                                                          base_grads))
            print("%-18s S = %d: selected density %.3f, the mask's alone "
                  "%.3f; attnc's gradients vs the unselected reference: "
                  "rel-L1 >= %.1e" % (b.name, S_, density, base, off))
            if not density < base or not off > a.bwd_tol:
                fails.append("%s: the selection drops no block at S = %d "
                             "(density %.3g of %.3g, rel-L1 %.2g)"
                             % (b.name, S_, density, base, off))
        print("%-18s density %.3f  o max err %.1e of max|ref|  rel-L1 dq "
              "%.1e dk %.1e dv %.1e  (bound %.0e)  bwd GFLOP %.4f" % (
                  b.name, density, o_err, *errs, a.bwd_tol,
                  bench.BACKWARD_FLOPS * flops / 1e9))
        if o_err > a.tol or not all(math.isfinite(e) and e <= a.bwd_tol
                                    for e in errs):
            fails.append("%s: attnc's CPU backward vs the reference: o %.2g, "
                         "dq/dk/dv %s" % (b.name, o_err, errs))


def fake_flex(q, k, v, score_mod=None, block_mask=None):
    """flex_attention's math in eager torch (block_mask: the mask_mod
    itself, see make_block_mask below), differentiable like flex's."""
    B_, H_, S_, D_ = q.shape
    s = q.float() @ k.float().transpose(-1, -2) / math.sqrt(D_)
    b = torch.arange(B_).view(B_, 1, 1, 1)
    h = torch.arange(H_).view(1, H_, 1, 1)
    qi = torch.arange(S_).view(1, 1, S_, 1)
    ki = torch.arange(S_).view(1, 1, 1, S_)
    if score_mod is not None:
        s = score_mod(s, b, h, qi, ki)
    if block_mask is not None:
        s = s.masked_fill(~block_mask(b, h, qi, ki).expand(s.shape),
                          float("-inf"))
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype)


def check_stages(attnc, work, fails):
    """The worker's backward stages (Worker.run_backward: b_attnc, then
    b_flex) on the CPU: attnc's CPU bundles in a prepared folder laid out
    as prepare.sh's, fake_flex for flex, CPU clocks for CUDA events. The
    same code runs on the GPU; here its bookkeeping, checks, scratch
    hand-over and table are exercised."""
    import time
    import types

    def cpu_ms(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2]

    def cpu_ms_after(prepare, fn, warmup, iters):
        return cpu_ms(lambda: fn(prepare()), warmup, iters)
    bench.median_ms, bench.median_ms_after = cpu_ms, cpu_ms_after
    bench.cuda_alive = lambda: True
    bench.make_block_mask = lambda mask, B_, H_, S_: mask
    torch.cuda.synchronize = lambda *args: None
    if not hasattr(torch, "_dynamo"):
        torch._dynamo = types.SimpleNamespace(reset=lambda: None)
    prepared = os.path.join(work, "prepared")
    scratch = os.path.join(work, "scratch")
    os.makedirs(scratch)
    for variant, source in bench.backward_bundles():
        path = bench.backward_bundle_path(prepared, "cpu", D, variant)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([attnc, "compile", os.path.join(ROOT, source),
                        "--variant", variant, "--head-dim", str(D),
                        "--dtype", "bf16", "--backward", "--lse", "-o",
                        path[:-len(".attnpkg")]], check=True)
    a = bench.parse_args(["--quick", "--arch", "cpu", "--head-dim", str(D),
                          "--prepared", prepared, "--scratch", scratch])
    w = bench.Worker.__new__(bench.Worker)
    w.emit, w.attnrt, w.args = (lambda record: None), attnrt, a
    w.flex, w.flex_error, w.dev = fake_flex, None, "cpu"
    rows = []
    for spec in bench.BACKWARD:
        row = bench.summarize(w.run_backward(spec, ["b_attnc", "b_flex"],
                                             None))
        rows.append(row)
        print(bench.one_line(row))
        want = ["err_%s_%s" % (k, g) for k in ("b_attnc", "b_flex",
                                               "attnc_vs_flex")
                for g in bench.BACKWARD_GRADS]
        want += ["b_attnc_ms", "b_attnc_fwd_ms", "b_flex_ms", "b_flex_fwd_ms",
                 "b_attnc_tflops", "b_flex_tflops", "attnc_vs_flex",
                 "b_attnc_bwd_over_fwd", "b_flex_bwd_over_fwd"]
        missing = [f for f in want if row.get(f) is None]
        if row["status"] != "ok" or row.get("status_b_flex") != "ok" \
                or missing or row["errors"]:
            fails.append("%s: the worker's stages on the CPU: status %s, "
                         "flex %s, missing %s, errors %s, notes %s" % (
                             spec.name, row["status"],
                             row.get("status_b_flex"), missing,
                             row["errors"], row["notes"]))
    if os.listdir(scratch):
        fails.append("flex's stage left attnc's gradients in --scratch")
    text = "\n".join(bench.backward_markdown(a, rows))
    print(text.split("\n\n")[2].split("\n")[0])
    if "| ok |" not in text or text.count("| ok |") != len(rows):
        fails.append("the backward table:\n" + text)


def check_flops(fails):
    row = dict(bench.backward_placeholder("dense_bwd", bench.parse_args([])))
    B_, H_, S_, D_ = row["B"], row["H"], row["S"], row["D"]
    fwd = 4 * B_ * H_ * S_ * S_ * D_
    if bench.BACKWARD_FLOPS * fwd != 2.5 * 2 * (D_ + D_) * B_ * H_ * S_ * S_:
        fails.append("backward FLOPs are not 2.5x the forward's")
    print("dense_bwd at %d,%d,%d, D=%d: forward %.1f TFLOP, backward %.1f "
          "TFLOP" % (B_, H_, S_, D_, fwd / 1e12,
                     bench.BACKWARD_FLOPS * fwd / 1e12))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    fails = []
    check_chunking(fails)
    check_flops(fails)
    with tempfile.TemporaryDirectory() as work:
        check_attnc(sys.argv[1], work, fails)
        check_stages(sys.argv[1], work, fails)
    for f in fails:
        print("FAIL: " + f, file=sys.stderr)
    print("backward section on the CPU: %s" % ("FAILED" if fails else "ok"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
