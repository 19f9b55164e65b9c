"""Prediction-panel data: label maps are the argmax of the model's logits; boundary errors follow boundary F1."""

import json

import pytest
import timm
import torch
from torch import nn

import freqkit.models  # noqa: F401
from freqkit.analysis.predictions import palette, plot_predictions, prediction_panel_data
from freqkit.errors import FreqkitError
from freqkit.models.segmentation import create_segmentation_model
from freqkit.train.metrics import boundary_map

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _normalize(x):
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_segmentation_labels_are_argmax_of_logits():
    torch.manual_seed(0)
    model = create_segmentation_model("vit_tiny_patch16_224", num_classes=4, img_size=32, head_channels=16, depth=4).eval()
    g = torch.Generator().manual_seed(1)
    x01 = torch.rand(5, 3, 32, 32, generator=g)
    target = torch.randint(0, 4, (5, 32, 32), generator=g)
    target[:, :3] = 255
    data = prediction_panel_data({"seg": model}, x01, target, "segmentation", MEAN, STD, num_images=4)
    with torch.no_grad():
        want = model(_normalize(x01[:4])).argmax(1)
    assert torch.equal(torch.tensor(data["labels"]["seg"]), want)
    assert torch.equal(torch.tensor(data["target"]), target[:4])
    # errors: boundary pixels unmatched within the tolerance (1 px at 32 x 32), as in boundary F1
    tb = boundary_map(target[:4])
    pb = boundary_map(torch.where(target[:4] != 255, want, torch.full_like(want, 255)))
    missed = torch.tensor(data["missed"]["seg"]).bool()
    spurious = torch.tensor(data["spurious"]["seg"]).bool()
    assert data["tolerance"] == 1
    assert torch.equal(missed & ~tb, torch.zeros_like(missed)) and torch.equal(spurious & ~pb, torch.zeros_like(spurious))
    for b in range(4):
        ys, xs = torch.nonzero(missed[b], as_tuple=True)
        for y, x in zip(ys.tolist()[:20], xs.tolist()[:20]):  # no predicted edge within distance 1
            assert not pb[b, max(0, y - 1) : y + 2, x].any() and not pb[b, y, max(0, x - 1) : x + 2].any()
    valid = target[:4] != 255
    assert data["pixel_accuracy"]["seg"] == pytest.approx(float((want[valid] == target[:4][valid]).float().mean()))
    json.dumps(data)
    figs = plot_predictions(data)
    assert list(figs) == ["predictions.png"]


def test_perfect_prediction_has_no_boundary_errors():
    class Oracle(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.nn.functional.one_hot(self.target, 3).permute(0, 3, 1, 2).float() + self.w

    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:10, 5:12] = 1
    target[1, 12:, :] = 2
    data = prediction_panel_data({"oracle": Oracle(target)}, torch.rand(2, 3, 16, 16), target, "segmentation", MEAN, STD)
    assert not any(v for row in data["missed"]["oracle"] for r in row for v in r)
    assert not any(v for row in data["spurious"]["oracle"] for r in row for v in r)
    assert data["pixel_accuracy"]["oracle"] == 1.0


def test_classification_confusion_matrix_counts_argmax():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=3).eval()
    x01 = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.arange(12) % 3
    data = prediction_panel_data({"a": model}, x01, y, "classification", {"a": MEAN}, {"a": STD})
    with torch.no_grad():
        pred = model(_normalize(x01)).argmax(1)
    want = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(y.tolist(), pred.tolist()):
        want[t, p] += 1
    assert torch.equal(torch.tensor(data["confusion"]["a"]), want)
    assert data["accuracy"]["a"] == pytest.approx(float((pred == y).float().mean()))
    assert list(plot_predictions(data)) == ["predictions_confusion.png"]


def test_bad_input_names_the_parameter():
    with pytest.raises(FreqkitError, match="task"):
        prediction_panel_data({"a": nn.Linear(1, 1)}, torch.rand(1, 3, 4, 4), torch.zeros(1), "detection", MEAN, STD)
    with pytest.raises(FreqkitError, match="mean"):
        prediction_panel_data(
            {"a": nn.Conv2d(3, 2, 1)}, torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4), "segmentation", (0.5,), STD
        )


def test_palette_is_distinct():
    for k in (2, 20, 150):
        colours = {tuple(c) for c in palette(k)}
        assert len(colours) == k
