"""Hugging Face ViT-family models (optional ``transformers``): capture and analyze on tiny random configurations."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from freqkit import spectral as S  # noqa: E402
from freqkit.analysis import analyze  # noqa: E402
from freqkit.probe import capture, default_layers, effective_receptive_field  # noqa: E402

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _models():
    torch.manual_seed(0)
    yield "vit", transformers.ViTForImageClassification(transformers.ViTConfig(**SMALL)).eval(), 1
    yield "deit", transformers.DeiTForImageClassification(transformers.DeiTConfig(**SMALL)).eval(), 2
    yield "dinov2", transformers.Dinov2Model(transformers.Dinov2Config(**SMALL)).eval(), 1
    if hasattr(transformers, "Dinov2WithRegistersModel"):
        cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **SMALL)
        yield "dinov2-reg", transformers.Dinov2WithRegistersModel(cfg).eval(), 5


@pytest.mark.parametrize("name,model,prefix", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_capture_hidden_states_and_attentions(name, model, prefix):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    names = default_layers(model)
    assert len(names) == 2
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True, output_attentions=False)
    before = getattr(model.config, "_attn_implementation", None)
    cap = capture(model, x, attention=True)
    assert getattr(model.config, "_attn_implementation", None) == before  # the eager switch is undone
    for i, layer in enumerate(cap.layers):
        assert layer.grid_size == (4, 4) and layer.num_prefix_tokens == prefix
        # the layer output is the next hidden state (before any final norm)
        torch.testing.assert_close(layer.tokens, ref.hidden_states[i + 1], rtol=1e-4, atol=1e-5)
        a = layer.attn
        assert a.shape == (2, 2, prefix + 16, prefix + 16)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, prefix + 16))
        # A V computed from the captured values equals the merged per-head product
        v = layer.v.view(2, prefix + 16, 2, 16).transpose(1, 2)
        torch.testing.assert_close(layer.attn_out, (a @ v).transpose(1, 2).reshape(2, prefix + 16, 32))
    rep = analyze({name: model}, x, attention=True, erf=True, bins=4)
    m = rep.models[0]
    assert m.layers[0].num_prefix_tokens == prefix and m.layers[0].heads is not None and m.cka is not None
    assert m.layers[0].erf["image_size"] == [32, 32]
    assert m.layers[1].effective_rank == pytest.approx(float(S.effective_rank(cap.layers[1].spatial_tokens()).mean()), rel=1e-4)
    erf = effective_receptive_field(model, x, names[:1])[names[0]]
    assert erf.shape == (32, 32) and float(erf.sum()) > 0
