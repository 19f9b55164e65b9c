"""Per-head attention summaries against closed forms and brute force."""

import math

import numpy as np
import pytest
import torch

from freqkit.spectral import attention_distance, attention_entropy, high_frequency_ratio, local_response_hf_share

F64 = torch.float64


def _softmax_attn(b, heads, n, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, heads, n, n, dtype=F64, generator=g)).softmax(-1)


def test_entropy_closed_forms():
    uniform = torch.full((2, 3, 5, 7), 1 / 7, dtype=F64)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((2, 3), math.log(7), dtype=F64))
    onehot = torch.eye(5, dtype=F64).expand(1, 2, 5, 5)
    assert attention_entropy(onehot).abs().max().item() == 0.0
    a = _softmax_attn(1, 1, 4, 0)[0, 0].numpy()
    expect = np.mean([-(row * np.log(row)).sum() for row in a])
    assert attention_entropy(torch.from_numpy(a)).item() == pytest.approx(expect, rel=1e-12)


def test_attention_distance_brute_force_with_prefix():
    h, w, p = 3, 4, 1
    attn = _softmax_attn(2, 2, p + h * w, 1)
    got = attention_distance(attn, (h, w), p, chunk_size=5)
    a = attn.numpy()
    pos = [(i // w, i % w) for i in range(h * w)]
    for b in range(2):
        for head in range(2):
            vals = []
            for qi in range(h * w):
                row = a[b, head, p + qi, p:]
                d = [math.dist(pos[qi], pos[kj]) for kj in range(h * w)]
                vals.append(float((row * d).sum() / row.sum()))
            assert got[b, head].item() == pytest.approx(np.mean(vals), rel=1e-12)


def test_attention_distance_of_self_attention_and_neighbours():
    eye = torch.eye(9, dtype=F64)[None, None]
    assert attention_distance(eye, (3, 3)).item() == 0.0
    # every query attends to its right neighbour (wrapping rows excluded): distance 1 exactly
    a = torch.zeros(1, 1, 6, 6, dtype=F64)
    for i in range(6):
        col = i % 3
        a[0, 0, i, i + 1 if col < 2 else i - 1] = 1.0
    assert attention_distance(a, (2, 3)).item() == pytest.approx(1.0, rel=1e-12)


def test_local_response_hf_share_matches_hf_ratio_of_the_kernels():
    h, w, p = 4, 4, 2
    attn = _softmax_attn(2, 3, p + h * w, 2)
    got = local_response_hf_share(attn, (h, w), p, cutoff=0.5, chunk_size=3)
    kernels = attn[:, :, p:, p:].reshape(2 * 3, h * w, h, w)  # each query kernel as a channel
    expect = high_frequency_ratio(kernels, 0.5).view(2, 3)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=0)
    # uniform spatial attention has all its energy at DC
    flat = torch.full((1, 1, h * w, h * w), 1 / (h * w), dtype=F64)
    assert local_response_hf_share(flat, (h, w)).item() == pytest.approx(0.0, abs=1e-15)
