"""Boundary F1 on hand-made masks and against a brute-force reference; the metric collections."""

from __future__ import annotations

import math

import pytest
import torch

from freqkit.train.metrics import BoundaryF1, boundary_counts, boundary_f1, boundary_map, build_metrics, default_tolerance


def _halves(split_col: int, h: int = 10, w: int = 10) -> torch.Tensor:
    m = torch.zeros(1, h, w, dtype=torch.long)
    m[:, :, split_col:] = 1
    return m


def test_boundary_map_marks_both_sides_of_an_edge():
    b = boundary_map(_halves(5))[0]
    assert b[:, 4].all() and b[:, 5].all() and int(b.sum()) == 20


def test_shifted_edge_by_hand():
    # truth edge between columns 4|5 -> boundary columns 4, 5; prediction 6|7 -> columns 6, 7
    target, pred = _halves(5), _halves(7)
    # tolerance 1: pred column 6 is 1 px from truth column 5 (matched), column 7 is 2 px away: P = 10/20
    # truth column 5 is 1 px from pred column 6 (matched), column 4 is 2 px away: R = 10/20 -> F1 = 0.5
    assert boundary_counts(pred, target, tolerance=1).tolist() == [10, 20, 10, 20]
    assert float(boundary_f1(pred, target, tolerance=1)) == pytest.approx(0.5)
    assert float(boundary_f1(pred, target, tolerance=2)) == pytest.approx(1.0)
    assert float(boundary_f1(pred, target, tolerance=0)) == pytest.approx(0.0)
    assert float(boundary_f1(target, target, tolerance=0)) == pytest.approx(1.0)


def test_square_against_nothing_and_ignore():
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[:, 3:9, 3:9] = 2
    empty = torch.zeros_like(target)
    assert float(boundary_f1(empty, target, tolerance=1)) == 0.0  # recall 0
    assert float(boundary_f1(target, empty, tolerance=1)) == 0.0  # precision 0
    assert float(boundary_f1(empty, empty)) == 1.0  # no edges anywhere: perfect by convention
    # where the truth is ignored, neither its edges nor predicted edges count
    ignored = target.clone()
    ignored[:, :, 6:] = 255
    pred = target.clone()
    pred[:, :, 6:] = 1  # a wrong class, but only inside the ignored area
    counts = boundary_counts(pred, ignored, tolerance=0)
    assert counts[0] == counts[1] and counts[2] == counts[3] and counts[1] > 0


def _reference(pred, target, tol, ignore=255):
    """Brute force: scan pixels, 4-neighbour edges, Euclidean distance search."""
    import itertools

    def edges(lab, valid):
        h, w = len(lab), len(lab[0])
        out = set()
        for y, x in itertools.product(range(h), range(w)):
            if not valid[y][x]:
                continue
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and valid[yy][xx] and lab[yy][xx] != lab[y][x]:
                    out.add((y, x))
        return out

    mp = np_ = mt = nt = 0
    for b in range(target.shape[0]):
        t = target[b].tolist()
        valid = [[v != ignore for v in row] for row in t]
        p = pred[b].tolist()
        pe, te = edges(p, valid), edges(t, valid)
        near = lambda s, y, x: any(math.hypot(y - u, x - v) <= tol + 1e-9 for u, v in s)  # noqa: E731
        mp += sum(near(te, y, x) for y, x in pe)
        mt += sum(near(pe, y, x) for y, x in te)
        np_ += len(pe)
        nt += len(te)
    return [mp, np_, mt, nt]


@pytest.mark.parametrize("tol", [0, 1, 2])
def test_matches_brute_force(tol):
    g = torch.Generator().manual_seed(tol)
    # blocky random label maps (upsampled 3 x 3 cells) with some ignored pixels
    target = torch.randint(0, 3, (2, 4, 4), generator=g).repeat_interleave(3, 1).repeat_interleave(3, 2)
    pred = torch.randint(0, 3, (2, 4, 4), generator=g).repeat_interleave(3, 1).repeat_interleave(3, 2)
    target[0, :2, :5] = 255
    assert boundary_counts(pred, target, tolerance=tol).tolist() == _reference(pred, target, tol)


def test_metric_accumulates_micro_average():
    a_t, a_p = _halves(5), _halves(7)
    b_t = torch.zeros(1, 10, 10, dtype=torch.long)
    b_t[:, 2:8, 2:8] = 1
    m = BoundaryF1(tolerance=1)
    m.update(a_p, a_t)
    m.update(torch.nn.functional.one_hot(b_t, 2).permute(0, 3, 1, 2).float(), b_t)  # logits path
    both = boundary_counts(torch.cat([a_p, b_t]), torch.cat([a_t, b_t]), tolerance=1)
    p, r = both[0] / both[1], both[2] / both[3]
    assert float(m.compute()) == pytest.approx(float(2 * p * r / (p + r)))


def test_default_tolerance():
    assert default_tolerance(64, 64) == 1 and default_tolerance(512, 512) == 5 and default_tolerance(8, 8) == 1


def test_collections_miou_and_top1():
    seg = build_metrics("segmentation", 3)
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, 0]]])
    seg.update(torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float(), target)
    out = seg.compute()
    # IoU by hand over valid pixels: class 0 1/2, class 1 2/3, class 2 1 -> mean 13/18
    assert float(out["miou"]) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert float(out["pixel_acc"]) == pytest.approx(5 / 6)
    cls = build_metrics("classification", 4)
    cls.update(torch.eye(4)[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 3]))
    assert float(cls.compute()["top1"]) == pytest.approx(0.75)
