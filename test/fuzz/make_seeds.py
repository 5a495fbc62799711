#!/usr/bin/env python3
"""Regenerates the bundle and .npy seed corpora (test/fuzz/corpus/).

usage: make_seeds.py ATTNC

Bundle seeds: a whole CPU bundle (mode byte 0x00), and GPU manifests
(mode byte 0x01) rewritten to point at the fixed payloads FuzzBundle.cpp
appends (kPayloadOffset, kPayloadSize, pattern i * 131 % 251).
"""
import json, os, struct, subprocess, sys, tempfile

import numpy as np

ATTNC = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, '..', '..', 'examples')
PAYLOAD_OFFSET, PAYLOAD_SIZE = 24 + 65536, 4096


def fnv1a(data):
    h = 1469598103934665603
    for c in data:
        h = ((h ^ c) * 1099511628211) & (2**64 - 1)
    return h


def compile_bundle(example, *opts):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'b')
        subprocess.run([ATTNC, 'compile', os.path.join(EXAMPLES, example),
                        '-o', out, *opts], check=True)
        return open(out + '.attnpkg', 'rb').read()


def manifest_of(bundle):
    (size,) = struct.unpack('<Q', bundle[16:24])
    return json.loads(bundle[24:24 + size])


payload = bytes(i * 131 % 251 for i in range(2 * PAYLOAD_SIZE))
seeds = os.path.join(HERE, 'corpus', 'bundle')
os.makedirs(seeds, exist_ok=True)
cpu = compile_bundle('document_mask.attn', '--head-dim', '64', '--cpu',
                     'x86-64-v2', '--lse')
open(os.path.join(seeds, 'cpu_document_mask'), 'wb').write(b'\0' + cpu)
for name, example, opts in [
        ('sm90a_causal', 'causal.attn', ['--target', 'sm_90a']),
        ('sm80_select', 'select.attn', ['--target', 'sm_80']),
        ('gfx942_learned_sink', 'learned_sink.attn', ['--target', 'gfx942']),
        ('sm90a_paged_int8', 'sliding_sink.attn',
         ['--target', 'sm_90a', '--paged', '16', '--kv-dtype', 'int8'])]:
    m = manifest_of(compile_bundle(example, '--head-dim', '64', *opts))
    for i, b in enumerate(m['binaries']):
        chunk = payload[i * PAYLOAD_SIZE:(i + 1) * PAYLOAD_SIZE]
        b.update(offset=PAYLOAD_OFFSET + i * PAYLOAD_SIZE, size=PAYLOAD_SIZE,
                 checksum='%016x' % fnv1a(chunk))
    m['source'] = example
    open(os.path.join(seeds, name), 'wb').write(
        b'\1' + json.dumps(m).encode())

npy = os.path.join(HERE, 'corpus', 'npy')
os.makedirs(npy, exist_ok=True)
rng = np.random.default_rng(1)
for name, array in [
        ('f32_4d', rng.standard_normal((1, 2, 3, 4)).astype('<f4')),
        ('f16_2d', rng.standard_normal((3, 5)).astype('<f2')),
        ('u16_1d', np.arange(7, dtype='<u2')),
        ('i32_scalar', np.array(5, dtype='<i4')),
        ('i32_empty', np.zeros((0, 3), dtype='<i4'))]:
    for flag in (0, 1):
        path = os.path.join(npy, '%s_%d' % (name, flag))
        with open(path, 'wb') as f:
            f.write(bytes([flag]))
            np.save(f, array)
print('seeds written')
