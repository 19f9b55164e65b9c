"""Edge cases (1x1 grid, all-zero map, single token, rank-0 matrix) never give NaN/inf, and dtypes
follow the convention: half inputs are computed in float32 and come back in their own dtype."""

import pytest
import torch

import freqkit.spectral as S


def _finite(out):
    tensors = out.values() if isinstance(out, dict) else [out]
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors)


MAP_FNS = {
    "spectrum": S.spectrum,
    "radial_profile": lambda x: S.radial_profile(S.spectrum(x)),
    "high_frequency_ratio": S.high_frequency_ratio,
    "relative_log_amplitude": S.relative_log_amplitude,
    "high_frequency_log_amplitude": S.high_frequency_log_amplitude,
    "global_response": lambda x: S.global_response(x, x),
    "global_response_per_channel": lambda x: S.global_response(x, 2 * x, "per_channel"),
}
TOKEN_FNS = {
    "effective_rank": S.effective_rank,
    "effective_rank_centered": lambda x: S.effective_rank(x, center=True),
    "stable_rank": S.stable_rank,
    "rank_collapse_residual": S.rank_collapse_residual,
    "token_cosine_similarity": S.token_cosine_similarity,
    "cross_layer_similarity": lambda x: S.cross_layer_similarity([x, x]),
}


@pytest.mark.parametrize("name", sorted(MAP_FNS))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 1), (2, 3, 4, 5)])
@pytest.mark.parametrize("kind", ["zeros", "random"])
def test_map_functions_finite(name, shape, kind):
    x = torch.zeros(shape) if kind == "zeros" else torch.randn(shape)
    assert _finite(MAP_FNS[name](x))


def test_map_closed_forms_on_degenerate_grids():
    z = torch.zeros(2, 3, 4, 4)
    assert torch.equal(S.high_frequency_ratio(z), torch.zeros(2))
    assert torch.equal(S.global_response(z, z), torch.zeros(2, 4, 4))
    one = torch.randn(2, 3, 1, 1)
    assert torch.equal(S.high_frequency_ratio(one), torch.zeros(2))  # a 1x1 grid has only DC
    assert torch.equal(S.relative_log_amplitude(one), torch.zeros(1))
    torch.testing.assert_close(S.radial_profile(S.spectrum(one), 4), S.spectrum(one).reshape(1).expand(4))


def test_attention_edge_cases():
    one = torch.ones(2, 3, 1, 1)  # a single token attending to itself: all-pass
    assert torch.equal(S.local_response(one, (1, 1)), torch.ones(2, 3, 1, 1, 1))
    summ = S.local_response_summary(one, (1, 1), bins=4)
    torch.testing.assert_close(summ["mean"], torch.full((2, 4), torch.log(torch.tensor(2.0)).item()))
    assert torch.equal(summ["std"], torch.zeros(2, 4)) and torch.equal(summ["dc"], torch.ones(2))
    zero = torch.zeros(1, 2, 5, 5)  # masked-out rows
    for fn in (lambda a: S.local_response(a, (2, 2), 1), lambda a: S.local_response_summary(a, (2, 2), 1)):
        assert _finite(fn(zero))
    assert _finite(S.attention_token_spectrum(torch.ones(1, 1)))
    assert _finite(S.attention_token_spectrum(torch.zeros(3, 4, 4)))


@pytest.mark.parametrize("name", sorted(TOKEN_FNS))
@pytest.mark.parametrize("shape", [(2, 1, 4), (2, 1, 1), (2, 5, 3)])
@pytest.mark.parametrize("kind", ["zeros", "random", "identical"])
def test_token_functions_finite(name, shape, kind):
    if kind == "zeros":
        x = torch.zeros(shape)
    elif kind == "identical":
        x = torch.randn(shape[0], 1, shape[2]).expand(shape).clone()
    else:
        x = torch.randn(shape)
    assert _finite(TOKEN_FNS[name](x))


def test_single_token_values():
    x = torch.randn(2, 1, 4)
    torch.testing.assert_close(S.effective_rank(x), torch.ones(2))
    torch.testing.assert_close(S.stable_rank(x), torch.ones(2))
    assert torch.equal(S.effective_rank(x, center=True), torch.zeros(2))
    assert torch.equal(S.rank_collapse_residual(x), torch.zeros(2))
    assert torch.equal(S.token_cosine_similarity(x), torch.zeros(2))


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF + [torch.float64])
def test_dtypes_follow_the_input(dtype):
    torch.manual_seed(1)
    maps = torch.randn(2, 3, 5, 6)
    tokens = torch.randn(2, 7, 4)
    attn = torch.softmax(torch.randn(2, 2, 31, 31), -1)
    cases = [
        (S.spectrum, (maps,)),
        (S.high_frequency_ratio, (maps,)),
        (S.relative_log_amplitude, (maps,)),
        (lambda m: S.radial_profile(m[0, 0], 4), (maps,)),
        (lambda m: S.global_response(m, m.roll(1, -1), "per_channel"), (maps,)),
        (lambda a: S.local_response(a, (5, 6), 1), (attn,)),
        (lambda a: S.local_response_summary(a, (5, 6), 1, chunk_size=7)["mean"], (attn,)),
        (S.attention_token_spectrum, (attn,)),
        (S.effective_rank, (tokens,)),
        (S.stable_rank, (tokens,)),
        (S.rank_collapse_residual, (tokens,)),
        (S.token_cosine_similarity, (tokens,)),
        (lambda t: S.cross_layer_similarity([t, t.flip(1)]), (tokens,)),
    ]
    for fn, args in cases:
        ref = fn(*(a.float() for a in args))
        out = fn(*(a.to(dtype) for a in args))
        assert out.dtype == dtype
        tol = 1e-5 if dtype == torch.float64 else 5e-2
        # the input rounding to a half type moves results by about its precision
        torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_half_response_does_not_overflow_to_inf():
    v = torch.zeros(1, 1, 4, 4, dtype=torch.float16)
    y = torch.ones(1, 1, 4, 4, dtype=torch.float16)
    out = S.global_response(v, y)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_integer_maps_are_accepted():
    x = torch.randint(0, 5, (1, 2, 4, 4))
    torch.testing.assert_close(S.spectrum(x), S.spectrum(x.to(torch.get_default_dtype())))
