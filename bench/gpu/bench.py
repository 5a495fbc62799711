#!/usr/bin/env python3
"""The GPU benchmark: attnc kernels against FlexAttention and SDPA.

For each variant of the catalog below, on the same bf16 inputs [B, H, S, D]:
attnc (an AOT bundle from bench/gpu/prepare.sh, launched through attnrt; on
compute capability 9.x two, TMA loads as "attnc" and cp.async loads as
"attnc cp.async"), torch.compile(flex_attention) with the same math as
score_mod/mask_mod, and F.scaled_dot_product_attention where it computes the
variant (dense, causal). Every output is first compared with a float32
reference, then timed with CUDA events (median). Then the backward section
(issue 20): dq, dk, dv of attnc's backward kernels (bundles compiled
--backward --lse) against flex_attention's backward through autograd, on
six catalog variants, checked against float32 autograd gradients. Then the
decode section
(issue 8): Sq = 1 over long bf16, int8 and fp8e4m3 K/V caches, as bytes of
K/V read per second against a device copy of the same bytes in the same
run. See docs/benchmarks.md, "GPU (bench/gpu)".

    bash bench/gpu/run.sh [--quick] [--only causal,alibi]   # on the GPU machine
    bash bench/gpu/run.sh --only-decode                     # decode only
    bash bench/gpu/run.sh --only-backward                   # backward only
    python3 bench/gpu/bench.py --list                       # anywhere, no torch

The driver process needs no torch: it runs the variants in a worker process
and starts a new one after a crash, a hang or a lost CUDA context, which
goes on with that variant's later stages, so one broken kernel costs its own
column of one row, not the row or the run.
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
    # select: kept(q, k) -> bool [B, H, Sq/N, Skv/N] blocks (DSL.md select,
    # computed here with torch); the mask then also needs its block kept.
    select: object = None
    select_block: int = 0


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


def _select_blocks(q, k, N, rule, arg, eligible):
    """DSL.md select on the inputs: mean-pooled blocks of N tokens, pooled
    scores scaled by 1/sqrt(D); among the eligible key blocks (the mask
    leaves them non-empty) the rule's blocks, plus the diagonal block."""
    B, H, S, D = q.shape
    nb = (S + N - 1) // N

    def pool(x):
        pad = nb * N - S
        xf = F.pad(x.float(), (0, 0, 0, pad)).view(B, H, nb, N, D).sum(3)
        counts = torch.full((nb,), float(N), device=x.device)
        counts[-1] = S - (nb - 1) * N
        return xf / counts.view(1, 1, nb, 1)
    scores = torch.matmul(pool(q), pool(k).transpose(-1, -2)) / math.sqrt(D)
    ok = eligible(nb, q.device).view(1, 1, nb, nb).expand(B, H, nb, nb)
    scores = scores.masked_fill(~ok, float("-inf"))
    # Rank order: higher score first, lower index on ties.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(nb, device=q.device).expand_as(order))
    if rule == "topk":
        kept = rank < int(arg)
    elif rule == "mass":
        p = torch.softmax(scores, dim=-1)
        ranked = torch.gather(p, -1, order)
        before = torch.cumsum(ranked, -1) - ranked
        kept = torch.gather(before < arg, -1, rank)
    else:
        kept = scores > arg
    kept &= ok
    diag = torch.arange(nb, device=q.device)
    kept[:, :, diag, diag] = True
    return kept


def _select_case(N, rule, arg, causal, params):
    def eligible(nb, dev):
        qb = torch.arange(nb, device=dev).view(nb, 1)
        kb = torch.arange(nb, device=dev).view(1, nb)
        return kb <= qb if causal else torch.ones(nb, nb, dtype=torch.bool,
                                                   device=dev)
    return Case(params=params, select_block=N,
                select=lambda q, k: _select_blocks(q, k, N, rule, arg,
                                                   eligible),
                mask=_causal if causal else None)


def b_moba(c):  # examples/select.attn: top-4 past 64-token blocks
    return _select_case(64, "topk", 4, True, {})


def b_flex_prefill(c):
    return _select_case(64, "mass", 0.9, True, {})


def b_block_theta(c):
    return _select_case(64, "above", 0.05, False, {})


def with_selection(case, q, k):
    """The case with its data-dependent blocks folded into the mask."""
    if case.select is None:
        return case
    kept, N, base = case.select(q, k), case.select_block, case.mask

    def mask(b, h, qi, kv):
        keep = kept[b, h, qi // N, kv // N]
        return keep if base is None else keep & base(b, h, qi, kv)
    return dataclasses.replace(case, mask=mask, select=None)


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
    # The issue's target: dense d=128 at 16k, >= 700 TFLOP/s on an H200.
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
    # Data-dependent blocks: attnc's time includes its select pre-pass;
    # flex gets the same blocks as a BlockMask built outside its timing.
    Spec("moba", "P1", EX + "select.attn", "moba", b_moba),
    Spec("flex_prefill", "P1", EX + "select.attn", "flex_prefill",
         b_flex_prefill),
    Spec("block_theta", "P1", EX + "select.attn", "block_theta",
         b_block_theta),
    # flex always normalizes with softmax: attnc and the reference only.
    Spec("sigmoid", "P1", EX + "sigmoid.attn", "flash_sigmoid", b_sigmoid,
         flex=False),
    Spec("relu", "P1", EX + "relu.attn", "relu_attn", b_relu, flex=False),
    Spec("relu2", "P1", EX + "relu.attn", "relu2_attn", b_relu2, flex=False),
    Spec("softplus", "P1", EX + "softplus.attn", "softplus_attn", b_softplus,
         flex=False),
]
BY_NAME = {s.name: s for s in CATALOG}


def select(a):
    """The catalog variants and decode shapes to run: --only names either
    ("decode" for every decode shape); --only-decode and --no-decode pick
    the sections."""
    names = only_names(a)
    if a.only_backward:
        return [], []
    if names and all(n in BACKWARD_BY_NAME or n == "backward"
                     for n in names):
        return [], []
    names = [n for n in names if n not in BACKWARD_BY_NAME
             and n != "backward"]
    if not names:
        specs, dspecs = list(CATALOG), list(DECODE)
    else:
        specs = [BY_NAME[n] for n in names if n in BY_NAME]
        dspecs = [d for d in DECODE if "decode" in names or d.name in names]
    if a.only_decode:
        specs = []
        dspecs = dspecs or list(DECODE)
    if a.no_decode:
        dspecs = []
    return specs, dspecs


def only_names(a):
    """--only's names, checked."""
    names = [n for part in (a.only or []) for n in part.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME and n != "decode"
               and n not in DECODE_BY_NAME and n != "backward"
               and n not in BACKWARD_BY_NAME]
    if unknown:
        sys.exit("unknown variant(s) %s; known: %s, decode, %s, backward, %s"
                 % (", ".join(unknown), ", ".join(BY_NAME),
                    ", ".join(DECODE_BY_NAME), ", ".join(BACKWARD_BY_NAME)))
    return names


def select_backward(a):
    """The backward section's rows: all of them unless --only names some
    ("backward" for all); none with --no-backward or --only-decode, or
    when --only names only other sections' rows."""
    if a.no_backward or a.only_decode:
        return []
    names = only_names(a)
    if not names or "backward" in names or (
            a.only_backward and not any(n in BACKWARD_BY_NAME
                                        for n in names)):
        return list(BACKWARD)
    return [b for b in BACKWARD if b.name in names]


def check_catalog():
    """Every entry names an existing .attn file that defines its variant."""
    bad = []
    entries = [(s.name, s.source, s.variant) for s in CATALOG]
    entries += [(d.name, DECODE_SOURCE, DECODE_VARIANT) for d in DECODE]
    for b in BACKWARD:
        spec = BY_NAME.get(b.catalog)
        if spec is None:
            bad.append("%s: no catalog entry %s" % (b.name, b.catalog))
        elif not spec.flex:
            bad.append("%s: flex cannot express %s" % (b.name, b.catalog))
    for name, source, variant in entries:
        path = os.path.join(ROOT, source)
        if not os.path.exists(path):
            bad.append("%s: %s does not exist" % (name, source))
        elif not re.search(r"\bvariant\s+%s\s*\{" % re.escape(variant),
                           open(path).read()):
            bad.append("%s: %s has no variant %s" % (name, source, variant))
    return bad


# ----------------------------------------------------------------------------
# Decode (issue 8): one query per head over a long K/V cache, the step of
# autoregressive generation. It reads the whole cache once, so its speed is
# a bandwidth: bytes of K/V as stored (codes and scales when quantized) read
# per second, against a device-to-device copy of the same number of bytes
# timed the same way in the same worker (bench/decode.cpp does the same on
# the CPU). Targets: >= 0.85 of the copy bandwidth at Skv = 65536, and int8
# K/V in half of bf16's time.

@dataclasses.dataclass
class DecodeSpec:
    name: str
    shape: tuple               # B, Hq, Hkv, Skv; Sq = 1, D is --head-dim
    quick_shape: tuple


DECODE = [
    DecodeSpec("decode_64k", (1, 32, 8, 65536), (1, 4, 2, 2048)),
    DecodeSpec("decode_b8_16k", (8, 32, 8, 16384), (2, 4, 2, 1024)),
]
DECODE_BY_NAME = {d.name: d for d in DECODE}
DECODE_SOURCE, DECODE_VARIANT = "bench/cpu/variants.attn", "dense"
DECODE_TARGET_SKV, DECODE_TARGET_RATIO = 65536, 0.85
KV_GROUP = 64
# prepare.sh's decode bundles (bench.py --decode-bundles): name, whether
# prepare.sh fails without it, `attnc compile` flags. A bundle that is not
# needed and does not compile leaves NAME.unsupported (attnc's message)
# instead: GPU targets reject --kv-dtype for now.
DECODE_BUNDLES = [
    ("bf16", True, "--split-kv auto"),
    ("bf16-split16", True, "--split-kv 16"),
    ("int8", False, "--kv-dtype int8 --kv-group %d --split-kv auto" % KV_GROUP),
    ("fp8e4m3", False,
     "--kv-dtype fp8e4m3 --kv-group %d --split-kv auto" % KV_GROUP),
]
# attnc's decode columns: bundle, bundle folder ("attnc": --arch, "cpasync":
# --cpasync-bundles), K/V dtype, split-KV parts (the manifest's split_kv:
# 0 for auto).
DECODE_KERNEL_INFO = {
    "d_auto": ("bf16", "attnc", "bf16", 0),
    "d_split16": ("bf16-split16", "attnc", "bf16", 16),
    "d_cpasync": ("bf16", "cpasync", "bf16", 0),
    "d_int8": ("int8", "attnc", "int8", 0),
    "d_fp8e4m3": ("fp8e4m3", "attnc", "fp8e4m3", 0),
}
DECODE_KERNELS = tuple(DECODE_KERNEL_INFO)
DECODE_STAGES = DECODE_KERNELS + ("d_sdpa", "d_flex")
# relative L1 error bounds against float32 attention on the unquantized
# bf16 K/V (issue 8's for the quantized caches)
DECODE_TOL = dict(bf16=5e-3, int8=1.5e-2, fp8e4m3=5e-2)
UNSUPPORTED = "not supported on GPU yet"


# ----------------------------------------------------------------------------
# Backward (issue 20): the gradients dq, dk, dv of L = sum(o * dO) for the
# catalog variants that both attnc's GPU backward and flex_attention's
# backward (softmax, score_mod / mask_mod) compute with the same math, at
# the catalog's shapes. The select rows (moba, flex_prefill, block_theta)
# choose their blocks in torch as the forward rows do (with_selection); the
# choice is a constant of the backward (docs/backward.md), so the reference
# and flex take it as part of their mask, flex's BlockMask built outside its
# timing, while attnc's backward runs its own select pre-pass on the device
# inside its timed call. attnc: a bundle compiled with
# --backward --lse (prepare.sh: backward/<--arch>/d<D>/), its forward with
# lse, then its backward timed alone; flex: torch.compile(flex_attention)
# forward, then torch.autograd.grad of its output timed alone. Both are
# checked against float32 autograd gradients. FLOPs of the backward count
# 2.5x the forward's (FA2's convention: five S x S x D products per kept
# entry, against the forward's two; attnc's recompute of S and dP for dq is
# not counted).

@dataclasses.dataclass
class BackwardSpec:
    name: str                  # the row: <catalog name>_bwd
    catalog: str               # the catalog entry: source, variant, math
    shape: tuple = None        # (B, H, S) instead of the catalog's
    quick_shape: tuple = None


BACKWARD = [BackwardSpec(n + "_bwd", n) for n in (
    "dense", "causal", "sliding_sink", "document_mask", "softcap", "alibi",
    "moba", "flex_prefill", "block_theta")]
BACKWARD_BY_NAME = {b.name: b for b in BACKWARD}
BACKWARD_FLOPS = 2.5           # backward FLOPs / forward FLOPs (FA2-style)
BACKWARD_GRADS = ("dq", "dk", "dv")


def backward_bundle_path(prepared, folder, D, variant):
    return os.path.join(prepared, "backward", folder, "d%d" % D,
                        variant + ".attnpkg")


def backward_bundles():
    """(variant, source) of each backward bundle prepare.sh builds."""
    out = []
    for b in BACKWARD:
        spec = BY_NAME[b.catalog]
        if (spec.variant, spec.source) not in out:
            out.append((spec.variant, spec.source))
    return out


def decode_bundle_path(prepared, folder, D, name):
    return os.path.join(prepared, "decode", folder, "d%d" % D,
                        name + ".attnpkg")


def unsupported_reason(path):
    """prepare.sh's marker for a bundle attnc would not compile: its
    message, or None."""
    marker = path[:-len(".attnpkg")] + ".unsupported"
    if not os.path.exists(marker):
        return None
    lines = [l.strip() for l in open(marker).read().splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l]
    return (errors or lines or ["attnc compile failed"])[0]


# ----------------------------------------------------------------------------
# What a row measures: the stages of a variant, in the order they run, each
# output checked before it is timed. "attnc" is the bundle in
# bundles/<--arch>/ (on sm_90a: TMA loads by a producer warp, prepare.sh's
# --gpu-loads tma); "cpasync" the one in bundles/<--cpasync-bundles>/ (sm_90a
# with --gpu-loads cp.async: every thread copies), run.sh's second attnc
# column on compute capability 9.x.

KERNELS = ("attnc", "cpasync")        # attnc's kernels: they make a row's status
LABEL = dict(attnc="attnc", cpasync="attnc cp.async", flex="flex", sdpa="sdpa",
             setup="setup", d_auto="attnc bf16", d_split16="attnc bf16 split 16",
             d_cpasync="attnc cp.async bf16", d_int8="attnc int8",
             d_fp8e4m3="attnc fp8e4m3", d_sdpa="sdpa bf16", d_flex="flex bf16",
             b_attnc="attnc backward", b_flex="flex backward")
SHORT = dict(attnc="attnc", cpasync="cp.async", d_auto="bf16",
             d_split16="bf16 split 16", d_cpasync="cp.async bf16",
             d_int8="int8", d_fp8e4m3="fp8e4m3", d_sdpa="sdpa", d_flex="flex",
             b_attnc="attnc", b_flex="flex")
BEST = dict(attnc="TMA", cpasync="cp.async")  # which kernel, in a 9.x table
# bounded by --kernel-timeout-s
KERNEL_STAGES = ("attnc", "cpasync", "sdpa") + DECODE_KERNELS + (
    "d_sdpa", "b_attnc")
BACKWARD_KERNELS = ("b_attnc",)
BACKWARD_STAGES = BACKWARD_KERNELS + ("b_flex",)
# counted for --give-up-after
ALL_KERNELS = KERNELS + DECODE_KERNELS + BACKWARD_KERNELS
# stages with a status_<stage>
STATUS_STAGES = KERNELS + DECODE_STAGES + BACKWARD_STAGES
BAD = ("FAIL", "CRASH", "TIMEOUT", "ERROR")
CPASYNC_DIR = "sm_90a-cpasync"  # prepare.sh's folder; run.sh passes it on 9.x
LOADS = {"sm_90a": True, CPASYNC_DIR: False}  # folder: tensor_maps expected


def bundle_path(prepared, folder, D, variant):
    return os.path.join(prepared, "bundles", folder, "d%d" % D,
                        variant + ".attnpkg")


def bundle_kernel(path, variant):
    """The manifest entry of `variant` in an .attnpkg (no torch, no attnrt):
    magic, format and manifest size, then the JSON manifest."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:8] != b"ATTNPKG1":
            raise RuntimeError("%s: not an attnc bundle" % path)
        size = int.from_bytes(head[16:24], "little")
        manifest = json.loads(f.read(size).decode())
    for k in manifest.get("kernels", []):
        if k.get("name") == variant:
            return k
    raise RuntimeError("%s has no kernel %s" % (path, variant))


def check_loads(folder, desc):
    """A bundle in the TMA folder must use TMA and one in the cp.async folder
    must not: the columns are labelled by folder."""
    want = LOADS.get(folder)
    if want is None or "tensor_maps" not in desc:
        return None
    if bool(desc["tensor_maps"]) != want:
        return "%s holds a %s kernel (tensor_maps %s): prepare.sh builds it " \
               "with --gpu-loads %s" % (folder, desc.get("target"),
                                         desc["tensor_maps"],
                                         "tma" if want else "cp.async")
    return None


def decode_loads(folder, desc):
    """check_loads for bf16 K/V; quantized codes always stream by cp.async
    (attnc refuses TMA for them), whatever the folder."""
    if desc.get("kv_dtype", "same") != "same":
        return None
    return check_loads(folder, desc)


def decode_expect(flags):
    """The manifest fields a decode bundle's compile flags should give."""
    words = flags.split()
    opt = dict(zip(words[::2], words[1::2]))
    split = opt.get("--split-kv", "auto")
    return dict(split_kv=0 if split == "auto" else int(split),
                kv_dtype=opt.get("--kv-dtype", "same"))


def check_decode_bundle(path, folder, dd, flags):
    desc = bundle_kernel(path, DECODE_VARIANT)
    if "d%d" % desc.get("head_dim", -1) != dd:
        raise RuntimeError("head_dim %s" % desc.get("head_dim"))
    why = decode_loads(folder, desc)
    if why:
        raise RuntimeError(why)
    for field, want in decode_expect(flags).items():
        if desc.get(field, want) != want:
            raise RuntimeError("%s %s, expected %s (attnc compile %s)"
                               % (field, desc.get(field), want, flags))
    return desc


def check_backward_bundle(path, variant, dd):
    """A backward bundle: its variant at head dim dd, with backward and
    lse."""
    desc = bundle_kernel(path, variant)
    if "d%d" % desc.get("head_dim", -1) != dd:
        raise RuntimeError("head_dim %s" % desc.get("head_dim"))
    for field in ("backward", "lse"):
        if desc.get(field) is not True:
            raise RuntimeError("%s %s: prepare.sh compiles it with "
                               "--backward --lse" % (field, desc.get(field)))
    return desc


def check_prepared(prepared):
    """prepare.sh's last step: every bundle folder has every variant, and
    the sm_90a folders hold the loads their column is named after; the
    decode bundles are there for each folder and head dim (the quantized
    ones, or prepare.sh's note that attnc does not compile them)."""
    bad, count, decode, backward, unsupported = [], 0, 0, 0, []
    variants = sorted(set(s.variant for s in CATALOG))
    root = os.path.join(prepared, "bundles")
    # One backward folder per target (bundles/ has one per load path too).
    targets = sorted(set(f for f in os.listdir(root) if f != CPASYNC_DIR))
    bwd_root = os.path.join(prepared, "backward")
    bwd_folders = os.listdir(bwd_root) if os.path.isdir(bwd_root) else []
    for t in targets:
        if t not in bwd_folders:
            bad.append("backward/%s: missing (an older prepare.sh?)" % t)
    for folder in sorted(os.listdir(root)):
        for dd in sorted(os.listdir(os.path.join(root, folder))):
            for variant in variants:
                path = os.path.join(root, folder, dd, variant + ".attnpkg")
                try:
                    desc = bundle_kernel(path, variant)
                    if "d%d" % desc.get("head_dim", -1) != dd:
                        raise RuntimeError("head_dim %s" % desc.get("head_dim"))
                    why = check_loads(folder, desc)
                    if why:
                        raise RuntimeError(why)
                    count += 1
                except (OSError, ValueError, RuntimeError) as e:
                    bad.append("%s/%s/%s: %s" % (folder, dd, variant, e))
            if folder in bwd_folders:
                for variant, _ in backward_bundles():
                    path = os.path.join(prepared, "backward", folder, dd,
                                        variant + ".attnpkg")
                    try:
                        check_backward_bundle(path, variant, dd)
                        backward += 1
                    except (OSError, ValueError, RuntimeError) as e:
                        bad.append("backward/%s/%s/%s: %s"
                                   % (folder, dd, variant, e))
            for name, needed, flags in DECODE_BUNDLES:
                path = os.path.join(prepared, "decode", folder, dd,
                                    name + ".attnpkg")
                where = "decode/%s/%s/%s" % (folder, dd, name)
                try:
                    why = unsupported_reason(path)
                    if why is not None and not os.path.exists(path):
                        if needed:
                            raise RuntimeError("attnc failed: " + why)
                        unsupported.append(where)
                        continue
                    check_decode_bundle(path, folder, dd, flags)
                    decode += 1
                except (OSError, ValueError, RuntimeError) as e:
                    bad.append("%s: %s" % (where, e))
    for line in bad:
        print("error: " + line, file=sys.stderr)
    print("check-prepared: %d bundles checked (%d of them decode, %d "
          "backward), %d bad" % (count + decode + backward, decode, backward,
                                 len(bad)))
    if unsupported:
        print("check-prepared: %s: %s (bench.py reports them as such)"
              % (UNSUPPORTED, ", ".join(unsupported)))
    return 1 if bad or not count else 0


# ----------------------------------------------------------------------------
# The worker: inputs, reference, attnc's kernels, flex, SDPA, timing.

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


def reference_backward(case, q, k, v, do, chunk_elems=1 << 25):
    """float32 o and the gradients dq, dk, dv of sum(o * do) by autograd
    through the same math as reference(), chunked over queries (dk and dv
    summed over the chunks); also the kept fraction. Runs on q's device
    (the CPU too: bench.py --list checks it there)."""
    B, H, Sq, D = q.shape
    Skv, Dv = k.shape[2], v.shape[3]
    dev = q.device
    out = torch.empty(B, H, Sq, Dv, dtype=torch.float32, device=dev)
    dq = torch.empty(B, H, Sq, D, dtype=torch.float32, device=dev)
    dk = torch.zeros(B, H, Skv, D, dtype=torch.float32, device=dev)
    dv = torch.zeros(B, H, Skv, Dv, dtype=torch.float32, device=dev)
    kept = 0
    # autograd keeps a few [H, chunk, Skv] tensors per chunk
    chunk = max(16, min(Sq, chunk_elems // (H * Skv)))
    h_idx = torch.arange(H, device=dev).view(H, 1, 1)
    kv_idx = torch.arange(Skv, device=dev).view(1, 1, Skv)
    scale = 1.0 / math.sqrt(D)
    sink = case.sink.view(H, 1, 1) if case.sink is not None else None
    for b in range(B):
        b_idx = torch.full((1, 1, 1), b, device=dev)
        for q0 in range(0, Sq, chunk):
            q1 = min(Sq, q0 + chunk)
            q_idx = torch.arange(q0, q1, device=dev).view(1, -1, 1)
            qf = q[b, :, q0:q1].float().requires_grad_()
            kf = k[b].float().requires_grad_()
            vf = v[b].float().requires_grad_()
            with torch.enable_grad():
                s = torch.matmul(qf, kf.transpose(1, 2)) * scale
                if case.score is not None:
                    s = case.score(s, b_idx, h_idx, q_idx, kv_idx).expand(
                        s.shape)
                if case.mask is not None:
                    keep = case.mask(b_idx, h_idx, q_idx, kv_idx).expand(
                        s.shape)
                    kept += keep.sum().item()
                    s = s.masked_fill(~keep, float("-inf"))
                else:
                    kept += s.numel()
                o = torch.matmul(_normalize(case, s, sink), vf)
                gq, gk, gv = torch.autograd.grad(
                    o, (qf, kf, vf), do[b, :, q0:q1].float())
            out[b, :, q0:q1] = o.detach()
            dq[b, :, q0:q1] = gq
            dk[b] += gk
            dv[b] += gv
    return out, (dq, dk, dv), kept / (B * H * Sq * Skv)


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


def median_ms_after(prepare, fn, warmup, iters):
    """median_ms of fn(prepare()): prepare (a forward whose output fn
    differentiates) runs before each start event, untimed; the events
    time fn alone on the same stream."""
    for _ in range(warmup):
        fn(prepare())
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        x = prepare()
        start.record()
        fn(x)
        end.record()
        del x
        times.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in times)


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


def rel_l1(o, ref):
    """sum |o - ref| / sum |ref| (issue 8's accuracy measure)."""
    return ((o.float() - ref).abs().sum() / ref.abs().sum()).item()


def decode_reference(q, k, v):
    """float32 softmax attention of q [B, Hq, 1, D] over k, v
    [B, Hkv, Skv, D]; query head h reads kv head h / (Hq / Hkv)."""
    B, Hq, Sq, D = q.shape
    Hkv, Dv = k.shape[1], v.shape[3]
    out = torch.empty(B, Hq, Sq, Dv, dtype=torch.float32, device=q.device)
    for b in range(B):
        qb = q[b].float().reshape(Hkv, Hq // Hkv * Sq, D)
        s = torch.matmul(qb, k[b].float().transpose(1, 2)) / math.sqrt(D)
        o = torch.matmul(torch.softmax(s, -1), v[b].float())
        out[b] = o.reshape(Hq, Sq, Dv)
    return out


def quantize_kv(k, v, kind, group):
    """Codes and scales in attnc's layout (docs/language.md): K per channel
    for each group of `group` tokens, k_scale [B, Hkv, ceil(Skv/group), D];
    V per token, v_scale [B, Hkv, Skv]; symmetric, scale = amax / max code
    (127 for int8, 448 for fp8e4m3), x = code * scale. fp8 codes are
    float8_e4m3fn bytes viewed as uint8 (attnrt passes a uint8 tensor as the
    kernel's fp8 K/V dtype)."""
    top = dict(int8=127.0, fp8e4m3=448.0)[kind]
    B, H, S, D = k.shape
    groups = -(-S // group)
    kf = k.float()
    padded = F.pad(kf, (0, 0, 0, groups * group - S))
    k_scale = padded.view(B, H, groups, group, D).abs().amax(3) / top
    k_scale = torch.where(k_scale > 0, k_scale, torch.ones_like(k_scale))
    k_unit = kf / k_scale.repeat_interleave(group, dim=2)[:, :, :S]
    v_scale = v.float().abs().amax(-1) / top
    v_scale = torch.where(v_scale > 0, v_scale, torch.ones_like(v_scale))
    v_unit = v.float() / v_scale.unsqueeze(-1)

    def codes(x):
        if kind == "int8":
            return torch.round(x).clamp(-top, top).to(torch.int8)
        if not hasattr(torch, "float8_e4m3fn"):
            raise RuntimeError("this torch has no float8_e4m3fn")
        return x.clamp(-top, top).to(torch.float8_e4m3fn).view(torch.uint8)
    return (codes(k_unit).contiguous(), codes(v_unit).contiguous(),
            k_scale.contiguous(), v_scale.contiguous())


def decode_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


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
        if self.args.cpasync_bundles:
            info["cpasync_bundles"] = self.args.cpasync_bundles
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            pass
        return info

    def run(self, spec, stages, deadline):
        """One job: inputs and reference, then `stages` in order; never
        raises. When a stage leaves the process unfit to go on (CUDA context
        lost, inputs overwritten), row["unfinished"] lists the stages a new
        worker must run."""
        if isinstance(spec, DecodeSpec):
            row = self.run_decode(spec, stages, deadline)
        elif isinstance(spec, BackwardSpec):
            row = self.run_backward(spec, stages, deadline)
        else:
            row = self.run_stages(spec, stages, deadline)
        torch.cuda.empty_cache()
        return row

    def run_stages(self, spec, stages, deadline):
        a = self.args
        B, H, S = shape_of(spec, a)
        D = a.head_dim
        row = dict(name=spec.name, priority=spec.priority, source=spec.source,
                   variant=spec.variant, B=B, H=H, S=S, D=D, errors={},
                   notes=[])
        self.emit(dict(event="stage", stage="setup"))
        try:
            ctx = Ctx(B, H, S, D, seed=1 + CATALOG.index(spec))
            g = torch.Generator(device="cuda").manual_seed(0)
            q, k, v = (torch.randn(B, H, S, D, generator=g, device="cuda",
                                   dtype=torch.bfloat16) for _ in range(3))
            case = with_selection(spec.build(ctx), q, k)
            row["params"] = case.params
            t = time.time()
            ref, density = reference(case, q, k, v)
            row["reference_s"] = round(time.time() - t, 2)
            # Copies that tell whether a kernel wrote outside its output.
            guarded = [q, k, v, ref] + [x for x in case.captures.values()
                                        if torch.is_tensor(x)]
            copies = [x.clone() for x in guarded]
        except Exception as e:
            self.failed(row, "setup", e)
            row["status_setup"] = "FAIL"
            return row
        ref_max = ref.abs().max().item()
        bound = a.tol * max(ref_max, 1e-30)
        flops = 2 * (D + D) * B * H * S * S * density
        row.update(density=density, flops=flops,
                   dense_flops=2 * (D + D) * B * H * S * S,
                   ref_max=ref_max, bound=bound)
        env = dict(spec=spec, case=case, q=q, k=k, v=v, ref=ref, bound=bound,
                   flops=flops, deadline=deadline,
                   intact=lambda: all(torch.equal(x, c)
                                      for x, c in zip(guarded, copies)))
        self.emit(dict(event="partial", **row))
        return self.run_each(stages, row, env)

    def run_each(self, stages, row, env):
        """Runs `stages` in order; stops at one that leaves the process
        unfit to go on, listing the rest in row["unfinished"]."""
        for i, stage in enumerate(stages):
            self.emit(dict(event="stage", stage=stage))
            if stage in KERNELS:
                lost = self.kernel_stage(stage, row, env)
            elif stage in DECODE_KERNELS:
                lost = self.decode_kernel_stage(stage, row, env)
            else:
                lost = getattr(self, stage + "_stage")(row, env)
            self.emit(dict(event="partial", **row))
            if lost:
                rest = list(stages[i + 1:])
                row["notes"].append(lost + ("; %s in a new worker" % ", ".join(
                    LABEL[s] for s in rest) if rest else ""))
                row["unfinished"] = rest
                break
        return row

    def kernel_stage(self, key, row, env):
        """attnc's kernel from one bundle folder: check, then time. Returns
        why the process cannot go on, or None."""
        a, spec, q, k, v = (self.args, env["spec"], env["q"], env["k"],
                            env["v"])
        label = LABEL[key]
        folder = a.arch if key == "attnc" else a.cpasync_bundles
        what = label
        row["status_" + key] = "FAIL"  # until it passes
        try:
            path = bundle_path(a.prepared, folder, a.head_dim, spec.variant)
            desc = bundle_kernel(path, spec.variant)
            row[key + "_kernel"] = dict(
                (f, desc.get(f)) for f in ("target", "block_threads",
                                           "registers", "shared_bytes",
                                           "tensor_maps") if f in desc)
            why = check_loads(folder, desc)
            if why:
                raise RuntimeError(why)
            kernel = self.attnrt.load(path).kernel(spec.variant)
            if kernel.info["head_dim"] != a.head_dim:
                raise RuntimeError(
                    "%s was compiled for D=%d; run prepare.sh with HEAD_DIMS=%d"
                    % (path, kernel.info["head_dim"], a.head_dim))
            o = torch.empty(q.shape[0], q.shape[1], q.shape[2],
                            kernel.info["value_head_dim"],
                            dtype=torch.bfloat16, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            kwargs = dict(env["case"].params, **env["case"].captures)

            def run_kernel():
                return kernel(q, k, v, o=o, stream=stream, **kwargs)
            o.fill_(float("nan"))  # a kernel that writes nothing must not pass
            run_kernel()
            torch.cuda.synchronize()
            err = max_error(o, env["ref"])
            row["err_" + key] = err
            correct = math.isfinite(err) and err <= env["bound"]
            if not correct:
                row["notes"].append("%s error %.3g above the bound %.3g"
                                    % (label, err, env["bound"]))
            self.emit(dict(event="partial", **row))
            if not env["intact"]():
                return "%s wrote into its inputs or the reference" % label
            what = label + " timing"
            ms = median_ms(run_kernel, a.warmup, a.iters)
            row[key + "_ms"] = ms
            row[key + "_tflops"] = env["flops"] / (ms * 1e-3) / 1e12
            if not env["intact"]():
                return "%s wrote into its inputs or the reference while timed" \
                    % label
            row["status_" + key] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_" + key] = "CRASH"
                return "CUDA context lost in " + what
        return None

    def flex_stage(self, row, env):
        """flex: block mask and compilation outside the timing."""
        a, spec, case = self.args, env["spec"], env["case"]
        q, k, v = env["q"], env["k"], env["v"]
        deadline = env["deadline"]
        left = deadline - time.time() if deadline else float("inf")
        if not spec.flex:
            row["notes"].append("flex: not expressible (normalizer or sink)")
            return None
        if a.no_flex:
            return None
        if self.flex is None:
            row["notes"].append("flex unavailable: " + self.flex_error)
            return None
        if left < a.flex_reserve_s:
            row["notes"].append("flex skipped: %.0f s left of the time budget"
                                % left)
            return None
        what = "flex"
        try:
            torch._dynamo.reset()
            block_mask = None
            B, H, S = q.shape[0], q.shape[1], q.shape[2]
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
            self.check_other("flex", out, row, env)
            del out
            what = "flex timing"
            self.time_other("flex", run_flex, row, env)
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                return "CUDA context lost in " + what
        return None

    def sdpa_stage(self, row, env):
        """SDPA: its causal is top-left; the same as ours at Sq == Skv."""
        q, k, v = env["q"], env["k"], env["v"]
        causal = env["spec"].sdpa == "causal"
        what = "sdpa"
        try:
            def run_sdpa():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            out = run_sdpa()
            torch.cuda.synchronize()
            self.check_other("sdpa", out, row, env)
            del out
            what = "sdpa timing"
            self.time_other("sdpa", run_sdpa, row, env)
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                return "CUDA context lost in " + what
        return None

    def check_other(self, name, out, row, env):
        e = max_error(out, env["ref"])
        row["err_" + name] = e
        if not (math.isfinite(e) and e <= env["bound"]):
            row["notes"].append("%s error %.3g above the bound %.3g"
                                % (name, e, env["bound"]))
        self.emit(dict(event="partial", **row))

    def time_other(self, name, fn, row, env):
        ms = median_ms(fn, self.args.warmup, self.args.iters)
        row[name + "_ms"] = ms
        row[name + "_tflops"] = env["flops"] / (ms * 1e-3) / 1e12

    # -- backward -----------------------------------------------------------

    # The device the backward section runs on: "cuda", except for
    # test_backward_cpu.py, which runs these stages on the CPU with CPU
    # bundles (torch.cuda's timing and synchronization stubbed there).
    dev = "cuda"

    def stream(self):
        if self.dev == "cpu":
            return None
        return torch.cuda.current_stream().cuda_stream

    def run_backward(self, spec, stages, deadline):
        """One backward job: the catalog variant's bf16 q, k, v (the same
        seeds and captures as its forward row), a bf16 dO, the float32
        reference o and gradients, then `stages` (attnc, flex)."""
        a = self.args
        cat = BY_NAME[spec.catalog]
        row = backward_placeholder(spec.name, a)
        B, H, S, D = row["B"], row["H"], row["S"], row["D"]
        self.emit(dict(event="stage", stage="setup"))
        try:
            ctx = Ctx(B, H, S, D, seed=1 + CATALOG.index(cat), dev=self.dev)
            g = torch.Generator(device=self.dev).manual_seed(0)
            q, k, v, do = (torch.randn(B, H, S, D, generator=g, device=self.dev,
                                       dtype=torch.bfloat16)
                           for _ in range(4))
            # select rows: the blocks from these q, k, folded into the mask
            # (the reference's and flex's); attnc chooses its own on the
            # device inside its backward call.
            case = with_selection(cat.build(ctx), q, k)
            row["params"] = case.params
            t = time.time()
            ref, grads, density = reference_backward(case, q, k, v, do)
            torch.cuda.synchronize()
            row["reference_s"] = round(time.time() - t, 2)
            guarded = [q, k, v, do, ref, *grads] + [
                x for x in case.captures.values() if torch.is_tensor(x)]
            copies = [x.clone() for x in guarded]
        except Exception as e:
            self.failed(row, "setup", e)
            row["status_setup"] = "FAIL"
            return row
        ref_max = ref.abs().max().item()
        flops = 2 * (D + D) * B * H * S * S * density
        row.update(density=density, flops=flops, ref_max=ref_max,
                   bound=a.tol * max(ref_max, 1e-30),
                   bwd_flops=BACKWARD_FLOPS * flops, bwd_bound=a.bwd_tol)
        env = dict(spec=spec, cat=cat, case=case, q=q, k=k, v=v, do=do,
                   ref=ref, grads=grads, deadline=deadline,
                   intact=lambda: all(torch.equal(x, c)
                                      for x, c in zip(guarded, copies)))
        self.emit(dict(event="partial", **row))
        return self.run_each(stages, row, env)

    def backward_errors(self, key, got, row, env):
        """Relative L1 errors of dq, dk, dv against the reference's;
        True when all are within --bwd-tol."""
        ok = True
        for name, x, ref in zip(BACKWARD_GRADS, got, env["grads"]):
            err = rel_l1(x, ref)
            row["err_%s_%s" % (key, name)] = err
            if not (math.isfinite(err) and err <= self.args.bwd_tol):
                ok = False
                row["notes"].append("%s %s relative L1 error %.3g above "
                                    "the bound %.3g" % (LABEL[key], name, err,
                                                        self.args.bwd_tol))
        self.emit(dict(event="partial", **row))
        return ok

    def b_attnc_stage(self, row, env):
        """attnc's forward (with lse), checked, then its backward: dq, dk,
        dv checked against the reference, then both timed. attnc's
        gradients go to --scratch for flex's stage to compare with."""
        a, spec, cat = self.args, env["spec"], env["cat"]
        q, k, v, do = env["q"], env["k"], env["v"], env["do"]
        key, label = "b_attnc", LABEL["b_attnc"]
        what = "attnc forward"
        row["status_" + key] = "FAIL"  # until it passes
        try:
            path = backward_bundle_path(a.prepared, a.arch, a.head_dim,
                                        cat.variant)
            if not os.path.exists(path):
                raise RuntimeError("%s is missing: run prepare.sh again (its "
                                   "output predates the backward section?)"
                                   % path)
            desc = check_backward_bundle(path, cat.variant,
                                         "d%d" % a.head_dim)
            row[key + "_kernel"] = dict(
                (f, desc.get(f)) for f in (
                    "target", "block_threads", "registers", "shared_bytes",
                    "tensor_maps", "backward_kv_threads",
                    "backward_q_threads", "backward_kv_rows",
                    "backward_q_rows") if f in desc)
            kernel = self.attnrt.load(path).kernel(cat.variant)
            B, H, S, D = q.shape
            o = torch.empty(B, H, S, kernel.info["value_head_dim"],
                            dtype=torch.bfloat16, device=self.dev)
            lse = torch.empty(B, H, S, dtype=torch.float32,
                              device=self.dev)
            dq, dk, dv = (torch.empty_like(x) for x in (q, k, v))
            stream = self.stream()
            kwargs = dict(env["case"].params, **env["case"].captures)

            def forward():
                return kernel(q, k, v, o=o, lse=lse, stream=stream, **kwargs)

            def backward():
                return kernel.backward(q, k, v, o, lse, do, dq=dq, dk=dk,
                                       dv=dv, stream=stream, **kwargs)
            o.fill_(float("nan"))
            forward()
            torch.cuda.synchronize()
            err = max_error(o, env["ref"])
            row["err_b_attnc_o"] = err
            correct = math.isfinite(err) and err <= row["bound"]
            if not correct:
                row["notes"].append("attnc forward error %.3g above the "
                                    "bound %.3g" % (err, row["bound"]))
            what = label
            for x in (dq, dk, dv):
                x.fill_(float("nan"))  # a kernel that writes nothing fails
            backward()
            torch.cuda.synchronize()
            correct = self.backward_errors(key, (dq, dk, dv), row, env) \
                and correct
            if not env["intact"]():
                return "%s wrote into its inputs or the reference" % label
            if a.scratch and correct:
                torch.save([x.cpu() for x in (dq, dk, dv)],
                           os.path.join(a.scratch, spec.name + ".pt"))
            what = label + " timing"
            ms = median_ms(backward, a.warmup, a.iters)
            row["b_attnc_ms"] = ms
            row["b_attnc_tflops"] = row["bwd_flops"] / (ms * 1e-3) / 1e12
            what = "attnc forward timing"
            fwd = median_ms(forward, a.warmup, a.iters)
            row["b_attnc_fwd_ms"] = fwd
            row["b_attnc_bwd_over_fwd"] = ms / fwd
            if not env["intact"]():
                return "%s wrote into its inputs or the reference while " \
                    "timed" % label
            row["status_" + key] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_" + key] = "CRASH"
                return "CUDA context lost in " + what
        return None

    def b_flex_stage(self, row, env):
        """torch.compile(flex_attention) forward on leaves that require
        grad, then torch.autograd.grad of its output with dO: checked
        against the reference and attnc's gradients (from --scratch),
        then the backward timed alone (each launch after an untimed
        forward) and the forward with grad. Compilation is not timed."""
        a, case = self.args, env["case"]
        q, k, v, do = env["q"], env["k"], env["v"], env["do"]
        deadline = env["deadline"]
        left = deadline - time.time() if deadline else float("inf")
        key = "b_flex"
        if self.flex is None:
            row["status_" + key] = "unavailable"
            row["notes"].append("flex unavailable: " + self.flex_error)
            return None
        if left < a.backward_flex_reserve_s:
            row["status_" + key] = "skipped"
            row["notes"].append("flex backward skipped: %.0f s left of the "
                                "time budget" % left)
            return None
        what = "flex backward"
        row["status_" + key] = "ERROR"
        try:
            torch._dynamo.reset()
            block_mask = None
            B, H, S = q.shape[0], q.shape[1], q.shape[2]
            if case.mask is not None:
                block_mask = make_block_mask(case.mask, B, H, S)
            leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]

            def forward():
                return self.flex(*leaves, score_mod=case.score,
                                 block_mask=block_mask)

            def backward(out):
                return torch.autograd.grad(out, leaves, do)
            t = time.time()
            got = backward(forward())
            torch.cuda.synchronize()
            row["b_flex_compile_s"] = round(time.time() - t, 2)
            correct = self.backward_errors(key, got, row, env)
            saved = os.path.join(a.scratch or "", env["spec"].name + ".pt")
            if a.scratch and os.path.exists(saved):
                theirs = torch.load(saved)
                os.remove(saved)
                for name, x, y in zip(BACKWARD_GRADS, theirs, got):
                    row["err_attnc_vs_flex_" + name] = rel_l1(
                        x.to(self.dev), y.float())
                del theirs
            del got
            what = "flex backward timing"
            ms = median_ms_after(forward, backward, a.warmup, a.iters)
            row["b_flex_ms"] = ms
            row["b_flex_tflops"] = row["bwd_flops"] / (ms * 1e-3) / 1e12
            what = "flex forward timing"
            fwd = median_ms(forward, a.warmup, a.iters)
            row["b_flex_fwd_ms"] = fwd
            row["b_flex_bwd_over_fwd"] = ms / fwd
            row["status_" + key] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_" + key] = "CRASH"
                return "CUDA context lost in " + what
        return None

    # -- decode -------------------------------------------------------------

    def run_decode(self, spec, stages, deadline):
        """One decode job: bf16 q, k, v and the float32 reference, then
        `stages` (attnc's kernels, SDPA, flex), each checked, then timed
        together with a copy of the bytes it reads."""
        a = self.args
        B, Hq, Hkv, Skv = decode_shape(spec, a)
        D = a.head_dim
        row = decode_placeholder(spec.name, a)
        self.emit(dict(event="stage", stage="setup"))
        try:
            g = torch.Generator(device="cuda").manual_seed(
                101 + DECODE.index(spec))
            q = torch.randn(B, Hq, 1, D, generator=g, device="cuda",
                            dtype=torch.bfloat16)
            k, v = (torch.randn(B, Hkv, Skv, D, generator=g, device="cuda",
                                dtype=torch.bfloat16) for _ in range(2))
            t = time.time()
            ref = decode_reference(q, k, v)
            torch.cuda.synchronize()
            row["reference_s"] = round(time.time() - t, 2)
            guarded = [q, k, v, ref]
            copies = [x.clone() for x in guarded]
            self.decode_timing_setup(row)
        except Exception as e:
            self.failed(row, "setup", e)
            row["status_setup"] = "FAIL"
            return row
        env = dict(q=q, k=k, v=v, ref=ref, deadline=deadline, quantized={},
                   guarded=guarded, copies=copies,
                   intact=lambda: all(torch.equal(x, c)
                                      for x, c in zip(guarded, copies)))
        self.emit(dict(event="partial", **row))
        return self.run_each(stages, row, env)

    def decode_timing_setup(self, row):
        """A buffer of twice the L2 to evict K/V before each launch, and the
        torch.cuda._sleep cycles that keep the GPU busy for about 1 ms
        while the CPU queues the launch (its Python and attnrt overhead,
        tens of microseconds, would otherwise be timed: a decode launch at
        copy bandwidth takes about 0.1 ms)."""
        if getattr(self, "flush", None) is None:
            props = torch.cuda.get_device_properties(0)
            l2 = getattr(props, "L2_cache_size", 0) or (64 << 20)
            self.flush = torch.empty(max(2 * l2, 64 << 20) // 4,
                                     dtype=torch.int32, device="cuda")
            self.sleep_cycles = 0
            try:  # private, but in every torch with CUDA
                torch.cuda._sleep(1000)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                torch.cuda._sleep(1 << 20)
                end.record()
                torch.cuda.synchronize()
                ms = start.elapsed_time(end)
                if ms > 0:
                    self.sleep_cycles = int((1 << 20) / ms)  # ~1 ms
            except Exception:
                traceback.print_exc()
        row["flush_mib"] = self.flush.numel() * 4 >> 20
        row["sleep_cycles"] = self.sleep_cycles
        if not self.sleep_cycles:
            row["notes"].append("torch.cuda._sleep unusable: launch "
                                "overhead is part of the times")

    def decode_ms(self, fn):
        """Median CUDA-event time of fn(), each launch after an L2 flush and
        behind a GPU sleep."""
        a = self.args
        for _ in range(a.decode_warmup):
            fn()
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True),
                   torch.cuda.Event(enable_timing=True))
                  for _ in range(a.decode_iters)]
        for start, end in events:
            self.flush.zero_()
            if self.sleep_cycles:
                torch.cuda._sleep(self.sleep_cycles)
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in events)

    def decode_time(self, key, fn, nbytes, row):
        """Times fn and, right after, dst.copy_(src) of nbytes (flat uint8
        device buffers) the same way."""
        ms = self.decode_ms(fn)
        src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        copy_ms = self.decode_ms(lambda: dst.copy_(src))
        del src, dst
        row[key + "_ms"], row[key + "_copy_ms"] = ms, copy_ms
        row[key + "_bytes"] = nbytes
        row[key + "_gbs"] = nbytes / ms / 1e6
        row[key + "_copy_gbs"] = nbytes / copy_ms / 1e6
        row[key + "_of_copy"] = copy_ms / ms

    def decode_check(self, key, o, kv, row, env):
        """Relative L1 error against the reference; True when in bounds."""
        err = rel_l1(o, env["ref"])
        bound = DECODE_TOL[kv]
        row["err_" + key], row[key + "_bound"] = err, bound
        ok = math.isfinite(err) and err <= bound
        if not ok:
            row["notes"].append("%s relative L1 error %.3g above the bound "
                                "%.3g" % (LABEL[key], err, bound))
        self.emit(dict(event="partial", **row))
        return ok

    def quantized(self, env, kind):
        """K/V codes and scales for `kind`, made once per job on the GPU
        and guarded like the inputs."""
        if kind not in env["quantized"]:
            qkv = quantize_kv(env["k"], env["v"], kind, KV_GROUP)
            env["quantized"][kind] = qkv
            env["guarded"].extend(qkv)
            env["copies"].extend(x.clone() for x in qkv)
        return env["quantized"][kind]

    def decode_kernel_stage(self, key, row, env):
        """One of attnc's decode kernels: check, then time with its copy.
        Returns why the process cannot go on, or None."""
        a, q = self.args, env["q"]
        bundle, column, kv, _ = DECODE_KERNEL_INFO[key]
        folder = a.arch if column == "attnc" else a.cpasync_bundles
        label = what = LABEL[key]
        row["status_" + key] = "FAIL"  # until it passes
        try:
            path = decode_bundle_path(a.prepared, folder, a.head_dim, bundle)
            why = unsupported_reason(path)
            if why is not None and not os.path.exists(path):
                row["status_" + key] = "unsupported"
                row.setdefault("unsupported", {})[key] = why
                return None
            if not os.path.exists(path):
                raise RuntimeError("%s is missing: run prepare.sh again (its "
                                   "output predates the decode section?)"
                                   % path)
            desc = bundle_kernel(path, DECODE_VARIANT)
            row[key + "_kernel"] = dict(
                (f, desc.get(f)) for f in (
                    "target", "block_threads", "registers", "shared_bytes",
                    "tensor_maps", "block_kv", "split_kv", "kv_dtype",
                    "kv_group") if f in desc)
            why = decode_loads(folder, desc)
            if why:
                raise RuntimeError(why)
            kernel = self.attnrt.load(path).kernel(DECODE_VARIANT)
            if kernel.info["head_dim"] != a.head_dim:
                raise RuntimeError(
                    "%s was compiled for D=%d; run prepare.sh with HEAD_DIMS=%d"
                    % (path, kernel.info["head_dim"], a.head_dim))
            if kv == "bf16":
                k, v, extra = env["k"], env["v"], {}
            else:
                what = label + " quantization"
                k, v, k_scale, v_scale = self.quantized(env, kv)
                extra = dict(k_scale=k_scale, v_scale=v_scale)
                what = label
            nbytes = decode_bytes(k, v, *extra.values())
            o = torch.empty(q.shape[0], q.shape[1], 1,
                            kernel.info["value_head_dim"],
                            dtype=torch.bfloat16, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream

            def run_kernel():
                return kernel(q, k, v, o=o, stream=stream, **extra)
            o.fill_(float("nan"))  # a kernel that writes nothing must not pass
            run_kernel()
            torch.cuda.synchronize()
            correct = self.decode_check(key, o, kv, row, env)
            if not env["intact"]():
                return "%s wrote into its inputs or the reference" % label
            what = label + " timing"
            self.decode_time(key, run_kernel, nbytes, row)
            if not env["intact"]():
                return "%s wrote into its inputs or the reference while timed" \
                    % label
            row["status_" + key] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_" + key] = "CRASH"
                return "CUDA context lost in " + what
        return None

    def d_sdpa_stage(self, row, env):
        """SDPA on the bf16 cache, GQA without repeating K/V."""
        q, k, v = env["q"], env["k"], env["v"]
        what = "sdpa"
        row["status_d_sdpa"] = "ERROR"
        try:
            def run_sdpa():
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            out = run_sdpa()
            torch.cuda.synchronize()
            correct = self.decode_check("d_sdpa", out, "bf16", row, env)
            del out
            what = "sdpa timing"
            self.decode_time("d_sdpa", run_sdpa, decode_bytes(k, v), row)
            row["status_d_sdpa"] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_d_sdpa"] = "CRASH"
                return "CUDA context lost in " + what
        return None

    def d_flex_stage(self, row, env):
        """torch.compile(flex_attention) with enable_gqa (its decoding
        kernel at Sq = 1); compilation is not timed."""
        a, q, k, v = self.args, env["q"], env["k"], env["v"]
        deadline = env["deadline"]
        left = deadline - time.time() if deadline else float("inf")
        if self.flex is None:
            row["status_d_flex"] = "unavailable"
            row["notes"].append("flex unavailable: " + self.flex_error)
            return None
        if left < a.decode_flex_reserve_s:
            row["status_d_flex"] = "skipped"
            row["notes"].append("flex skipped: %.0f s left of the time budget"
                                % left)
            return None
        what = "flex"
        row["status_d_flex"] = "ERROR"
        try:
            torch._dynamo.reset()

            def run_flex():
                return self.flex(q, k, v, enable_gqa=True)
            t = time.time()
            out = run_flex()
            torch.cuda.synchronize()
            row["d_flex_compile_s"] = round(time.time() - t, 2)
            correct = self.decode_check("d_flex", out, "bf16", row, env)
            del out
            what = "flex timing"
            self.decode_time("d_flex", run_flex, decode_bytes(k, v), row)
            row["status_d_flex"] = "ok" if correct else "FAIL"
        except Exception as e:
            self.failed(row, what, e)
            if not cuda_alive():
                row["status_d_flex"] = "CRASH"
                return "CUDA context lost in " + what
        return None

    @staticmethod
    def failed(row, what, e):
        traceback.print_exc()
        argument = getattr(e, "argument", "")  # attnrt.Error names it
        row["errors"][what] = "%s: %s%s" % (
            type(e).__name__, e, " (argument %s)" % argument if argument else "")
        return row


def shape_of(spec, a):
    if a.quick:
        return spec.quick_shape or QUICK_SHAPE
    if a.shape:
        return tuple(int(x) for x in a.shape.split(","))
    return spec.shape or DEFAULT_SHAPE


def decode_shape(spec, a):
    return spec.quick_shape if a.quick else spec.shape


def worker_main(a):
    def emit(record):
        with open(a.rows_file, "a") as f:
            f.write(json.dumps(record) + "\n")
    with open(a.jobs_file) as f:
        jobs = json.load(f)
    try:
        w = Worker(a, emit)
        emit(dict(event="meta", **w.meta()))
    except Exception as e:
        traceback.print_exc()
        emit(dict(event="fatal", error="%s: %s" % (type(e).__name__, e)))
        return 1
    for j, job in enumerate(jobs):
        spec = (DECODE_BY_NAME.get(job["name"])
                or BACKWARD_BY_NAME.get(job["name"]) or BY_NAME[job["name"]])
        emit(dict(event="start", job=j, name=spec.name))
        if a.deadline and time.time() > a.deadline - 10:
            row = dict(placeholder(spec.name, a), skipped=job["stages"])
        else:
            row = w.run(spec, job["stages"], a.deadline)
        emit(dict(event="row", job=j, **row))
        if "unfinished" in row or not cuda_alive():
            return EXIT_CUDA_LOST
    return 0


# ----------------------------------------------------------------------------
# The driver: a queue of jobs (a variant and the stages still to run), one
# worker process at a time, results. Runs and the functions before it need
# no torch and no processes: `--list` checks them.

def plan_jobs(specs, cpasync):
    """One job per variant with its stages in order; with a cp.async column,
    cp.async runs right after attnc for P0 variants and, for P1 variants,
    in jobs of their own after every variant's job: when time runs short
    those are the first thing the budget cuts, after flex of every variant."""
    jobs, later = [], []
    for s in specs:
        stages = ["attnc"]
        if cpasync and s.priority == "P0":
            stages.append("cpasync")
        stages.append("flex")
        if s.sdpa:
            stages.append("sdpa")
        jobs.append(dict(name=s.name, stages=stages))
        if cpasync and s.priority != "P0":
            later.append(dict(name=s.name, stages=["cpasync"]))
    return jobs + later


def decode_stages(a):
    """A decode row's columns, in the order they run."""
    stages = ["d_auto", "d_split16"]
    if a.cpasync_bundles:
        stages.append("d_cpasync")
    stages += ["d_int8", "d_fp8e4m3", "d_sdpa"]
    if not a.no_flex:
        stages.append("d_flex")
    return stages


def decode_unsupported(a, key):
    """prepare.sh's message when attnc would not compile the bundle of
    decode column `key` (and there is no bundle), else None."""
    bundle, column = DECODE_KERNEL_INFO[key][:2]
    folder = a.arch if column == "attnc" else a.cpasync_bundles
    path = decode_bundle_path(a.prepared, folder, a.head_dim, bundle)
    return None if os.path.exists(path) else unsupported_reason(path)


def plan_decode(a, dspecs, unsupported=None):
    """One job per decode shape (attnc's kernels, then SDPA), then one per
    shape for flex, whose compilation is what the time budget cuts first.
    Columns whose bundle attnc would not compile (prepare.sh's marker) are
    settled here, nothing run. Returns the jobs and the rows so far."""
    unsupported = unsupported or (lambda key: decode_unsupported(a, key))
    jobs, later, rows = [], [], []
    for d in dspecs:
        row = decode_placeholder(d.name, a)
        stages = []
        for stage in row["stages"]:
            why = unsupported(stage) if stage in DECODE_KERNELS else None
            if why:
                row["status_" + stage] = "unsupported"
                row.setdefault("unsupported", {})[stage] = why
            elif stage == "d_flex":
                later.append(dict(name=d.name, stages=[stage]))
            else:
                stages.append(stage)
        if stages:
            jobs.append(dict(name=d.name, stages=stages))
        rows.append(row)
    return jobs + later, rows


def plan_backward(a, bspecs):
    """One job per backward row with attnc's column, then one per row for
    flex, whose compilation (forward and backward) is what the time budget
    cuts first."""
    jobs = [dict(name=b.name, stages=["b_attnc"]) for b in bspecs]
    if not a.no_flex:
        jobs += [dict(name=b.name, stages=["b_flex"]) for b in bspecs]
    return jobs


def merge(base, new):
    """A row from what earlier jobs measured and what this one did."""
    out = dict(base)
    for key, value in new.items():
        if key in ("errors", "unsupported"):
            out[key] = dict(base.get(key, {}), **value)
        elif key == "notes":
            old = base.get(key, [])
            out[key] = old + [n for n in value if n not in old]
        elif key not in ("unfinished", "skipped", "status", "job"):
            out[key] = value
    return out


def skipped_row(row, stages, why, whole=True):
    """Marks `stages` of a row not run; a row that ran nothing yet says so
    as a whole unless `whole` is False."""
    row = dict(row, notes=list(row.get("notes", [])))
    fresh = whole and "density" not in row and "reference_s" not in row \
        and not any(row.get("status_" + k) for k in STATUS_STAGES)
    for s in stages:
        if s in STATUS_STAGES and not row.get("status_" + s):
            row["status_" + s] = "skipped"
    row["notes"].append("not run: " + why if fresh else "%s not run: %s" % (
        ", ".join(LABEL[s] for s in stages), why))
    return row


def summarize(row):
    """The row's status from its kernels' and the speedups of the best
    correct attnc kernel (the faster of TMA and cp.async on 9.x)."""
    if row.get("kind") == "decode":
        return summarize_decode(row)
    if row.get("kind") == "backward":
        return summarize_backward(row)
    kernels = [(k, row["status_" + k]) for k in KERNELS
               if row.get("status_" + k)]
    if row.get("status_setup"):
        row["status"] = row["status_setup"]
    elif not kernels:
        row["status"] = "-"
    elif len(set(s for _, s in kernels)) == 1:
        row["status"] = kernels[0][1]
    else:
        row["status"] = ", ".join("%s %s" % (SHORT[k], s) for k, s in kernels)
    good = sorted((row[k + "_ms"], k) for k, s in kernels
                  if s == "ok" and row.get(k + "_ms"))
    for key in ("attnc_best", "attnc_best_ms", "attnc_vs_flex",
                "attnc_vs_sdpa", "tma_vs_cpasync"):
        row.pop(key, None)
    if good:
        ms, best = good[0]
        row["attnc_best"], row["attnc_best_ms"] = best, ms
        for other in ("flex", "sdpa"):
            if row.get(other + "_ms"):
                row["attnc_vs_" + other] = row[other + "_ms"] / ms
    if len(good) == 2:
        row["tma_vs_cpasync"] = row["cpasync_ms"] / row["attnc_ms"]
    return row


def summarize_decode(row):
    """A decode row's status from attnc's kernels (a column GPU targets do
    not compile yet is no failure), and time ratios between correct ones:
    int8 / bf16 (issue 8: 0.5), fp8e4m3 / bf16, split 16 / split auto."""
    kernels = [(k, row["status_" + k]) for k in DECODE_KERNELS
               if row.get("status_" + k) not in (None, "unsupported")]
    if row.get("status_setup"):
        row["status"] = row["status_setup"]
    elif not kernels:
        row["status"] = "-"
    elif len(set(s for _, s in kernels)) == 1:
        row["status"] = kernels[0][1]
    else:
        row["status"] = ", ".join("%s %s" % (SHORT[k], s) for k, s in kernels
                                  if s != "ok")
    good = dict((k, row[k + "_ms"]) for k, s in kernels
                if s == "ok" and row.get(k + "_ms"))
    for key, over, under in (("int8_vs_bf16", "d_int8", "d_auto"),
                             ("fp8e4m3_vs_bf16", "d_fp8e4m3", "d_auto"),
                             ("split16_vs_auto", "d_split16", "d_auto")):
        row.pop(key, None)
        if over in good and under in good:
            row[key] = good[over] / good[under]
    return row


def summarize_backward(row):
    """A backward row's status is attnc's (flex's problems are notes);
    attnc/flex is flex's backward time over attnc's, both correct."""
    status = row.get("status_setup") or row.get("status_b_attnc") or "-"
    row["status"] = status
    row.pop("attnc_vs_flex", None)
    if row.get("status_b_attnc") == "ok" and row.get("status_b_flex") == "ok" \
            and row.get("b_attnc_ms") and row.get("b_flex_ms"):
        row["attnc_vs_flex"] = row["b_flex_ms"] / row["b_attnc_ms"]
    return row


def row_failed(row):
    kernels = dict(decode=DECODE_KERNELS, backward=BACKWARD_KERNELS).get(
        row.get("kind"), KERNELS)
    return row.get("status_setup") is not None or any(
        row.get("status_" + k) in BAD for k in kernels)


class Runs:
    """The queue and the rows. A worker runs the queue's jobs in order; a
    finished job leaves it; a crash or a kill in a stage records that stage
    and puts the job's later stages first, for a new worker (a new CUDA
    context); a kernel that hung or crashed in --give-up-after variants is
    not run for the rest."""

    def __init__(self, a, jobs, rows=()):
        self.a = a
        self.queue = list(jobs)
        self.order = []
        for name in [r["name"] for r in rows] + [j["name"] for j in jobs]:
            if name not in self.order:
                self.order.append(name)
        self.rows, self.job, self.base = {}, None, None
        for row in rows:  # rows settled before anything runs
            self.put(row)
        self.failures = dict((k, []) for k in ALL_KERNELS)
        self.given_up = []

    def row(self, name):
        return self.rows.get(name) or placeholder(name, self.a)

    def ordered(self):
        return [self.rows[n] for n in self.order if n in self.rows]

    def put(self, row):
        self.rows[row["name"]] = summarize(row)
        return row

    def start(self, job):
        self.job, self.base = job, self.row(job["name"])

    def partial(self, event):
        self.put(merge(self.base, event))

    def replace(self, job, stages):
        i = next(i for i, j in enumerate(self.queue) if j is job)
        if stages:
            self.queue[i] = dict(name=job["name"], stages=list(stages))
        else:
            del self.queue[i]

    def finish(self, event):
        """The worker finished the current job."""
        row = merge(self.base, event)
        if "skipped" in event:  # the worker found the time budget spent
            row = skipped_row(self.base, event["skipped"], "time budget spent")
        self.replace(self.job, event.get("unfinished"))
        self.job = None
        self.put(row)
        self.count(row)
        return row

    def crash(self, stage, partial, status, why, requeue=True):
        """The worker died (CRASH) or was killed (TIMEOUT) in `stage` of the
        current job; its later stages go first in the queue."""
        job = self.job
        row = merge(self.base, partial or {})
        row["errors"] = dict(row["errors"])
        if stage in (None, "setup"):
            row["status_setup"] = status
            row["errors"]["setup"] = "%s: %s" % (status, why)
            rest = []
        else:
            if stage in STATUS_STAGES:
                row["status_" + stage] = status
            row["errors"][LABEL[stage]] = "%s: %s" % (status, why)
            rest = job["stages"][job["stages"].index(stage) + 1:]
            if rest and requeue:
                row["notes"] = row["notes"] + ["%s in a new worker after the "
                                               "%s %s" % (", ".join(
                                                   LABEL[s] for s in rest),
                                                   LABEL[stage], status)]
        if not requeue:
            row = skipped_row(row, rest, why) if rest else row
            rest = []
        self.replace(job, rest)
        self.job = None
        self.put(row)
        if requeue:
            self.count(row)
        return row

    def count(self, row):
        for k in ALL_KERNELS:
            if row.get("status_" + k) not in ("CRASH", "TIMEOUT") \
                    or row["name"] in self.failures[k]:
                continue
            self.failures[k].append(row["name"])
            n = self.a.give_up_after
            if n and len(self.failures[k]) >= n and k not in self.given_up:
                self.given_up.append(k)
                self.drop(k, "it hung or crashed in %s" % ", ".join(
                    self.failures[k]))

    def drop(self, stage, why):
        """Takes `stage` out of every queued job."""
        kept = []
        for job in self.queue:
            if stage in job["stages"]:
                self.put(skipped_row(self.row(job["name"]), [stage], why,
                                     whole=False))
                job = dict(name=job["name"],
                           stages=[s for s in job["stages"] if s != stage])
            if job["stages"]:
                kept.append(job)
        self.queue = kept

    def skip_rest(self, why):
        stages = {}
        for job in self.queue:
            stages.setdefault(job["name"], []).extend(job["stages"])
        for name, rest in stages.items():
            self.put(skipped_row(self.row(name), rest, why))
        self.queue = []

    def fatal(self, why):
        for job in self.queue:
            row = dict(self.row(job["name"]))
            row["status_setup"] = "ERROR"
            row["notes"] = row["notes"] + ([] if why in row["notes"] else [why])
            self.put(row)
        self.queue = []


def drive(a):
    import shutil
    import tempfile
    os.makedirs(a.out, exist_ok=True)
    started = time.time()
    deadline = started + a.budget_s if a.budget_s else None
    specs, dspecs = select(a)
    bspecs = select_backward(a)
    if bspecs and not os.path.isdir(os.path.join(a.prepared, "backward")):
        print("bench.py: %s has no backward/ (an older prepare.sh): no "
              "backward section; run prepare.sh again for it"
              % a.prepared, file=sys.stderr)
        bspecs = []
    catalog_deadline = section_deadline(a, deadline, specs, dspecs, bspecs)
    backward_deadline = section_deadline(a, deadline, bspecs, dspecs)
    runs = Runs(a, plan_jobs(specs, bool(a.cpasync_bundles)))
    bruns = Runs(a, plan_backward(a, bspecs))
    druns = Runs(a, *plan_decode(a, dspecs))
    meta = {}

    def save():
        write_results(a, meta, runs.ordered(), started, druns.ordered(),
                      bruns.ordered())

    # attnc's gradients for flex's stage to compare with (not in --out:
    # run.sh's $OUT comes back from the GPU machine)
    a.scratch = tempfile.mkdtemp(prefix="attnc-bench-bwd-") if bspecs else ""
    try:
        run_queue(a, runs, catalog_deadline, meta, save)
        run_queue(a, bruns, backward_deadline, meta, save)
        run_queue(a, druns, deadline, meta, save)
    finally:
        if a.scratch:
            shutil.rmtree(a.scratch, ignore_errors=True)
    save()
    print()
    print(markdown(a, meta, runs.ordered(), started, druns.ordered(),
                   bruns.ordered()))
    rows = runs.ordered() + bruns.ordered() + druns.ordered()
    return 1 if any(row_failed(r) for r in rows) else 0


def section_deadline(a, deadline, specs, dspecs, bspecs=()):
    """A section's deadline: the catalog's, then the backward section's
    (specs), each followed by the backward section (bspecs; its
    --backward-budget-s) and the decode section (dspecs; the last
    --decode-budget-s of the budget), which also get whatever the earlier
    sections left."""
    if not deadline or not specs:
        return deadline
    if dspecs:
        deadline -= a.decode_budget_s
    if bspecs:
        deadline -= a.backward_budget_s
    return deadline


def run_queue(a, runs, deadline, meta, save):
    """Runs the queue's jobs in workers, a new one after each crash or
    kill, until the queue is empty or the deadline is near."""
    rows_file = os.path.join(a.out, "events.jsonl")  # worker -> driver
    jobs_file = os.path.join(a.out, "jobs.json")     # driver -> worker
    while runs.queue:
        if deadline and time.time() > deadline - 10:
            runs.skip_rest("time budget spent")
            break
        jobs = list(runs.queue)
        with open(jobs_file, "w") as f:
            json.dump(jobs, f)
        open(rows_file, "w").close()
        cmd = [sys.executable, os.path.abspath(__file__), "--worker",
               "--rows-file", rows_file, "--jobs-file", jobs_file]
        cmd += forwarded(a, deadline)
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            stage, partial, killed, progressed = watch(
                a, proc, rows_file, deadline, meta, runs, jobs, save)
        except BaseException:  # Ctrl-C: the worker has its own session
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        if runs.job is not None:  # the worker died or was killed in a job
            budget = killed == KILLED_BUDGET
            why = killed or "worker died, exit status %s" % proc.returncode
            row = runs.crash(stage, partial, "TIMEOUT" if killed else "CRASH",
                             why, requeue=not budget)
            print(one_line(row), flush=True)
            save()
        elif not killed and not progressed:  # it cannot start: do not loop
            runs.fatal("worker failed: %s" % meta.get(
                "fatal", "exit status %s" % proc.returncode))
    save()


KILLED_BUDGET = "killed: time budget spent"


def watch(a, proc, rows_file, deadline, meta, runs, jobs, save):
    """Follows one worker until it exits or is killed; returns the stage it
    was in, that job's partial row, why it was killed, and whether it
    finished any job."""
    stage, since, stage_since, seen, progressed = None, 0.0, 0.0, 0, False
    partial, killed = None, None
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
                runs.start(jobs[event["job"]])
                stage, partial = "setup", None
                since = stage_since = time.time()
            elif kind == "stage":
                stage, stage_since = event["stage"], time.time()
            elif kind == "partial":
                partial = event
                runs.partial(event)
            elif kind == "row":
                print(one_line(runs.finish(event)), flush=True)
                save()
                stage, progressed = None, True
        seen = len(lines)
        if done:
            return stage, partial, killed, progressed
        now = time.time()
        if runs.job is not None and stage in KERNEL_STAGES \
                and now - stage_since > a.kernel_timeout_s:
            killed = "killed after %d s in %s" % (a.kernel_timeout_s,
                                                  LABEL[stage])
        elif runs.job is not None and now - since > a.variant_timeout_s:
            killed = "killed after %d s" % a.variant_timeout_s
        elif deadline and now > deadline + 20:
            killed = KILLED_BUDGET
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return stage, partial, killed, progressed
        time.sleep(0.5)


def forwarded(a, deadline):
    out = ["--arch", a.arch, "--prepared", a.prepared,
           "--head-dim", str(a.head_dim), "--iters", str(a.iters),
           "--warmup", str(a.warmup), "--tol", str(a.tol),
           "--bwd-tol", str(a.bwd_tol),
           "--flex-reserve-s", str(a.flex_reserve_s),
           "--backward-flex-reserve-s", str(a.backward_flex_reserve_s),
           "--decode-iters", str(a.decode_iters),
           "--decode-warmup", str(a.decode_warmup),
           "--decode-flex-reserve-s", str(a.decode_flex_reserve_s)]
    if a.cpasync_bundles:
        out += ["--cpasync-bundles", a.cpasync_bundles]
    if getattr(a, "scratch", ""):
        out += ["--scratch", a.scratch]
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
    if name in DECODE_BY_NAME:
        return decode_placeholder(name, a)
    if name in BACKWARD_BY_NAME:
        return backward_placeholder(name, a)
    spec = BY_NAME[name]
    B, H, S = shape_of(spec, a)
    return dict(name=name, priority=spec.priority, source=spec.source,
                variant=spec.variant, B=B, H=H, S=S, D=a.head_dim,
                errors={}, notes=[])


def backward_shape(spec, a):
    """The catalog entry's shape unless the backward row has its own."""
    if a.quick:
        return spec.quick_shape or shape_of(BY_NAME[spec.catalog], a)
    if a.shape:
        return shape_of(BY_NAME[spec.catalog], a)
    return spec.shape or shape_of(BY_NAME[spec.catalog], a)


def backward_placeholder(name, a):
    spec = BACKWARD_BY_NAME[name]
    cat = BY_NAME[spec.catalog]
    B, H, S = backward_shape(spec, a)
    return dict(kind="backward", name=name, catalog=spec.catalog,
                source=cat.source, variant=cat.variant, B=B, H=H, S=S,
                D=a.head_dim, errors={}, notes=[])


def decode_placeholder(name, a):
    B, Hq, Hkv, Skv = decode_shape(DECODE_BY_NAME[name], a)
    return dict(kind="decode", name=name, source=DECODE_SOURCE,
                variant=DECODE_VARIANT, B=B, Hq=Hq, Hkv=Hkv, Sq=1, Skv=Skv,
                D=a.head_dim, stages=decode_stages(a), errors={}, notes=[])


def fmt(x, spec):
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def one_line(r):
    parts = ["%-16s %-8s" % (r["name"], r.get("status", "-"))]
    if r.get("kind") == "decode":
        for k in r["stages"]:
            if r.get("status_" + k):
                parts.append("%s %s" % (SHORT[k], decode_cell(r, k)))
        return "  ".join(parts)
    if r.get("kind") == "backward":
        for k in BACKWARD_STAGES:
            if r.get("status_" + k) or r.get(k + "_ms"):
                parts.append("%s bwd %s ms (rel-L1 dq %s dk %s dv %s)" % (
                    SHORT[k], fmt(r.get(k + "_ms"), ".3f"),
                    *(fmt(r.get("err_%s_%s" % (k, g)), ".1e")
                      for g in BACKWARD_GRADS)))
        return "  ".join(parts)
    for k in ("attnc", "cpasync", "flex", "sdpa"):
        if k != "attnc" and not (r.get("status_" + k) or r.get("err_" + k)
                                 or r.get(k + "_ms")):
            continue
        parts.append("%s %s ms (err %s)" % (SHORT.get(k, k),
                                            fmt(r.get(k + "_ms"), ".3f"),
                                            fmt(r.get("err_" + k), ".2e")))
    return "  ".join(parts)


def speedup(r, key, two):
    x = r.get(key)
    if not x:
        return "-"
    label = " (%s)" % BEST[r["attnc_best"]] if two else ""
    return "%.2fx%s" % (x, label)


def markdown(a, meta, rows, started, drows=(), brows=()):
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
    if rows:
        lines += catalog_markdown(a, rows)
    if brows:
        lines += backward_markdown(a, brows)
    if drows:
        lines += decode_markdown(a, drows)
    lines += ["", "Wall time %.0f s." % (time.time() - started)]
    return "\n".join(lines)


def catalog_markdown(a, rows):
    two = bool(a.cpasync_bundles) or any(r.get("status_cpasync") for r in rows)
    lines = ["",
             "bf16 inputs, D = %d; times are medians of %d CUDA-event-timed "
             "launches after %d warm-up; TFLOP/s count 4*B*H*S*S*D * density "
             "(the fraction of unmasked entries); errors are max |o - ref| "
             "against float32 math, FAIL above %.0e * max|ref|."
             % (a.head_dim, a.iters, a.warmup, a.tol)]
    if two:
        lines += ["",
                  "attnc: bundles/%s (TMA loads by a producer warp); attnc "
                  "cp.async: bundles/%s (--gpu-loads cp.async, every thread "
                  "copies). attnc/flex and attnc/sdpa use the faster correct "
                  "one of the two, named in parentheses; TMA/cp.async is "
                  "cp.async's time over TMA's (above 1: TMA is faster), both "
                  "correct." % (a.arch, a.cpasync_bundles or CPASYNC_DIR)]
    cols = [("variant", lambda r: r["name"]),
            ("B,H,S", lambda r: "%d,%d,%d" % (r["B"], r["H"], r["S"])),
            ("density", lambda r: fmt(r.get("density"), ".3f")),
            ("attnc ms", lambda r: fmt(r.get("attnc_ms"), ".3f"))]
    if two:
        cols.append(("attnc cp.async ms",
                     lambda r: fmt(r.get("cpasync_ms"), ".3f")))
    cols += [("flex ms", lambda r: fmt(r.get("flex_ms"), ".3f")),
             ("sdpa ms", lambda r: fmt(r.get("sdpa_ms"), ".3f")),
             ("attnc TFLOP/s", lambda r: fmt(r.get("attnc_tflops"), ".1f"))]
    if two:
        cols.append(("cp.async TFLOP/s",
                     lambda r: fmt(r.get("cpasync_tflops"), ".1f")))
    cols += [("flex TFLOP/s", lambda r: fmt(r.get("flex_tflops"), ".1f")),
             ("attnc/flex", lambda r: speedup(r, "attnc_vs_flex", two)),
             ("attnc/sdpa", lambda r: speedup(r, "attnc_vs_sdpa", two))]
    if two:
        cols.append(("TMA/cp.async",
                     lambda r: fmt(r.get("tma_vs_cpasync"), ".2f")
                     + ("x" if r.get("tma_vs_cpasync") else "")))
    cols.append(("max err attnc", lambda r: fmt(r.get("err_attnc"), ".2e")))
    if two:
        cols.append(("max err cp.async",
                     lambda r: fmt(r.get("err_cpasync"), ".2e")))
    cols += [("max err flex", lambda r: fmt(r.get("err_flex"), ".2e")),
             ("max err sdpa", lambda r: fmt(r.get("err_sdpa"), ".2e")),
             ("flex compile s", lambda r: fmt(r.get("flex_compile_s"), ".1f")),
             ("status", lambda r: r.get("status", "-"))]
    lines += ["", "| " + " | ".join(c for c, _ in cols) + " |",
              "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f(r) for _, f in cols) + " |")
    target = [r for r in rows if r["name"] == "dense_16k" and r.get("attnc_best")]
    if target:
        t = target[0]
        best = t["attnc_best"]
        lines += ["", "Issue 6 target, dense D=128 at S=16384 >= 700 TFLOP/s on "
                  "an H200: attnc%s %.0f TFLOP/s here (D=%d, S=%d)"
                  % (" " + BEST[best] if two else "", t[best + "_tflops"],
                     t["D"], t["S"])]
    notes = [r for r in rows if r.get("errors") or r.get("notes") or r.get("params")]
    if notes:
        lines += ["", "Notes:", ""]
        for r in notes:
            parts = ["%s=%s" % kv for kv in r.get("params", {}).items()]
            parts = (["params " + ", ".join(parts)] if parts else [])
            parts += r.get("notes", [])
            parts += ["%s: %s" % kv for kv in r.get("errors", {}).items()]
            lines.append("- %s: %s" % (r["name"], "; ".join(parts)))
    return lines


def backward_markdown(a, rows):
    lines = ["", "## Backward: dq, dk, dv against flex_attention's backward",
             "",
             "bf16 q, k, v and dO, D = %d, the catalog variant's inputs and "
             "params; gradients of sum(o * dO). attnc: a bundle compiled "
             "with --backward --lse (backward/%s/), its forward writing o "
             "and lse, then its backward timed alone (no param or capture "
             "gradients asked for). flex: torch.compile(flex_attention) "
             "forward on inputs that require grad, then "
             "torch.autograd.grad(o, (q, k, v), dO) timed alone (CUDA events "
             "around it, each after an untimed forward); its compilation is "
             "not timed. Times are medians of %d launches after %d warm-up. "
             "Backward TFLOP/s count %.1fx the forward's 4*B*H*S*S*D * "
             "density (FA2's convention: five S x S x D products per kept "
             "entry against the forward's two; recomputations are not "
             "counted). attnc/flex: flex's backward time over attnc's (above "
             "1: attnc is faster), both correct. bwd/fwd: backward time over "
             "the same implementation's forward (attnc's with lse, flex's "
             "with grad). rel-L1: sum |g - ref| / sum |ref| per gradient "
             "against float32 autograd through the same math; attnc FAILs "
             "above %.0e in dq, dk or dv (and above the forward's bound in "
             "o); attnc vs flex: the same measure of attnc's gradients "
             "against flex's. select rows (moba, flex_prefill, block_theta): "
             "the blocks are chosen from q, k by the same rule in torch "
             "(mean-pooled 64-token blocks, plus the diagonal block) and "
             "held constant, part of the reference's and flex's mask (flex's "
             "BlockMask built outside its timing); attnc's backward time "
             "includes its own select pre-pass on the device (so does its "
             "forward time); density counts the selected entries only."
             % (a.head_dim, a.arch, a.iters, a.warmup, BACKWARD_FLOPS,
                a.bwd_tol)]

    def errs(r, key):
        vals = [r.get("err_%s_%s" % (key, g)) for g in BACKWARD_GRADS]
        if all(x is None for x in vals):
            return "-"
        return " / ".join(fmt(x, ".1e") for x in vals)
    cols = [("variant", lambda r: r["catalog"]),
            ("B,H,S", lambda r: "%d,%d,%d" % (r["B"], r["H"], r["S"])),
            ("density", lambda r: fmt(r.get("density"), ".3f")),
            ("attnc bwd ms", lambda r: fmt(r.get("b_attnc_ms"), ".3f")),
            ("flex bwd ms", lambda r: fmt(r.get("b_flex_ms"), ".3f")),
            ("attnc bwd TFLOP/s", lambda r: fmt(r.get("b_attnc_tflops"),
                                                ".1f")),
            ("flex bwd TFLOP/s", lambda r: fmt(r.get("b_flex_tflops"), ".1f")),
            ("attnc/flex", lambda r: fmt(r.get("attnc_vs_flex"), ".2f")
             + ("x" if r.get("attnc_vs_flex") else "")),
            ("attnc fwd ms", lambda r: fmt(r.get("b_attnc_fwd_ms"), ".3f")),
            ("attnc bwd/fwd", lambda r: fmt(r.get("b_attnc_bwd_over_fwd"),
                                            ".2f")),
            ("flex bwd/fwd", lambda r: fmt(r.get("b_flex_bwd_over_fwd"),
                                           ".2f")),
            ("rel-L1 dq/dk/dv attnc", lambda r: errs(r, "b_attnc")),
            ("rel-L1 flex", lambda r: errs(r, "b_flex")),
            ("attnc vs flex", lambda r: errs(r, "attnc_vs_flex")),
            ("flex compile s", lambda r: fmt(r.get("b_flex_compile_s"),
                                             ".1f")),
            ("status", lambda r: r.get("status", "-"))]
    lines += ["", "| " + " | ".join(c for c, _ in cols) + " |",
              "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f(r) for _, f in cols) + " |")
    notes = []
    for r in rows:
        parts = ["%s=%s" % kv for kv in r.get("params", {}).items()]
        parts = (["params " + ", ".join(parts)] if parts else [])
        parts += r.get("notes", [])
        parts += ["%s: %s" % kv for kv in r.get("errors", {}).items()]
        if parts:
            notes.append("- %s: %s" % (r["name"], "; ".join(parts)))
    if notes:
        lines += ["", "Notes:", ""] + notes
    return lines


def decode_cell(r, k):
    """One decode column of a row, for the progress lines."""
    status = r.get("status_" + k, "-")
    if status == "unsupported":
        return UNSUPPORTED
    if not r.get(k + "_ms"):
        return status
    return "%s %.3f ms %.0f GB/s = %.2f of copy (err %s)" % (
        status, r[k + "_ms"], r[k + "_gbs"], r[k + "_of_copy"],
        fmt(r.get("err_" + k), ".2e"))


def decode_markdown(a, rows):
    flush = next((r["flush_mib"] for r in rows if r.get("flush_mib")), None)
    lines = ["", "## Decode: K/V bytes read per second against a copy", "",
             "Sq = 1, bf16 queries, D = %d, %s `%s` (softmax, no mask). K "
             "and V [B, Hkv, Skv, D] as stored: bf16, or int8 / fp8e4m3 "
             "codes with f32 scales (K per channel for each group of %d "
             "tokens, V per token; quantized on the GPU, scale = amax / 127 "
             "or 448; their codes stream by cp.async on every target, attnc "
             "refuses TMA for them). MB read counts those bytes, codes and "
             "scales; GB/s = "
             "MB read / time; copy GB/s is `dst.copy_(src)` of as many bytes "
             "(flat uint8 device buffers) on the same stream, timed the same "
             "way right after; of copy = GB/s / copy GB/s. Times are medians "
             "of %d CUDA-event-timed launches after %d warm-up, each after an "
             "L2 flush (a write of twice the L2%s) and queued behind a ~1 ms "
             "GPU sleep, "
             "so the launch's CPU overhead is not timed. err: relative L1, "
             "sum |o - ref| / sum |ref|, against float32 attention on the "
             "unquantized bf16 K/V; an attnc kernel FAILs above %s. split-KV "
             "auto: parts chosen at launch from the SM count."
             % (a.head_dim, DECODE_SOURCE, DECODE_VARIANT, KV_GROUP,
                a.decode_iters, a.decode_warmup,
                ", %d MiB" % flush if flush else "",
                ", ".join("%s %s" % kv for kv in DECODE_TOL.items()))]
    cols = ["B,Hq,Hkv,Skv", "kernel", "K/V", "split-KV", "ms", "MB read",
            "GB/s", "copy GB/s", "of copy", "rel-L1 err", "status"]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        shape = "%d,%d,%d,%d" % (r["B"], r["Hq"], r["Hkv"], r["Skv"])
        for k in r["stages"]:
            if k in DECODE_KERNEL_INFO:
                _, column, kv, split = DECODE_KERNEL_INFO[k]
                kernel = "attnc" if column == "attnc" else "attnc cp.async"
                split = "auto" if split == 0 else str(split)
            else:
                kernel, kv, split = k[2:], "bf16", "-"
            status = r.get("status_" + k, "-")
            nbytes = r.get(k + "_bytes")
            lines.append("| " + " | ".join([
                shape, kernel, kv, split, fmt(r.get(k + "_ms"), ".4f"),
                fmt(nbytes / 1e6 if nbytes else None, ".1f"),
                fmt(r.get(k + "_gbs"), ".0f"),
                fmt(r.get(k + "_copy_gbs"), ".0f"),
                fmt(r.get(k + "_of_copy"), ".2f"),
                fmt(r.get("err_" + k), ".2e"),
                UNSUPPORTED if status == "unsupported" else status]) + " |")
    lines += [""] + decode_targets(rows)
    unsupported = {}
    for r in rows:
        for k, why in r.get("unsupported", {}).items():
            names = unsupported.setdefault(why, [])
            if LABEL[k] not in names:
                names.append(LABEL[k])
    notes = ["%s: %s (%s)" % (", ".join(names), UNSUPPORTED, why)
             for why, names in unsupported.items()]
    for r in rows:
        parts = list(r.get("notes", []))
        parts += ["%s: %s" % kv for kv in r.get("errors", {}).items()]
        if r.get("d_flex_compile_s") is not None:
            parts.append("flex compiled in %.1f s" % r["d_flex_compile_s"])
        if parts:
            notes.append("%s: %s" % (r["name"], "; ".join(parts)))
    if notes:
        lines += ["", "Notes:", ""] + ["- " + n for n in notes]
    return lines


def decode_targets(rows):
    """Issue 8's two decode targets, from the B = 1 long-context row."""
    r = next((r for r in rows if r["name"] == "decode_64k"), None)
    if r is None:
        return []
    here = "" if r["Skv"] == DECODE_TARGET_SKV else " (Skv = %d here)" % r["Skv"]
    ratios = ["%s %.2f" % (SHORT[k], r[k + "_of_copy"])
              for k in DECODE_KERNELS
              if r.get("status_" + k) == "ok" and k in r["stages"]
              and DECODE_KERNEL_INFO[k][2] == "bf16"]
    lines = ["Issue 8 targets at B = 1, Skv = %d%s:" % (DECODE_TARGET_SKV,
                                                        here), "",
             "- bf16 K/V at >= %.2f of the copy bandwidth: attnc %s"
             % (DECODE_TARGET_RATIO, ", ".join(ratios) if ratios else
                "no correct bf16 kernel measured (%s)"
                % r.get("status_d_auto", "-"))]
    for kv in ("int8", "fp8e4m3"):
        key, status = "d_" + kv, r.get("status_d_" + kv, "-")
        target = " (target 0.5)" if kv == "int8" else ""
        if r.get(kv + "_vs_bf16"):
            lines.append("- %s K/V decode time / bf16's: %.2f%s"
                         % (kv, r[kv + "_vs_bf16"], target))
        elif status == "unsupported":
            lines.append("- %s K/V: %s%s" % (kv, UNSUPPORTED, target))
        else:
            lines.append("- %s K/V decode time / bf16's: not measured (%s, "
                         "bf16 %s)%s" % (kv, status,
                                         r.get("status_d_auto", "-"), target))
    return lines


def write_results(a, meta, rows, started, drows=(), brows=()):
    def clean(x):  # JSON has no NaN/inf
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    bundles = dict(attnc=a.arch)
    if a.cpasync_bundles:
        bundles["cpasync"] = a.cpasync_bundles
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(clean(dict(meta=meta, bundles=bundles, head_dim=a.head_dim,
                             iters=a.iters, warmup=a.warmup, tol=a.tol,
                             rows=rows, backward=dict(
                                 tol=a.bwd_tol, flops_factor=BACKWARD_FLOPS,
                                 folder=a.arch, rows=list(brows)),
                             decode=dict(
                                 iters=a.decode_iters,
                                 warmup=a.decode_warmup, tol=DECODE_TOL,
                                 kv_group=KV_GROUP, rows=list(drows)))),
                  f, indent=1)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(markdown(a, meta, rows, started, drows, brows) + "\n")


def self_test():
    """Part of --list: the driver's plan and bookkeeping, without torch or
    processes: what happens to a variant's other stages when one hangs,
    crashes or loses the CUDA context, giving up, the time budget, the best
    attnc kernel, the tables."""
    bad = []

    def expect(cond, what):
        if not cond:
            bad.append("self-test: " + what)
    a = parse_args(["--cpasync-bundles", CPASYNC_DIR])
    jobs = plan_jobs(CATALOG, True)
    p1 = [s.name for s in CATALOG if s.priority != "P0"]
    n = len(CATALOG)
    expect([j["name"] for j in jobs[n:]] == p1
           and all(j["stages"] == ["cpasync"] for j in jobs[n:]),
           "P1 variants' cp.async jobs come after every variant's job")
    expect(jobs[0] == dict(name="dense",
                           stages=["attnc", "cpasync", "flex", "sdpa"]),
           "dense runs attnc, cp.async, flex, sdpa")
    expect(all("cpasync" not in j["stages"]
               for j in plan_jobs(CATALOG, False)),
           "no cp.async jobs without --cpasync-bundles")

    def measured(name, **fields):
        return dict(placeholder(name, a), density=1.0, bound=0.01, **fields)
    runs = Runs(a, jobs)
    # dense: the TMA kernel hangs; the rest runs in a new worker.
    runs.start(runs.queue[0])
    runs.partial(measured("dense", status_attnc="FAIL", err_attnc=0.5))
    runs.crash("attnc", measured("dense", err_attnc=0.5), "TIMEOUT",
               "killed after 30 s in attnc")
    expect(runs.queue[0] == dict(name="dense",
                                 stages=["cpasync", "flex", "sdpa"]),
           "a hang in attnc puts cp.async, flex and sdpa first")
    runs.start(runs.queue[0])
    runs.finish(measured("dense", status_cpasync="ok", cpasync_ms=2.0,
                         err_cpasync=1e-3, flex_ms=3.0, sdpa_ms=1.0))
    r = runs.rows["dense"]
    expect(r["status"] == "attnc TIMEOUT, cp.async ok" and row_failed(r)
           and r.get("err_attnc") == 0.5,
           "dense keeps both columns: %s" % r["status"])
    expect(r.get("attnc_best") == "cpasync"
           and abs(r.get("attnc_vs_flex", 0) - 1.5) < 1e-9
           and abs(r.get("attnc_vs_sdpa", 0) - 0.5) < 1e-9
           and "tma_vs_cpasync" not in r,
           "dense: speedups from the correct kernel only")
    # causal: the TMA kernel loses the context, the worker survives it.
    runs.start(runs.queue[0])
    runs.finish(measured("causal", status_attnc="CRASH",
                         unfinished=["cpasync", "flex", "sdpa"]))
    expect(runs.queue[0] == dict(name="causal",
                                 stages=["cpasync", "flex", "sdpa"]),
           "a lost context in attnc puts cp.async, flex and sdpa first")
    expect(runs.given_up == ["attnc"]
           and all("attnc" not in j["stages"] for j in runs.queue)
           and runs.rows["sliding_sink"]["status_attnc"] == "skipped"
           and len(runs.queue) == len(jobs) - 1,
           "attnc given up after --give-up-after (2) hangs or crashes")
    # causal again: cp.async crashes the worker, flex and sdpa go on.
    runs.start(runs.queue[0])
    runs.crash("cpasync", measured("causal"), "CRASH",
               "worker died, exit status -11")
    expect(runs.queue[0] == dict(name="causal", stages=["flex", "sdpa"])
           and runs.rows["causal"]["status"] == "CRASH",
           "a crash in cp.async puts flex and sdpa first")
    # sliding_sink: flex crashes: a note, not a failed row.
    runs.start(runs.queue[1])
    runs.crash("flex", measured("sliding_sink", status_cpasync="ok",
                                cpasync_ms=1.0), "CRASH", "worker died")
    r = runs.rows["sliding_sink"]
    expect(r["status"] == "attnc skipped, cp.async ok" and not row_failed(r)
           and "CRASH" in r["errors"].get("flex", ""),
           "a flex crash is noted: %s" % r["status"])
    runs.skip_rest("time budget spent")
    r = runs.rows[p1[0]]
    expect(not runs.queue and r["status_cpasync"] == "skipped"
           and "flex, attnc cp.async not run: time budget spent"
           in r["notes"],
           "the budget skips what is queued")
    r = summarize(measured("alibi", status_attnc="ok", attnc_ms=1.0,
                           status_cpasync="ok", cpasync_ms=1.25, flex_ms=2.0))
    expect(r["status"] == "ok" and r["attnc_best"] == "attnc"
           and r["tma_vs_cpasync"] == 1.25 and r["attnc_vs_flex"] == 2.0,
           "both correct: the faster one, and TMA/cp.async")
    r = summarize(measured("alibi", status_attnc="FAIL", attnc_ms=0.5,
                           status_cpasync="ok", cpasync_ms=1.0, flex_ms=2.0))
    expect(r["status"] == "attnc FAIL, cp.async ok"
           and r["attnc_best"] == "cpasync" and r["attnc_vs_flex"] == 2.0,
           "a wrong kernel is never the best")
    rows = runs.ordered() + [r]
    text = markdown(a, {}, rows, time.time())
    expect("| attnc cp.async ms |" in text and "2.00x (cp.async)" in text
           and "1.50x (cp.async)" in text, "the sm_90a table")
    a.cpasync_bundles = ""
    text = markdown(a, {}, [summarize(measured(
        "dense", status_attnc="ok", attnc_ms=1.0, flex_ms=2.0))], time.time())
    expect("cp.async" not in text and "| 2.00x |" in text, "the sm_80 table")
    for f in ("prepare.sh", "run.sh"):
        expect(CPASYNC_DIR in open(os.path.join(HERE, f)).read(),
               "%s names bundles/%s" % (f, CPASYNC_DIR))
    return bad + self_test_decode() + self_test_backward()


def self_test_decode():
    """The decode section's plan and bookkeeping: sections picked by --only,
    its share of the budget, quantized bundles attnc does not compile yet,
    a hang in one column, ratios and the table."""
    import tempfile
    bad = []

    def expect(cond, what):
        if not cond:
            bad.append("self-test (decode): " + what)

    def names(section):
        return [x.name for x in section]
    a = parse_args(["--cpasync-bundles", CPASYNC_DIR])
    specs, dspecs = select(a)
    expect(len(specs) == len(CATALOG) and names(dspecs) == names(DECODE),
           "a full run has the catalog and the decode section")
    for argv, want in ((["--only-decode"], ([], names(DECODE))),
                       (["--only", "dense"], (["dense"], [])),
                       (["--only", "dense,decode"], (["dense"], names(DECODE))),
                       (["--only", "decode_64k"], ([], ["decode_64k"])),
                       (["--no-decode"], (names(CATALOG), []))):
        got = tuple(names(x) for x in select(parse_args(argv)))
        expect(got == want, "%s selects %s, not %s" % (argv, want, got))
    expect(section_deadline(a, 1000.0, specs, dspecs) == 940.0
           and section_deadline(a, 1000.0, specs, []) == 1000.0
           and section_deadline(a, None, specs, dspecs) is None,
           "the catalog leaves the last 60 s to decode")

    # prepare.sh left markers for the quantized bundles: settled, not run.
    with tempfile.TemporaryDirectory() as prepared:
        b = parse_args(["--cpasync-bundles", CPASYNC_DIR, "--prepared",
                        prepared])
        for name, needed, _ in DECODE_BUNDLES:
            path = decode_bundle_path(prepared, b.arch, b.head_dim, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if needed:
                open(path, "w").close()
            else:
                with open(path[:-len(".attnpkg")] + ".unsupported", "w") as f:
                    f.write("attnc: error: --target: no %s yet\n" % name)
        jobs, rows = plan_decode(b, DECODE)
    expect([j["stages"] for j in jobs]
           == [["d_auto", "d_split16", "d_cpasync", "d_sdpa"]] * 2
           + [["d_flex"]] * 2,
           "decode jobs: attnc bf16 columns and SDPA per shape, flex last: %s"
           % [j["stages"] for j in jobs])
    expect(rows[0]["status_d_int8"] == "unsupported"
           and rows[0]["unsupported"]["d_fp8e4m3"]
           == "attnc: error: --target: no fp8e4m3 yet",
           "a bundle attnc did not compile is not supported, with its reason")
    runs = Runs(a, jobs, rows)
    expect(runs.order == names(DECODE) and not row_failed(runs.rows[
        "decode_64k"]), "unsupported columns are no failure")

    def measured(name, **fields):
        return dict(decode_placeholder(name, a), reference_s=0.1, **fields)

    def timed(key, ms, of_copy, **fields):
        return dict({key + "_ms": ms, key + "_bytes": 268435456,
                     key + "_gbs": 268.435456 / ms,
                     key + "_copy_gbs": 268.435456 / ms / of_copy,
                     key + "_of_copy": of_copy, "status_" + key: "ok",
                     "err_" + key: 2e-3}, **fields)
    # decode_64k: split 16 hangs; cp.async and SDPA go on in a new worker.
    runs.start(runs.queue[0])
    runs.partial(measured("decode_64k", **timed("d_auto", 0.1, 0.9)))
    runs.crash("d_split16", measured("decode_64k", **timed("d_auto", 0.1, 0.9)),
               "TIMEOUT", "killed after 30 s in attnc bf16 split 16")
    expect(runs.queue[0] == dict(name="decode_64k",
                                 stages=["d_cpasync", "d_sdpa"]),
           "a hang in split 16 puts cp.async and SDPA first: %s"
           % runs.queue[0])
    r = runs.rows["decode_64k"]
    expect(r["status"] == "bf16 split 16 TIMEOUT" and row_failed(r)
           and r["status_d_int8"] == "unsupported"
           and r.get("d_auto_of_copy") == 0.9,
           "the hang is the row's status: %s" % r["status"])
    runs.start(runs.queue[0])
    runs.finish(measured("decode_64k", **dict(
        timed("d_cpasync", 0.125, 0.72), **timed("d_sdpa", 0.2, 0.45))))
    r = runs.rows["decode_64k"]
    expect(r.get("d_auto_ms") == 0.1 and r.get("d_cpasync_ms") == 0.125
           and "int8_vs_bf16" not in r, "both workers' columns are kept")
    runs.skip_rest("time budget spent")
    r, r2 = runs.rows["decode_64k"], runs.rows["decode_b8_16k"]
    expect(r2["status_d_auto"] == "skipped"
           and r2["status_d_flex"] == "skipped"
           and r["status_d_flex"] == "skipped" and not runs.queue,
           "the budget skips what is queued")
    text = "\n".join(decode_markdown(a, runs.ordered()))
    expect("| 1,32,8,65536 | attnc | int8 | auto | - | - | - | - | - | - | "
           "not supported on GPU yet |" in text
           and "| 1,32,8,65536 | attnc | bf16 | auto | 0.1000 | 268.4 | 2684 "
           "| 2983 | 0.90 | 2.00e-03 | ok |" in text
           and "attnc bf16 0.90, cp.async bf16 0.72" in text
           and "- int8 K/V: not supported on GPU yet (target 0.5)" in text
           and "- attnc int8: not supported on GPU yet (attnc: error: "
           "--target: no int8 yet)" in text,
           "the decode table:\n" + text)
    r = summarize(measured("decode_64k", **dict(
        timed("d_auto", 0.1, 0.9), **timed("d_int8", 0.06, 0.8))))
    expect(abs(r.get("int8_vs_bf16", 0) - 0.6) < 1e-9 and r["status"] == "ok",
           "int8 / bf16 time")
    text = "\n".join(decode_targets([r]))
    expect("- int8 K/V decode time / bf16's: 0.60 (target 0.5)" in text,
           "the int8 target line:\n" + text)
    r = summarize(measured("decode_64k", **dict(
        timed("d_auto", 0.1, 0.9), **timed("d_int8", 0.06, 0.8,
                                           status_d_int8="FAIL"))))
    expect("int8_vs_bf16" not in r and r["status"] == "int8 FAIL"
           and row_failed(r), "a wrong int8 kernel has no ratio")
    script = open(os.path.join(HERE, "prepare.sh")).read()
    expect("--decode-bundles" in script and ".unsupported" in script,
           "prepare.sh builds the decode bundles, quantized ones optional")
    return bad


def self_test_backward():
    """The backward section's plan and bookkeeping: what --only,
    --only-backward, --no-backward and --only-decode select, its share of
    the budget, attnc's jobs before flex's, the status, the ratios and the
    table."""
    bad = []

    def expect(cond, what):
        if not cond:
            bad.append("self-test (backward): " + what)

    def names(section):
        return [x.name for x in section]
    every = names(BACKWARD)
    for argv, want in (([], (names(CATALOG), every, names(DECODE))),
                       (["--only-backward"], ([], every, [])),
                       (["--only-backward", "--only", "causal_bwd"],
                        ([], ["causal_bwd"], [])),
                       (["--only-backward", "--only", "dense"],
                        ([], every, [])),
                       (["--only", "causal_bwd,alibi_bwd"],
                        ([], ["causal_bwd", "alibi_bwd"], [])),
                       (["--only", "dense,backward"],
                        (["dense"], every, [])),
                       (["--only", "dense"], (["dense"], [], [])),
                       (["--only", "moba_bwd,block_theta_bwd"],
                        ([], ["moba_bwd", "block_theta_bwd"], [])),
                       (["--only", "moba,flex_prefill_bwd"],
                        (["moba"], ["flex_prefill_bwd"], [])),
                       (["--only-backward", "--only", "moba"],
                        ([], every, [])),
                       (["--no-backward"],
                        (names(CATALOG), [], names(DECODE))),
                       (["--only-decode"], ([], [], names(DECODE)))):
        b = parse_args(argv)
        specs, dspecs = select(b)
        got = (names(specs), names(select_backward(b)), names(dspecs))
        expect(got == want, "%s selects %s, not %s" % (argv, want, got))
    a = parse_args(["--budget-s", "1000"])
    specs, dspecs = select(a)
    bspecs = select_backward(a)
    expect(section_deadline(a, 1000.0, specs, dspecs, bspecs) == 820.0
           and section_deadline(a, 1000.0, bspecs, dspecs) == 940.0
           and section_deadline(a, 1000.0, specs, [], bspecs) == 880.0
           and section_deadline(a, 1000.0, bspecs, []) == 1000.0,
           "catalog, then backward (120 s), then decode (60 s)")
    jobs = plan_backward(a, bspecs)
    expect([j["stages"] for j in jobs] == [["b_attnc"]] * len(BACKWARD)
           + [["b_flex"]] * len(BACKWARD), "attnc's jobs before flex's")
    selects = ["moba_bwd", "flex_prefill_bwd", "block_theta_bwd"]
    expect([j["name"] for j in jobs] == every + every
           and every[-3:] == selects,
           "jobs in BACKWARD's order, the select rows last: %s"
           % [j["name"] for j in jobs])
    expect(all(BY_NAME[n[:-4]].build in (b_moba, b_flex_prefill,
                                         b_block_theta) for n in selects)
           and [x for x in backward_bundles()
                if x[1] == EX + "select.attn"]
           == [(n[:-4], EX + "select.attn") for n in selects],
           "prepare.sh's backward bundles include select.attn's three "
           "variants: %s" % backward_bundles())
    expect(backward_placeholder("moba_bwd", parse_args(["--quick"]))["S"]
           == QUICK_SHAPE[2]
           and backward_placeholder("moba_bwd", a)["S"] == DEFAULT_SHAPE[2],
           "the select rows take the catalog's shapes")
    expect(plan_backward(parse_args(["--no-flex"]), bspecs)
           == jobs[:len(BACKWARD)], "--no-flex: attnc's jobs only")
    expect(all(BY_NAME[b.catalog].flex for b in BACKWARD)
           and not check_catalog(), "flex expresses every backward row")
    q = parse_args(["--quick"])
    sm = parse_args(["--smoke"])
    expect(sm.quick and sm.no_flex and (sm.iters, sm.warmup) == (1, 0)
           and plan_backward(sm, bspecs) == jobs[:len(BACKWARD)]
           and "--no-flex" in forwarded(sm, None)
           and "--quick" in forwarded(sm, None)
           and parse_args(["--smoke", "--iters", "2"]).iters == 2,
           "--smoke: tiny shapes, attnc's jobs only, one launch")
    expect(backward_placeholder("causal_bwd", q)["S"] == QUICK_SHAPE[2]
           and backward_placeholder("causal_bwd", a)["S"]
           == DEFAULT_SHAPE[2] and backward_placeholder(
               "causal_bwd", parse_args(["--shape", "2,4,1024"]))["S"] == 1024,
           "backward rows take the catalog's shapes")
    runs = Runs(a, jobs)

    def measured(name, **fields):
        return dict(backward_placeholder(name, a), density=0.5,
                    bound=0.01, reference_s=1.0, **fields)
    # dense_bwd: attnc hangs; flex still runs later.
    runs.start(runs.queue[0])
    runs.crash("b_attnc", measured("dense_bwd"), "TIMEOUT",
               "killed after 30 s in attnc backward")
    r = runs.rows["dense_bwd"]
    expect(r["status"] == "TIMEOUT" and row_failed(r)
           and runs.queue[0]["name"] == "causal_bwd",
           "a hang in attnc's backward fails its row: %s" % r["status"])
    runs.start(runs.queue[0])
    runs.finish(measured("causal_bwd", status_b_attnc="ok", b_attnc_ms=2.0,
                         b_attnc_fwd_ms=0.8, b_attnc_tflops=300.0,
                         err_b_attnc_dq=3e-3, err_b_attnc_dk=4e-3,
                         err_b_attnc_dv=2e-3, b_attnc_bwd_over_fwd=2.5))
    i = next(i for i, j in enumerate(runs.queue)
             if j == dict(name="causal_bwd", stages=["b_flex"]))
    runs.start(runs.queue[i])
    runs.finish(measured("causal_bwd", status_b_flex="ok", b_flex_ms=3.0,
                         b_flex_fwd_ms=1.0, b_flex_tflops=200.0,
                         err_b_flex_dq=5e-3, err_b_flex_dk=5e-3,
                         err_b_flex_dv=5e-3, err_attnc_vs_flex_dq=4e-3,
                         err_attnc_vs_flex_dk=4e-3, err_attnc_vs_flex_dv=4e-3,
                         b_flex_bwd_over_fwd=3.0, b_flex_compile_s=20.0))
    r = runs.rows["causal_bwd"]
    expect(r["status"] == "ok" and abs(r.get("attnc_vs_flex", 0) - 1.5)
           < 1e-9 and r.get("b_attnc_ms") == 2.0 and not row_failed(r),
           "both workers' columns are kept, attnc/flex = 1.5: %s" % r)
    r2 = summarize(measured("alibi_bwd", status_b_attnc="FAIL",
                            b_attnc_ms=1.0, status_b_flex="ok", b_flex_ms=3.0))
    expect(r2["status"] == "FAIL" and "attnc_vs_flex" not in r2
           and row_failed(r2), "a wrong attnc backward has no ratio")
    r3 = summarize(measured("softcap_bwd", status_b_attnc="ok",
                            b_attnc_ms=1.0, status_b_flex="ERROR"))
    expect(r3["status"] == "ok" and not row_failed(r3),
           "flex's errors are notes, not failures")
    runs.skip_rest("time budget spent")
    expect(runs.rows["alibi_bwd"]["status_b_flex"] == "skipped"
           and not runs.queue, "the budget skips what is queued")
    text = "\n".join(backward_markdown(a, runs.ordered()))
    expect("| causal | 4,16,4096 | 0.500 | 2.000 | 3.000 | 300.0 | 200.0 | "
           "1.50x | 0.800 | 2.50 | 3.00 | 3.0e-03 / 4.0e-03 / 2.0e-03 | "
           "5.0e-03 / 5.0e-03 / 5.0e-03 | 4.0e-03 / 4.0e-03 / 4.0e-03 | "
           "20.0 | ok |" in text and "| dense | 4,16,4096 |" in text
           and "2.5x the forward's" in text,
           "the backward table:\n" + text)
    text = markdown(a, {}, [], time.time(), (), runs.ordered())
    expect("## Backward: dq, dk, dv" in text, "results.md's section")
    line = one_line(runs.rows["causal_bwd"])
    expect("attnc bwd 2.000 ms" in line and "flex bwd 3.000 ms" in line,
           "the progress line: " + line)
    script = open(os.path.join(HERE, "prepare.sh")).read()
    expect("--backward-bundles" in script and "--backward --lse" in script,
           "prepare.sh builds the backward bundles with --backward --lse")
    return bad


def list_catalog():
    print("| name | priority | source | variant | flex | sdpa | shape (B,H,S) |")
    print("|---|---|---|---|---|---|---|")
    for s in CATALOG:
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            s.name, s.priority, s.source, s.variant, "yes" if s.flex else "no",
            s.sdpa or "-", ",".join(map(str, s.shape or DEFAULT_SHAPE))))
    print()
    print("attnc columns: on 9.x, attnc = bundles/sm_90a (--gpu-loads tma) and "
          "attnc cp.async = bundles/%s (P1 variants' cp.async last); "
          "elsewhere attnc = bundles/sm_80." % CPASYNC_DIR)
    print()
    print("decode (after the catalog; --only-decode, --no-decode): %s `%s`, "
          "Sq = 1, bf16 q; shapes (B,Hq,Hkv,Skv) %s; attnc columns %s "
          "(bundles from `bench.py --decode-bundles`), then sdpa and flex"
          % (DECODE_SOURCE, DECODE_VARIANT,
             ", ".join("%s %s" % (d.name, ",".join(map(str, d.shape)))
                       for d in DECODE),
             ", ".join(LABEL[k] for k in DECODE_KERNELS)))
    bad = check_catalog() + self_test()
    for line in bad:
        print("error: " + line, file=sys.stderr)
    print()
    print("backward (after the catalog, before decode; --only-backward, "
          "--no-backward): %s; attnc (backward/<arch>/, --backward --lse) "
          "against flex_attention's backward, gradients against float32 "
          "autograd" % ", ".join(b.name for b in BACKWARD))
    print("catalog and driver self-test: %s" % ("FAILED" if bad else "ok"))
    return 1 if bad else 0


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true",
                   help="print the catalog, check its .attn files and the "
                   "driver's bookkeeping (no torch)")
    p.add_argument("--bundles", action="store_true",
                   help="print 'variant source' per bundle to build (prepare.sh)")
    p.add_argument("--check-prepared", metavar="DIR",
                   help="check prepare.sh's bundles in DIR (no torch)")
    p.add_argument("--decode-bundles", action="store_true",
                   help="print 'name needed|optional source variant flags' "
                   "per decode bundle to build (prepare.sh)")
    p.add_argument("--only", action="append",
                   help="variants, comma-separated; 'decode' or a decode "
                   "shape (%s) for the decode section; 'backward' or a "
                   "backward row (%s) for the backward section"
                   % (", ".join(DECODE_BY_NAME), ", ".join(BACKWARD_BY_NAME)))
    p.add_argument("--only-decode", action="store_true",
                   help="the decode section only")
    p.add_argument("--no-decode", action="store_true",
                   help="no decode section")
    p.add_argument("--decode-budget-s", type=float, default=60,
                   help="the end of --budget-s kept for the decode section")
    p.add_argument("--decode-iters", type=int, default=None)
    p.add_argument("--decode-warmup", type=int, default=None)
    p.add_argument("--decode-flex-reserve-s", type=float, default=30,
                   help="skip flex in the decode section when less than "
                   "this is left of the budget")
    p.add_argument("--backward-bundles", action="store_true",
                   help="print 'variant source' per backward bundle to "
                   "build with --backward --lse (prepare.sh)")
    p.add_argument("--only-backward", action="store_true",
                   help="the backward section only (with --only: its rows "
                   "named there)")
    p.add_argument("--no-backward", action="store_true",
                   help="no backward section")
    p.add_argument("--backward-budget-s", type=float, default=120,
                   help="the part of --budget-s before the decode section's "
                   "kept for the backward section")
    p.add_argument("--backward-flex-reserve-s", type=float, default=40,
                   help="skip flex in the backward section when less than "
                   "this is left of its budget")
    p.add_argument("--bwd-tol", type=float, default=2e-2,
                   help="FAIL attnc's backward when the relative L1 error "
                   "of dq, dk or dv exceeds this")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few iterations: a smoke run")
    p.add_argument("--smoke", action="store_true",
                   help="correctness first: --quick's tiny shapes, attnc's "
                   "kernels (and SDPA) checked against the reference with "
                   "one timed launch each, no flex; run.sh runs it before "
                   "the timed table")
    p.add_argument("--shape", help="B,H,S for every catalog variant")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--arch", default="sm_90a",
                   help="bundle folder of the attnc column: sm_90a|sm_80")
    p.add_argument("--cpasync-bundles", default="", metavar="FOLDER",
                   help="bundle folder of the 'attnc cp.async' column "
                   "(run.sh: %s on 9.x); empty: no such column" % CPASYNC_DIR)
    p.add_argument("--no-cpasync", action="store_true",
                   help="no 'attnc cp.async' column")
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
    p.add_argument("--variant-timeout-s", type=float, default=240,
                   help="kill a worker this long in one job")
    p.add_argument("--kernel-timeout-s", type=float, default=30,
                   help="kill a worker this long in one attnc kernel's or "
                   "SDPA's check and timing (a hang)")
    p.add_argument("--give-up-after", type=int, default=2,
                   help="stop running an attnc kernel after it hung or "
                   "crashed in this many variants (0: never)")
    p.add_argument("--flex-reserve-s", type=float, default=90,
                   help="skip flex when less than this is left of the budget")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rows-file", help=argparse.SUPPRESS)
    p.add_argument("--jobs-file", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    a = make_parser().parse_args(argv)
    if a.no_cpasync:
        a.cpasync_bundles = ""
    if a.smoke:
        # Seconds per variant: what a smoke run proves is that every kernel
        # loads, runs and matches the reference, not how fast it is.
        a.quick = True
        a.no_flex = True
        for name in ("iters", "decode_iters"):
            if getattr(a, name) is None:
                setattr(a, name, 1)
        for name in ("warmup", "decode_warmup"):
            if getattr(a, name) is None:
                setattr(a, name, 0)
    if a.iters is None:
        a.iters = 3 if a.quick else 20
    if a.warmup is None:
        a.warmup = 1 if a.quick else 5
    if a.decode_iters is None:
        a.decode_iters = 5 if a.quick else 100
    if a.decode_warmup is None:
        a.decode_warmup = 1 if a.quick else 10
    return a


def main():
    a = parse_args()
    if a.list:
        return list_catalog()
    if a.check_prepared:
        return check_prepared(a.check_prepared)
    if a.bundles:
        for variant, source in dict((s.variant, s.source) for s in CATALOG).items():
            print(variant, source)
        return 0
    if a.backward_bundles:
        for variant, source in backward_bundles():
            print(variant, source)
        return 0
    if a.decode_bundles:
        for name, needed, flags in DECODE_BUNDLES:
            print(name, "needed" if needed else "optional", DECODE_SOURCE,
                  DECODE_VARIANT, flags)
        return 0
    if a.worker:
        return worker_main(a)
    return drive(a)


if __name__ == "__main__":
    sys.exit(main())
