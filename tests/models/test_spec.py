"""The model vocabulary: ``freqkit.models.create`` builds every spec ``train`` takes, as train builds it."""

import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.models import create
from freqkit.models.spec import build_model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("spec", ["vit_micro", "vit_mini+fdam", "vit_micro+attnscale+featscale"])
def test_create_builds_the_classifier_train_builds(spec):
    torch.manual_seed(3)
    made = create(spec, img_size=64)
    torch.manual_seed(3)
    reference = build_model(spec, "classification", None, 64)
    # same architecture, same initialization from the same seed: one vocabulary, one builder
    assert _same_weights(made, reference) and not made.training
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = made(x), reference.eval()(x)
    assert out.shape == (2, reference.num_classes) and torch.allclose(out, ref, atol=1e-6 * float(ref.abs().max()) + 1e-7)


def test_create_spec_for_analysis_has_the_token_grid_of_the_image_size():
    model = create("vit_mini+fdam", img_size=64)
    with torch.no_grad():
        tokens = model.forward_features(torch.zeros(1, 3, 64, 64))
    # vit_mini: patch 8, dim 128 -> (64 / 8)^2 patch tokens plus the class token
    assert tokens.shape == (1, 1 + (64 // 8) ** 2, 128)
    assert any("fdam" in type(m).__module__ or "freqscale" in type(m).__module__ for m in model.modules())


def test_create_spec_num_classes_and_checkpoint(tmp_path):
    from freqkit.train.checkpoint import save_model_file

    torch.manual_seed(1)
    trained = create("vit_micro+fdam", img_size=32, num_classes=5)
    assert trained.head.out_features == 5
    path = tmp_path / "w.safetensors"
    save_model_file(trained, path)
    torch.manual_seed(2)  # a different random init, overwritten by the checkpoint
    loaded = create("vit_micro+fdam", img_size=32, num_classes=5, checkpoint=path)
    assert _same_weights(loaded, trained)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("vit_mini+nope", "unknown method 'nope'"),
        ("vit_mini+fdam+fdam", "repeats a method"),
        ("resnet18+fdam", "retrofit timm ViT-family"),
    ],
)
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(FreqkitError, match=message) as err:
        create(spec)
    assert "\n" not in str(err.value)


def test_pretrained_preset_is_refused():
    with pytest.raises(FreqkitError, match="has no pretrained weights"):
        create("vit_mini+fdam", pretrained=True)
