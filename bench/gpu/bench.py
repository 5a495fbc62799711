#!/usr/bin/env python3
"""The GPU benchmark: attnc kernels against FlexAttention and SDPA.

For each variant of the catalog below, on the same bf16 inputs [B, H, S, D]:
attnc (an AOT bundle from bench/gpu/prepare.sh, launched through attnrt),
torch.compile(flex_attention) with the same math as score_mod/mask_mod, and
F.scaled_dot_product_attention where it computes the variant (dense,
causal). Every output is first compared with a float32 reference, then timed
with CUDA events (median). See docs/benchmarks.md, "GPU (bench/gpu)".

    bash bench/gpu/run.sh [--quick] [--only causal,alibi]   # on the GPU machine
    python3 bench/gpu/bench.py --list                       # anywhere, no torch

The driver process needs no torch: it runs the variants in a worker process
and starts a new one after a crash, a hang or a lost CUDA context, so one
broken kernel costs one row, not the run.
"""
import argparse
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

torch = None  # imported by the worker only: --list and the driver run without it
F = None

DEFAULT_SHAPE = (4, 16, 4096)   # B, H, S; D is --head-dim (128)
QUICK_SHAPE = (1, 2, 256)
EXIT_CUDA_LOST = 3              # worker: the CUDA context is unusable, restart


# ----------------------------------------------------------------------------
# The catalog: the .attn variant attnc compiles, and the same math for flex
# and for the reference. Mods are written once with torch ops that work both
# on flex's scalar index tensors and on the reference's broadcast index grids;
# .attn `/` and `%` on integers are floor division and modulo, like torch's
# `//` and `%`. Params are the .attn defaults except where a default would
# make the variant plain causal at the benchmark's length (window, chunk):
# those scale with S and are listed in the results.

@dataclasses.dataclass
class Case:
    params: dict = dataclasses.field(default_factory=dict)    # attnc runtime params
    captures: dict = dataclasses.field(default_factory=dict)  # attnc captured tensors
    score: object = None       # score_mod(s, b, h, q, kv); s is already scaled
    mask: object = None        # mask_mod(b, h, q, kv), True keeps
    normalize: str = "softmax"
    sink: object = None        # [Hq] logits joining the softmax denominator


@dataclasses.dataclass
class Spec:
    name: str
    priority: str
    source: str                # .attn file, relative to the repository root
    variant: str               # variant name inside it (and the bundle's name)
    build: object              # build(ctx) -> Case
    flex: bool = True          # False: flex cannot express it (normalizer, sink)
    sdpa: str = ""             # "dense" or "causal": SDPA computes it too
    shape: tuple = None        # (B, H, S) instead of the default
    quick_shape: tuple = None


class Ctx:
    """Sizes, device and a seeded generator for one variant's inputs."""

    def __init__(self, B, H, S, D, seed, dev="cuda"):
        self.B, self.H, self.D = B, H, D
        self.Sq = self.Skv = self.S = S
        self.dev = dev
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        x = torch.randn(*shape, generator=self.gen) * scale + shift
        return x.to(self.dev, torch.float32)

    def i32(self, x):
        return x.to(self.dev, torch.int32)

    def heads(self):
        return torch.arange(self.H)


def _causal(b, h, q, kv):
    return kv <= q


def _grid(S):
    """rows x cols = S with rows a power of two near sqrt(S)."""
    rows = 1 << ((S.bit_length() - 1) // 2)
    return rows, S // rows


def _documents(c, count):
    """Doc ids [B, S]: `count` documents of random lengths per sequence."""
    ids = torch.zeros(c.B, c.S, dtype=torch.int32)
    for b in range(c.B):
        cuts = torch.randperm(c.S - 1, generator=c.gen)[:count - 1] + 1
        ids[b, cuts] = 1
    return c.i32(ids.cumsum(1))


def b_dense(c):
    return Case()


def b_causal(c):  # examples/causal.attn: bottom-right (same as top-left at Sq == Skv)
    off = c.Skv - c.Sq
    return Case(mask=lambda b, h, q, kv: kv <= q + off)


def b_sliding_sink(c):
    window, sinks, cap = c.Skv // 4, 4, 30.0
    return Case(
        params=dict(window=window, sinks=sinks),
        score=lambda s, b, h, q, kv: cap * torch.tanh(s / cap),
        mask=lambda b, h, q, kv: ((kv <= q) & (q - kv < window)) | (kv < sinks))


def b_document_mask(c):
    qdoc = _documents(c, 8)
    kdoc = qdoc.clone()
    off = c.Skv - c.Sq
    return Case(captures=dict(qdoc=qdoc, kdoc=kdoc),
                mask=lambda b, h, q, kv:
                (qdoc[b, q] == kdoc[b, kv]) & (kv <= q + off))


def b_alibi(c):
    H = c.H

    def score(s, b, h, q, kv):
        slope = torch.exp2(-8.0 * (h + 1).to(torch.float32) / H)
        return s - slope * (q - kv).to(torch.float32)
    return Case(score=score, mask=_causal)


def b_softcap(c):
    cap = 50.0
    return Case(params=dict(cap=cap),
                score=lambda s, b, h, q, kv: cap * torch.tanh(s / cap),
                mask=_causal)


def b_prefix_lm(c):
    plen = c.i32(torch.randint(c.S // 8, c.S // 2 + 1, (c.B,), generator=c.gen))
    return Case(captures=dict(plen=plen),
                mask=lambda b, h, q, kv: (kv <= q) | (kv < plen[b]))


def b_streaming(c):
    window, sinks, off = c.Skv // 4, 4, c.Skv - c.Sq

    def mask(b, h, q, kv):
        qa = q + off
        return (kv <= qa) & ((qa - kv < window) | (kv < sinks))
    return Case(params=dict(window=window, sinks=sinks), mask=mask)


def b_strided(c):
    local, stride, blk = 256, 8, 64
    return Case(params=dict(local=local, stride=stride, blk=blk),
                mask=lambda b, h, q, kv:
                (kv <= q) & ((q - kv < local) | ((kv // blk) % stride == 0)))


def b_chunk_anchor(c):
    chunk = c.Skv // 4
    return Case(params=dict(chunk=chunk),
                mask=lambda b, h, q, kv:
                (kv <= q) & ((q // chunk == kv // chunk) | (kv < chunk)))


def b_steering(c):
    emph = c.i32(torch.rand(c.B, c.S, generator=c.gen) < 0.1)
    steer = c.i32(c.heads() % 2 == 0)
    alpha = 0.01
    log_alpha = math.log(alpha)
    return Case(params=dict(alpha=alpha), captures=dict(emph=emph, steer=steer),
                score=lambda s, b, h, q, kv: torch.where(
                    (steer[h] != 0) & (emph[b, kv] == 0), s + log_alpha, s))


def b_learned_sink(c):
    sink = c.randn(c.H, shift=1.0)
    return Case(captures=dict(sink_logit=sink), mask=_causal, sink=sink)


def b_per_head_window(c):
    hs = c.heads()
    alpha = (64.0 * (1 + hs % 4)).to(c.dev, torch.float32)
    beta = (0.03125 * (hs % 3)).to(c.dev, torch.float32)
    retrieval = c.i32(hs % 8 == 0)
    sinks, Skv, off = 64, c.Skv, c.Skv - c.Sq

    def mask(b, h, q, kv):
        qa = q + off
        w = (alpha[h] + beta[h] * float(Skv)).to(torch.int32)  # int(): truncates
        return (kv <= qa) & ((retrieval[h] != 0) | (qa - kv < w) | (kv < sinks))
    return Case(params=dict(sinks=sinks),
                captures=dict(alpha=alpha, beta=beta, retrieval=retrieval),
                mask=mask)


def b_shifted_groups(c):
    G, sinks, Hq, Skv = c.Skv // 2, 0, c.H, c.Skv

    def mask(b, h, q, kv):
        sh = (h >= Hq // 2).to(torch.int32) * (G // 2)
        qs, ks = (q - sh) % Skv, (kv - sh) % Skv
        return (((qs // G) == (ks // G)) & (ks <= qs)) | ((kv < sinks) & (kv <= q))
    return Case(params=dict(G=G, sinks=sinks), mask=mask)


def b_t5_bias(c):
    rel = c.randn(32, c.H, scale=0.5)
    log8 = math.log(8.0)

    def score(s, b, h, q, kv):
        n = (q - kv).clamp(min=0)
        far = 16 + (torch.log(n.clamp(min=16).to(torch.float32) / 16.0)
                    / log8 * 16.0).to(torch.int32)
        return s + rel[torch.where(n < 16, n, far.clamp(max=31)), h]
    return Case(captures=dict(rel=rel), score=score, mask=_causal)


def b_decay(c):
    lam = (1.0 - torch.exp2(-torch.linspace(5.0, 12.0, c.H))).to(c.dev)
    return Case(captures=dict(lam=lam),
                score=lambda s, b, h, q, kv:
                s + torch.log(lam[h]) * (q - kv).to(torch.float32),
                mask=_causal)


def b_neighborhood_2d(c):
    rows, cols = _grid(c.S)
    dil, k = 1, 7

    def mask(b, h, q, kv):
        qr, qc, kr, kc = q // cols, q % cols, kv // cols, kv % cols
        # clamp(x, 0, hi) as written in the .attn file: min(max(x, 0), hi)
        r0 = torch.minimum((qr // dil - k // 2).clamp(min=0),
                           (rows - qr % dil + dil - 1) // dil - k)
        c0 = torch.minimum((qc // dil - k // 2).clamp(min=0),
                           (cols - qc % dil + dil - 1) // dil - k)
        return ((kr % dil == qr % dil) & (kc % dil == qc % dil)
                & (kr // dil >= r0) & (kr // dil < r0 + k)
                & (kc // dil >= c0) & (kc // dil < c0 + k))
    return Case(params=dict(rows=rows, cols=cols, dil=dil), mask=mask)


def b_dilated_window(c):
    r, window = 4, c.Skv // 4
    return Case(params=dict(r=r, window=window),
                mask=lambda b, h, q, kv:
                (kv <= q) & (q - kv < window) & (kv % r == q % r))


def b_criss_cross(c):
    cols = _grid(c.S)[1]
    return Case(params=dict(cols=cols),
                mask=lambda b, h, q, kv:
                (q // cols == kv // cols) | (q % cols == kv % cols))


def b_top_theta(c):
    theta = torch.linspace(-1.5, 0.5, c.H).to(c.dev)
    return Case(captures=dict(theta=theta),
                score=lambda s, b, h, q, kv:
                torch.where(s >= theta[h], s, float("-inf")),
                mask=_causal)


def b_sigmoid(c):
    log_n = math.log(float(c.Skv))
    return Case(normalize="sigmoid", score=lambda s, b, h, q, kv: s - log_n)


def b_relu(c):
    return Case(normalize="relu",
                score=lambda s, b, h, q, kv: s / (q + 1).to(torch.float32),
                mask=_causal)


def b_relu2(c):
    Skv = float(c.Skv)
    return Case(normalize="relu2", score=lambda s, b, h, q, kv: s / Skv)


def b_softplus(c):
    return Case(normalize="softplus",
                score=lambda s, b, h, q, kv:
                torch.log((q + 2).to(torch.float32)) * s,
                mask=_causal)


EX = "examples/"
CATALOG = [
    Spec("dense", "P0", "bench/cpu/variants.attn", "dense", b_dense,
         sdpa="dense"),
    Spec("causal", "P0", EX + "causal.attn", "causal", b_causal, sdpa="causal"),
    # The target: dense d=128 at 16k, >= 700 TFLOP/s on an H200.
    Spec("dense_16k", "P0", "bench/cpu/variants.attn", "dense", b_dense,
         sdpa="dense", shape=(1, 16, 16384), quick_shape=(1, 2, 512)),
    Spec("sliding_sink", "P0", EX + "sliding_sink.attn", "sliding_sink",
         b_sliding_sink),
    Spec("document_mask", "P0", EX + "document_mask.attn", "packed_docs",
         b_document_mask),
    Spec("alibi", "P0", EX + "alibi.attn", "alibi", b_alibi),
    Spec("softcap", "P0", EX + "softcap.attn", "softcap", b_softcap),
    Spec("prefix_lm", "P0", EX + "prefix_lm.attn", "prefix_lm", b_prefix_lm),
    Spec("streaming", "P0", EX + "streaming.attn", "streaming", b_streaming),
    Spec("strided", "P0", EX + "strided.attn", "strided", b_strided),
    Spec("chunk_anchor", "P0", EX + "chunk_anchor.attn", "chunk_anchor",
         b_chunk_anchor),
    Spec("steering", "P0", EX + "steering.attn", "pasta", b_steering),
    # flex has no sink logit in its denominator.
    Spec("learned_sink", "P0", EX + "learned_sink.attn", "learned_sink",
         b_learned_sink, flex=False),
    Spec("per_head_window", "P1", EX + "per_head_window.attn", "moa",
         b_per_head_window),
    Spec("shifted_groups", "P1", EX + "shifted_groups.attn", "s2_attn",
         b_shifted_groups),
    Spec("t5_bias", "P1", EX + "t5_bias.attn", "t5_bias", b_t5_bias),
    Spec("decay", "P1", EX + "decay.attn", "decay", b_decay),
    Spec("neighborhood_2d", "P1", EX + "neighborhood_2d.attn", "na2d",
         b_neighborhood_2d),
    Spec("dilated_window", "P1", EX + "dilated_window.attn", "dilated",
         b_dilated_window),
    Spec("criss_cross", "P1", EX + "criss_cross.attn", "criss_cross",
         b_criss_cross),
    Spec("top_theta", "P1", EX + "top_theta.attn", "top_theta", b_top_theta),
    # flex always normalizes with softmax: attnc and the reference only.
    Spec("sigmoid", "P1", EX + "sigmoid.attn", "flash_sigmoid", b_sigmoid,
         flex=False),
    Spec("relu", "P1", EX + "relu.attn", "relu_attn", b_relu, flex=False),
    Spec("relu2", "P1", EX + "relu.attn", "relu2_attn", b_relu2, flex=False),
    Spec("softplus", "P1", EX + "softplus.attn", "softplus_attn", b_softplus,
         flex=False),
]
BY_NAME = {s.name: s for s in CATALOG}


def select(only):
    if not only:
        return list(CATALOG)
    names = [n for part in only for n in part.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        sys.exit("unknown variant(s) %s; known: %s"
                 % (", ".join(unknown), ", ".join(BY_NAME)))
    return [BY_NAME[n] for n in names]


def check_catalog():
    """Every entry names an existing .attn file that defines its variant."""
    bad = []
    for s in CATALOG:
        path = os.path.join(ROOT, s.source)
        if not os.path.exists(path):
            bad.append("%s: %s does not exist" % (s.name, s.source))
        elif not re.search(r"\bvariant\s+%s\s*\{" % re.escape(s.variant),
                           open(path).read()):
            bad.append("%s: %s has no variant %s" % (s.name, s.source,
                                                     s.variant))
    return bad


# ----------------------------------------------------------------------------
# The worker: inputs, reference, the three implementations, timing.

def reference(case, q, k, v):
    """float32 attention on the GPU, chunked over queries; also the number of
    kept (unmasked) entries, for the FLOP count."""
    B, H, Sq, D = q.shape
    Skv, Dv = k.shape[2], v.shape[3]
    dev = q.device
    out = torch.empty(B, H, Sq, Dv, dtype=torch.float32, device=dev)
    kept = torch.zeros((), dtype=torch.int64, device=dev)
    chunk = max(16, min(Sq, (1 << 26) // (H * Skv)))
    h_idx = torch.arange(H, device=dev).view(H, 1, 1)
    kv_idx = torch.arange(Skv, device=dev).view(1, 1, Skv)
    scale = 1.0 / math.sqrt(D)
    sink = case.sink.view(H, 1, 1) if case.sink is not None else None
    for b in range(B):
        kf, vf = k[b].float(), v[b].float()
        b_idx = torch.full((1, 1, 1), b, device=dev)
        for q0 in range(0, Sq, chunk):
            q_idx = torch.arange(q0, min(Sq, q0 + chunk), device=dev).view(1, -1, 1)
            s = torch.matmul(q[b, :, q0:q0 + chunk].float(), kf.transpose(1, 2))
            s = s * scale
            if case.score is not None:
                s = case.score(s, b_idx, h_idx, q_idx, kv_idx).expand(s.shape)
            if case.mask is not None:
                keep = case.mask(b_idx, h_idx, q_idx, kv_idx).expand(s.shape)
                kept += keep.sum()
                s = s.masked_fill(~keep, float("-inf"))
            else:
                kept += s.numel()
            out[b, :, q0:q0 + chunk] = torch.matmul(_normalize(case, s, sink), vf)
    return out, kept.item() / (B * H * Sq * Skv)


def _normalize(case, s, sink):
    """Row weights from final scores; masked entries are -inf and weigh 0,
    and a row with nothing kept is all zeros."""
    kind = case.normalize
    if kind == "sigmoid":
        return torch.sigmoid(s)
    if kind == "relu":
        return s.clamp(min=0)
    if kind == "relu2":
        return s.clamp(min=0) ** 2
    if kind == "softplus":
        p = F.softplus(s)
    else:
        m = s.amax(-1, keepdim=True)
        if sink is not None:
            m = torch.maximum(m, sink)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m)
    total = p.sum(-1, keepdim=True)
    if kind == "softmax" and sink is not None:
        total = total + torch.exp(sink - m)
    return p / torch.where(total == 0, torch.ones_like(total), total)


def median_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True),
               torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def cuda_alive():
    """False once a kernel fault has poisoned the context (sticky error)."""
    try:
        torch.cuda.synchronize()
        torch.ones(1, device="cuda").sum().item()
        return True
    except Exception:
        return False


def max_error(o, ref):
    return (o.float() - ref).abs().max().item()


def make_block_mask(mask, B, H, S):
    from torch.nn.attention.flex_attention import create_block_mask
    try:  # compiled: never materializes the B*H*S*S mask
        return create_block_mask(mask, B, H, S, S, device="cuda", _compile=True)
    except TypeError:  # a torch without the private flag
        return create_block_mask(mask, B, H, S, S, device="cuda")


class Worker:
    def __init__(self, args, emit):
        global torch, F
        self.emit = emit  # progress lines for the driver
        import torch as torch_module
        import torch.nn.functional as functional
        torch, F = torch_module, functional
        sys.path.insert(0, args.prepared)           # the attnrt.py prepared
        sys.path.append(os.path.join(ROOT, "python"))  # else the tree's
        import attnrt
        self.attnrt = attnrt
        self.args = args
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        # The reference is true float32: no TF32 in its matmuls (torch's
        # default; this setter exists in every torch with flex).
        torch.set_float32_matmul_precision("highest")
        # Without flex, attnc and SDPA are still measured.
        self.flex, self.flex_error = None, None
        try:
            from torch.nn.attention.flex_attention import flex_attention
            import torch._dynamo
            # Each variant's mods are a new compilation of flex_attention;
            # past the recompile limit dynamo would silently run it eagerly.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 64)
            self.flex = torch.compile(flex_attention, dynamic=False,
                                      mode=args.flex_mode or None)
        except Exception as e:
            self.flex_error = "%s: %s" % (type(e).__name__, e)

    def meta(self):
        props = torch.cuda.get_device_properties(0)
        info = dict(device=props.name,
                    capability="%d.%d" % (props.major, props.minor),
                    sms=props.multi_processor_count,
                    torch=torch.__version__, cuda=torch.version.cuda,
                    arch=self.args.arch)
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            pass
        return info

    def run(self, spec, deadline):
        """One row; never raises."""
        a = self.args
        B, H, S = shape_of(spec, a)
        D = a.head_dim
        row = dict(name=spec.name, priority=spec.priority, source=spec.source,
                   variant=spec.variant, B=B, H=H, S=S, D=D, errors={},
                   notes=[], status="ok")
        try:
            ctx = Ctx(B, H, S, D, seed=1 + CATALOG.index(spec))
            g = torch.Generator(device="cuda").manual_seed(0)
            q, k, v = (torch.randn(B, H, S, D, generator=g, device="cuda",
                                   dtype=torch.bfloat16) for _ in range(3))
            case = spec.build(ctx)
            row["params"] = case.params
            t = time.time()
            ref, density = reference(case, q, k, v)
            row["reference_s"] = round(time.time() - t, 2)
        except Exception as e:
            return self.failed(row, "setup", e)
        ref_max = ref.abs().max().item()
        bound = a.tol * max(ref_max, 1e-30)
        flops = 2 * (D + D) * B * H * S * S * density
        row.update(density=density, flops=flops,
                   dense_flops=2 * (D + D) * B * H * S * S,
                   ref_max=ref_max, bound=bound)
        runs = {}

        # attnc
        try:
            path = os.path.join(a.prepared, "bundles", a.arch, "d%d" % D,
                                spec.variant + ".attnpkg")
            kernel = self.attnrt.load(path).kernel(spec.variant)
            if kernel.info["head_dim"] != D:
                raise RuntimeError(
                    "%s was compiled for D=%d; run prepare.sh with HEAD_DIMS=%d"
                    % (path, kernel.info["head_dim"], D))
            o = torch.empty(B, H, S, kernel.info["value_head_dim"],
                            dtype=torch.bfloat16, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            kwargs = dict(case.params, **case.captures)

            def run_attnc():
                return kernel(q, k, v, o=o, stream=stream, **kwargs)
            o.fill_(float("nan"))  # a kernel that writes nothing must not pass
            run_attnc()
            torch.cuda.synchronize()
            row["err_attnc"] = max_error(o, ref)
            runs["attnc"] = run_attnc
            self.emit(dict(event="partial", **row))
        except Exception as e:
            self.failed(row, "attnc", e)
            if not cuda_alive():
                row["notes"].append("CUDA context lost after the attnc launch")
                return row

        # flex: block mask and compilation outside the timing
        left = deadline - time.time() if deadline else float("inf")
        if not spec.flex:
            row["notes"].append("flex: not expressible (normalizer or sink)")
        elif a.no_flex:
            pass
        elif self.flex is None:
            row["notes"].append("flex unavailable: " + self.flex_error)
        elif left < a.flex_reserve_s:
            row["notes"].append("flex skipped: %.0f s left of the time budget" % left)
        else:
            try:
                torch._dynamo.reset()
                block_mask = None
                if case.mask is not None:
                    t = time.time()
                    block_mask = make_block_mask(case.mask, B, H, S)
                    torch.cuda.synchronize()
                    row["block_mask_s"] = round(time.time() - t, 2)

                def run_flex():
                    return self.flex(q, k, v, score_mod=case.score,
                                     block_mask=block_mask)
                t = time.time()
                out = run_flex()
                torch.cuda.synchronize()
                row["flex_compile_s"] = round(time.time() - t, 2)
                row["err_flex"] = max_error(out, ref)
                del out
                runs["flex"] = run_flex
            except Exception as e:
                self.failed(row, "flex", e, fails_row=False)

        # SDPA: its causal is top-left; the same as ours at Sq == Skv.
        if spec.sdpa:
            try:
                causal = spec.sdpa == "causal"

                def run_sdpa():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                out = run_sdpa()
                torch.cuda.synchronize()
                row["err_sdpa"] = max_error(out, ref)
                del out
                runs["sdpa"] = run_sdpa
            except Exception as e:
                self.failed(row, "sdpa", e, fails_row=False)
        del ref
        self.emit(dict(event="partial", **row))  # what a crash below keeps

        for name, fn in runs.items():
            try:
                ms = median_ms(fn, a.warmup, a.iters)
                row[name + "_ms"] = ms
                row[name + "_tflops"] = flops / (ms * 1e-3) / 1e12
                self.emit(dict(event="partial", **row))
            except Exception as e:
                self.failed(row, name + " timing", e, fails_row=name == "attnc")
                if not cuda_alive():
                    row["notes"].append("CUDA context lost while timing " + name)
                    return row
        if row.get("attnc_ms") and row.get("flex_ms"):
            row["attnc_vs_flex"] = row["flex_ms"] / row["attnc_ms"]
        if row.get("attnc_ms") and row.get("sdpa_ms"):
            row["attnc_vs_sdpa"] = row["sdpa_ms"] / row["attnc_ms"]

        err = row.get("err_attnc")
        if err is None or not math.isfinite(err) or err > bound:
            row["status"] = "FAIL"
            if err is not None:
                row["notes"].append("attnc error %.3g above the bound %.3g"
                                    % (err, bound))
        for other in ("flex", "sdpa"):
            e = row.get("err_" + other)
            if e is not None and not (math.isfinite(e) and e <= bound):
                row["notes"].append("%s error %.3g above the bound %.3g"
                                    % (other, e, bound))
        torch.cuda.empty_cache()
        return row

    @staticmethod
    def failed(row, what, e, fails_row=True):
        traceback.print_exc()
        argument = getattr(e, "argument", "")  # attnrt.Error names it
        row["errors"][what] = "%s: %s%s" % (
            type(e).__name__, e, " (argument %s)" % argument if argument else "")
        if fails_row:
            row["status"] = "FAIL"
        return row


def shape_of(spec, a):
    if a.quick:
        return spec.quick_shape or QUICK_SHAPE
    if a.shape:
        return tuple(int(x) for x in a.shape.split(","))
    return spec.shape or DEFAULT_SHAPE


def worker_main(a):
    def emit(record):
        with open(a.rows_file, "a") as f:
            f.write(json.dumps(record) + "\n")
    try:
        w = Worker(a, emit)
        emit(dict(event="meta", **w.meta()))
    except Exception as e:
        traceback.print_exc()
        emit(dict(event="fatal", error="%s: %s" % (type(e).__name__, e)))
        return 1
    for spec in select(a.only):
        emit(dict(event="start", name=spec.name))
        if a.deadline and time.time() > a.deadline - 10:
            row = dict(placeholder(spec.name, a), status="skipped",
                       notes=["not run: time budget spent"])
        else:
            row = w.run(spec, a.deadline)
        emit(dict(event="row", **row))
        print(one_line(row), flush=True)
        if not cuda_alive():
            return EXIT_CUDA_LOST
    return 0


# ----------------------------------------------------------------------------
# The driver: workers, time limits, results.

def drive(a):
    os.makedirs(a.out, exist_ok=True)
    started = time.time()
    deadline = started + a.budget_s if a.budget_s else None
    pending = [s.name for s in select(a.only)]
    rows, meta = [], {}
    rows_file = os.path.join(a.out, "events.jsonl")  # worker -> driver

    def record(row):
        rows.append(row)
        pending.remove(row["name"])
        write_results(a, meta, rows, started)

    while pending:
        if deadline and time.time() > deadline - 10:
            for name in list(pending):
                record(dict(placeholder(name, a), status="skipped",
                            notes=["not run: time budget spent"]))
            break
        open(rows_file, "w").close()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker",
               "--rows-file", rows_file, "--only", ",".join(pending)]
        cmd += forwarded(a, deadline)
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            current, partial, killed, progressed = watch(a, proc, rows_file,
                                                        deadline, meta, record)
        except BaseException:  # Ctrl-C: the worker has its own session
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        if current:  # the worker died or was killed inside this variant
            why = killed or "worker died, exit status %s" % proc.returncode
            partial["notes"] = partial.get("notes", []) + [why]
            record(dict(partial, status="TIMEOUT" if killed else "CRASH"))
        elif not killed and not progressed:
            for name in list(pending):  # it cannot start: do not loop
                record(dict(placeholder(name, a), status="ERROR",
                            notes=["worker failed: %s" % meta.get(
                                "fatal", "exit status %s" % proc.returncode)]))
    write_results(a, meta, rows, started)
    print()
    print(markdown(a, meta, rows, started))
    return 1 if any(r["status"] not in ("ok", "skipped") for r in rows) else 0


def watch(a, proc, rows_file, deadline, meta, record):
    """Follows one worker until it exits or is killed; returns the variant
    it was in (None between variants), that variant's partial row, why it
    was killed, and whether it finished any variant."""
    current, since, seen, progressed = None, 0.0, 0, False
    partial, killed = {}, None
    while True:
        done = proc.poll() is not None
        with open(rows_file) as f:
            lines = f.read().split("\n")[:-1]  # complete lines only
        for line in lines[seen:]:
            event = json.loads(line)
            kind = event.pop("event")
            if kind == "meta":
                meta.update(event)
            elif kind == "fatal":
                meta["fatal"] = event["error"]
            elif kind == "start":
                current, since = event["name"], time.time()
                partial = placeholder(current, a)
            elif kind == "partial":
                partial = event
            elif kind == "row":
                record(event)
                current, progressed = None, True
        seen = len(lines)
        if done:
            return current, partial, killed, progressed
        now = time.time()
        if current and now - since > a.variant_timeout_s:
            killed = "killed after %d s" % a.variant_timeout_s
        elif deadline and now > deadline + 20:
            killed = "killed: time budget spent"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return current, partial, killed, progressed
        time.sleep(0.5)


def forwarded(a, deadline):
    out = ["--arch", a.arch, "--prepared", a.prepared,
           "--head-dim", str(a.head_dim), "--iters", str(a.iters),
           "--warmup", str(a.warmup), "--tol", str(a.tol),
           "--flex-reserve-s", str(a.flex_reserve_s)]
    if deadline:
        out += ["--deadline", repr(deadline)]
    if a.quick:
        out.append("--quick")
    if a.shape:
        out += ["--shape", a.shape]
    if a.no_flex:
        out.append("--no-flex")
    if a.flex_mode:
        out += ["--flex-mode", a.flex_mode]
    return out


def placeholder(name, a):
    spec = BY_NAME[name]
    B, H, S = shape_of(spec, a)
    return dict(name=name, priority=spec.priority, source=spec.source,
                variant=spec.variant, B=B, H=H, S=S, D=a.head_dim,
                errors={}, notes=[])


def fmt(x, spec):
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def one_line(r):
    return ("%-16s %-8s attnc %s ms (err %s)  flex %s ms (err %s)  sdpa %s ms"
            % (r["name"], r["status"], fmt(r.get("attnc_ms"), ".3f"),
               fmt(r.get("err_attnc"), ".2e"), fmt(r.get("flex_ms"), ".3f"),
               fmt(r.get("err_flex"), ".2e"), fmt(r.get("sdpa_ms"), ".3f")))


def markdown(a, meta, rows, started):
    lines = ["# GPU benchmark: attnc vs FlexAttention vs SDPA", ""]
    if meta:
        lines.append("Device: %s (sm %s, %s SMs); torch %s, CUDA %s, Triton %s; "
                     "attnc bundles for %s" % (
                         meta.get("device"), meta.get("capability"),
                         meta.get("sms"), meta.get("torch"), meta.get("cuda"),
                         meta.get("triton", "-"), meta.get("arch")))
    prepared = os.path.join(a.prepared, "PREPARED")
    if os.path.exists(prepared):
        lines.append("Bundles: " + open(prepared).read().strip()
                     .replace("\n", "; "))
    lines += ["",
              "bf16 inputs, D = %d; times are medians of %d CUDA-event-timed "
              "launches after %d warm-up; TFLOP/s count 4*B*H*S*S*D * density "
              "(the fraction of unmasked entries); errors are max |o - ref| "
              "against float32 math, FAIL above %.0e * max|ref|."
              % (a.head_dim, a.iters, a.warmup, a.tol), "",
              "| variant | B,H,S | density | attnc ms | flex ms | sdpa ms | "
              "attnc TFLOP/s | flex TFLOP/s | attnc/flex | max err attnc | "
              "max err flex | max err sdpa | flex compile s | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %d,%d,%d | %s | %s | %s | %s | %s | %s | %s | %s "
                     "| %s | %s | %s | %s |" % (
                         r["name"], r["B"], r["H"], r["S"],
                         fmt(r.get("density"), ".3f"),
                         fmt(r.get("attnc_ms"), ".3f"), fmt(r.get("flex_ms"), ".3f"),
                         fmt(r.get("sdpa_ms"), ".3f"),
                         fmt(r.get("attnc_tflops"), ".1f"),
                         fmt(r.get("flex_tflops"), ".1f"),
                         fmt(r.get("attnc_vs_flex"), ".2f")
                         + ("x" if r.get("attnc_vs_flex") else ""),
                         fmt(r.get("err_attnc"), ".2e"), fmt(r.get("err_flex"), ".2e"),
                         fmt(r.get("err_sdpa"), ".2e"),
                         fmt(r.get("flex_compile_s"), ".1f"), r["status"]))
    target = [r for r in rows if r["name"] == "dense_16k" and r.get("attnc_tflops")]
    if target:
        t = target[0]
        lines += ["", "Issue 6 target, dense D=128 at S=16384 >= 700 TFLOP/s on "
                  "an H200: attnc %.0f TFLOP/s here (D=%d, S=%d)"
                  % (t["attnc_tflops"], t["D"], t["S"])]
    notes = [r for r in rows if r.get("errors") or r.get("notes") or r.get("params")]
    if notes:
        lines += ["", "Notes:", ""]
        for r in notes:
            parts = ["%s=%s" % kv for kv in r.get("params", {}).items()]
            parts = (["params " + ", ".join(parts)] if parts else [])
            parts += r.get("notes", [])
            parts += ["%s: %s" % kv for kv in r.get("errors", {}).items()]
            lines.append("- %s: %s" % (r["name"], "; ".join(parts)))
    lines += ["", "Wall time %.0f s." % (time.time() - started)]
    return "\n".join(lines)


def write_results(a, meta, rows, started):
    def clean(x):  # JSON has no NaN/inf
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(clean(dict(meta=meta, head_dim=a.head_dim, iters=a.iters,
                             warmup=a.warmup, tol=a.tol, rows=rows)), f, indent=1)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(markdown(a, meta, rows, started) + "\n")


def list_catalog():
    print("| name | priority | source | variant | flex | sdpa | shape (B,H,S) |")
    print("|---|---|---|---|---|---|---|")
    for s in CATALOG:
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            s.name, s.priority, s.source, s.variant, "yes" if s.flex else "no",
            s.sdpa or "-", ",".join(map(str, s.shape or DEFAULT_SHAPE))))
    bad = check_catalog()
    for line in bad:
        print("error: " + line, file=sys.stderr)
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true",
                   help="print the catalog and check its .attn files (no torch)")
    p.add_argument("--bundles", action="store_true",
                   help="print 'variant source' per bundle to build (prepare.sh)")
    p.add_argument("--only", action="append", help="variants, comma-separated")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few iterations: a smoke run")
    p.add_argument("--shape", help="B,H,S for every variant")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--arch", default="sm_90a", help="bundle folder: sm_90a|sm_80")
    p.add_argument("--prepared", default=os.path.join(HERE, "out"),
                   help="prepare.sh's output (bundles, libattnrt.so, attnrt.py)")
    p.add_argument("--out", default=os.path.join(HERE, "out", "results"))
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--tol", type=float, default=2e-2,
                   help="FAIL when max |o - ref| > tol * max |ref|")
    p.add_argument("--no-flex", action="store_true")
    p.add_argument("--flex-mode", default="",
                   help="torch.compile mode for flex, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--budget-s", type=float, default=0,
                   help="stop starting work after this many seconds (0: none)")
    p.add_argument("--variant-timeout-s", type=float, default=240)
    p.add_argument("--flex-reserve-s", type=float, default=90,
                   help="skip flex when less than this is left of the budget")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows-file", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.iters is None:
        a.iters = 3 if a.quick else 20
    if a.warmup is None:
        a.warmup = 1 if a.quick else 5
    if a.list:
        return list_catalog()
    if a.bundles:
        for variant, source in dict((s.variant, s.source) for s in CATALOG).items():
            print(variant, source)
        return 0
    if a.worker:
        return worker_main(a)
    return drive(a)


if __name__ == "__main__":
    sys.exit(main())
