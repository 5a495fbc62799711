"""attnrt.py on numpy: a bundle from `attnc compile` against numpy math.

Usage: test_attnrt.py ATTNC EXAMPLES_DIR WORK_DIR (ATTNRT_LIB set).
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "python"))
import attnrt  # noqa: E402

attnc, examples, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
out = os.path.join(work, "sliding")
subprocess.run([attnc, "compile", os.path.join(examples, "sliding_sink.attn"),
                "--head-dim", "32", "--lse", "-o", out], check=True)
mod = attnrt.load(out + ".attnpkg")
assert mod.names() == ["sliding_sink"], mod.names()
kernel = mod.kernel("sliding_sink")
assert kernel.info["head_dim"] == 32
assert [p["name"] for p in kernel.info["params"]] == ["window", "sinks"]

rng = np.random.default_rng(0)
B, H, S, D = 2, 3, 70, 32
q = rng.standard_normal((B, H, S, D), dtype=np.float32)
k = rng.standard_normal((B, H, S, D), dtype=np.float32)
v = rng.standard_normal((B, H, S, D), dtype=np.float32)
o, lse = kernel(q, k, v, window=9, sinks=2)


def reference(window, sinks):
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64),
                  k.astype(np.float64)) / np.sqrt(D)
    s = 30.0 * np.tanh(s / 30.0)
    qi = np.arange(S)[:, None]
    ki = np.arange(S)[None, :]
    keep = ((ki <= qi) & (qi - ki < window)) | (ki < sinks)
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", p / l, v), (m + np.log(l))[..., 0]


ref_o, ref_lse = reference(9, 2)
err_o = np.abs(o - ref_o).max()
err_lse = np.abs(lse - ref_lse).max()
print("max |o - ref| = %.3e, max |lse - ref| = %.3e" % (err_o, err_lse))
assert err_o < 2e-4 and err_lse < 2e-4

# Non-contiguous views (every other head) work without copies.
o2 = np.zeros((B, H * 2, S, D), dtype=np.float32)[:, ::2]
kernel(q, k, v, o=o2, lse=np.zeros((B, H, S), np.float32), window=9,
       sinks=2)
assert np.abs(o2 - ref_o).max() < 2e-4

# A bad launch names the argument and writes nothing.
sentinel = np.full((B, H, S, D), 7.0, dtype=np.float32)
try:
    kernel(q, k[:, :, :10], v, o=sentinel, window=9)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "v", (e.argument, str(e))
assert (sentinel == 7.0).all()
try:
    kernel(q, k, v, windw=3)
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "windw" and "did you mean 'window'" in str(e), e
try:
    attnrt.load(os.path.join(work, "missing.attnpkg"))
    raise AssertionError("expected an error")
except attnrt.Error as e:
    assert e.argument == "bundle"
print("attnrt.py OK")
