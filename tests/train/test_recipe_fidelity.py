"""The ADE20K recipes against the authors' released configs.

The independent truth is the fidelity table in docs/recipes.md (release values read from the release's
files) and the release's rules written out here: mmsegmentation's linear drop-path spread and the
released backbone's uniform one, mmcv's default optimizer constructor and the released layer-decay
constructor, mmcv's warmup-times-poly schedule, mmsegmentation 0.x's loss averaging.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from freqkit.cli import main
from freqkit.errors import ParameterError
from freqkit.train.config import resolve_config
from freqkit.train.recipes import RECIPES, recipe_release

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_transforms import make_ade  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
SHARED = "Shared by all four recipes"
FIELD_CELL = re.compile(r"^`(\w+) = (.*)`$")
LITERAL_CELL = re.compile(r"^`([^`]*)`$")


def _sections() -> dict[str, list[list[str]]]:
    """Heading -> its table rows (cells stripped), header and separator rows dropped."""
    out: dict[str, list[list[str]]] = {}
    heading = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            out[heading] = []
        elif heading is not None and line.startswith("|") and not line.startswith("| ---") and not line.startswith("| setting"):
            out[heading].append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def _value(text: str, like):
    """A table cell's text as the type of ``like`` (strings as written, the rest as Python literals)."""
    return text if isinstance(like, str) else ast.literal_eval(text)


def _rows(recipe: str) -> list[list[str]]:
    sections = _sections()
    return sections[SHARED] + sections[recipe]


def _summary() -> dict[str, list[str]]:
    """The recipe table at the top: recipe -> (release config, weights, paper mIoU) cells."""
    rows = {}
    for line in DOC.read_text().split("## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].strip("`") in RECIPES:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resolved_settings_are_the_tables(recipe):
    cfg = resolve_config(recipe)
    seen = set()
    for setting, release, _file, freqkit, verdict in _rows(recipe):
        assert verdict, f"{recipe} / {setting}: every row says MATCH or why it differs"
        m = FIELD_CELL.match(freqkit)
        if not m:
            continue
        field, text = m.groups()
        actual = getattr(cfg, field)
        assert actual == _value(text, actual), f"{recipe}: {field} is {actual!r}, the table says {text}"
        seen.add(field)
        lit = LITERAL_CELL.match(release)
        if verdict.startswith("MATCH") and lit:
            assert _value(lit.group(1), actual) == actual, f"{recipe}: {setting} says MATCH, release {lit.group(1)} vs {actual!r}"
    # no silent setting: whatever the recipe sets is in its table
    assert set(RECIPES[recipe]) <= seen, sorted(set(RECIPES[recipe]) - seen)


def test_every_setting_that_differs_between_recipes_is_in_each_table():
    values = {name: resolve_config(name).to_dict() for name in RECIPES}
    differing = {k for k in values[next(iter(RECIPES))] if len({json.dumps(v[k]) for v in values.values()}) > 1} - {
        "recipe",
        "out",
    }
    assert {"model", "neck", "drop_path_schedule", "wd_exempt", "layer_decay", "weight_decay"} <= differing
    for name in RECIPES:
        fields = {FIELD_CELL.match(r[3]).group(1) for r in _sections()[name] if FIELD_CELL.match(r[3])}
        assert differing <= fields, (name, sorted(differing - fields))


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_print_config_shows_every_table_setting_and_the_release(recipe, capsys):
    assert main(["train", "--recipe", recipe, "--data", "ade20k:/data/ade", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    for _setting, _release, _file, freqkit, _verdict in _rows(recipe):
        m = FIELD_CELL.match(freqkit)
        if m and m.group(1) != "data":
            assert shown[m.group(1)] == _value(m.group(2), shown[m.group(1)]), m.group(1)
    assert shown["data"] == "ade20k:/data/ade"
    config, weights, miou = _summary()[recipe]
    release = shown["recipe_release"]
    assert release == recipe_release(recipe)
    assert release["pretrained"]["file"] in weights and f"{release['paper_miou']}" == miou.split()[0]
    if config.startswith("`"):
        assert config.strip("`").rsplit("/", 1)[-1] in release["config"]
    else:
        assert "none released" in config and "none released" in release["config"]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_recipe_without_init_stops_with_one_line_before_reading_data(recipe, capsys, tmp_path):
    code = main(
        ["train", "--recipe", recipe, "--data", f"ade20k:{tmp_path / 'missing'}", "--out", str(tmp_path / "run"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    w = recipe_release(recipe)["pretrained"]
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("freqkit train: error: --init is required") and w["file"] in err and "dl.fbaipublicfiles.com" in err
    assert "'scratch'" in err and "Traceback" not in err and not (tmp_path / "run").exists()
    from freqkit.train import train

    with pytest.raises(ParameterError, match="scratch") as info:
        train(resolve_config(recipe, data=f"ade20k:{tmp_path / 'missing'}", out=str(tmp_path / "lib")))
    assert info.value.param == "init"


@pytest.mark.parametrize("recipe", ["upernet_deit_small_fdam_ade20k_160k", "upernet_deit3_base_ade20k_160k"])
def test_a_recipe_from_scratch_on_purpose_runs_on_tiny_data(recipe, tmp_path, capsys):
    """The recipe's neck, aux level, drop-path spread, loss averaging and schedule on a micro ViT, two steps."""
    root = make_ade(tmp_path / "ade")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                recipe,
                "--init",
                "scratch",
                "--model",
                "vit_micro",
                "--data",
                f"ade20k:{root}",
                "--crop-size",
                "32",
                "--img-scale",
                "128,32",
                "--steps",
                "2",
                "--global-batch",
                "2",
                "--head-channels",
                "16",
                "--aux-channels",
                "8",
                "--warmup-steps",
                "1",
                "--eval-every",
                "0",
                "--ckpt-every",
                "0",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    expected = resolve_config(recipe)
    for key in ("neck", "aux_level", "drop_path_schedule", "loss_mean", "warmup_style", "wd_exempt", "amp", "drop_path"):
        assert saved[key] == getattr(expected, key), key
    assert saved["init"] == "scratch"
    assert "init:" not in capsys.readouterr().out  # nothing was loaded
    # the saved run rebuilds with the recipe's neck and aux level (its weights load strictly)
    assert main(["eval", str(out), "--data", f"ade20k:{root}", "--no-progress"]) == 0, capsys.readouterr().err
    assert "miou" in capsys.readouterr().out.lower()


# ---------------------------------------------------------------------------------------- models
def _model(recipe: str, img_size: int, meta: bool = False):
    from freqkit.train.setup import build_network

    cfg = resolve_config(recipe)
    if meta:
        with torch.device("meta"):
            return cfg, build_network(cfg, "segmentation", 150, img_size)
    return cfg, build_network(cfg, "segmentation", 150, img_size)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_drop_path_per_block_follows_the_release_rule(recipe):
    cfg, model = _model(recipe, 512, meta=True)
    blocks = model.encoder.blocks
    depth = len(blocks)
    if "deit3" in recipe:  # the released backbone: dpr = [drop_path_rate for i in range(depth)]
        want = [0.15] * depth
    else:  # mmsegmentation's VisionTransformer: linspace(0, drop_path_rate, num_layers)
        want = [0.1 * i / (depth - 1) for i in range(depth)]
    assert depth == 12
    for block, rate in zip(blocks, want):
        for dp in (block.drop_path1, block.drop_path2):
            assert getattr(dp, "drop_prob", 0.0) == pytest.approx(rate, abs=1e-7)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_aux_head_receives_the_last_level(recipe):
    """mmsegmentation's ViT configs: auxiliary_head in_index=3. DeiT-S (no neck): block 11's stride-16 map;
    DeiT-III-B (SimpleMultiLevelNeck): block 11's map max-pooled to stride 32."""
    _cfg, model = _model(recipe, 64)
    model.train()
    seen = {}
    handle = model.aux_head.register_forward_hook(lambda mod, args, out: seen.update(x=args[0].detach()))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    model(x)
    handle.remove()
    vit = model.encoder
    take = [3] if "deit3" in recipe else [11]  # the dense backbone numbers its outputs by level
    torch.manual_seed(1)  # the same drop-path draws: the blocks run first in both calls
    ref = vit.forward_intermediates(x, indices=take, intermediates_only=True, norm=False)[0]
    assert ref.shape[-2:] == (4, 6)  # stride 16
    if "deit3" in recipe:
        ref = F.max_pool2d(ref, 2)
    dim = 768 if "deit3" in recipe else 384
    assert seen["x"].shape == (2, dim, *ref.shape[-2:])
    torch.testing.assert_close(seen["x"], ref)


def _release_layer_id(name: str) -> int:
    """The released constructor's get_num_layer_for_vit (num_layers 12 + 2) on a freqkit segmenter's parameter name."""
    inner = name.split("features.vit.", 1)[1] if name.startswith("features.vit.") else None
    if inner is None:
        return 13  # neck, heads
    if inner.split(".")[0] in ("pos_embed", "cls_token", "patch_embed"):
        return 0
    if inner.startswith("blocks."):
        return int(inner.split(".")[1]) + 1
    return 13


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_parameter_groups_follow_the_release_rules_on_real_shapes(recipe):
    from freqkit.train.optim import param_groups

    cfg, model = _model(recipe, 512, meta=True)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.freq_lr_mult, cfg.wd_exempt)
    got = {}
    for g in groups:
        for p in g["params"]:
            got[id(p)] = (g["base_lr"] / cfg.lr, g["weight_decay"])
    named = list(model.named_parameters())
    assert len(got) == len(named)
    for name, p in named:
        if recipe == "upernet_deit_small_ade20k_160k":
            # mmcv's DefaultOptimizerConstructor, custom keys pos_embed / cls_token / norm at decay 0: mmsegmentation's
            # norms are ln1 / ln2 / bn, so only the two embeddings are exempt; no layer decay, no lr multiplier
            want = (1.0, 0.0 if name.endswith(("pos_embed", "cls_token")) else 0.01)
        else:
            # the released CustomLayerDecayOptimizerConstructor: 0.95 ** (13 - layer id); custom key lr multipliers;
            # no decay for 1-D tensors, biases, and the custom keys pos_embed / cls_token / norm
            lr_mult = {"upernet_deit3_base_ade20k_160k": 10.0}.get(recipe, 2.0) if "freq_scale" in name else 1.0
            exempt = p.ndim == 1 or name.endswith(".bias") or any(k in name for k in ("pos_embed", "cls_token", "norm"))
            wd = {"upernet_deit3_base_ade20k_160k": 0.05}.get(recipe, 0.01)
            want = (0.95 ** (13 - _release_layer_id(name)) * lr_mult, 0.0 if exempt else wd)
        assert got[id(p)][0] == pytest.approx(want[0], rel=1e-9), name
        assert got[id(p)][1] == want[1], name
    n = sum(p.numel() for _, p in named)
    if recipe == "upernet_deit_small_ade20k_160k":
        assert round(n / 1e6, 1) == 52.1  # the supplementary's Table 1: DeiT-S UPerNet, 52.1 M
    if "fdam" in recipe:
        assert any("freq_scale" in k for k, _ in named) and any("attn.filter" in k for k, _ in named)
    else:
        assert not any("freq_scale" in k or "attn.filter" in k for k, _ in named)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_cls_token_and_position_embedding_as_released(recipe):
    _cfg, model = _model(recipe, 512, meta=True)
    vit = model.encoder
    pos = vit.pos_embed
    if "deit3" in recipe:  # vit_models(_freq): no CLS token, 32 x 32 positions at img_size 512
        assert getattr(vit, "cls_token", None) is None and tuple(pos.shape) == (1, 32 * 32, 768)
    else:  # mmsegmentation's VisionTransformer: CLS token, 1 + 32 x 32 positions at img_size (512, 512)
        assert tuple(vit.cls_token.shape) == (1, 1, 384) and tuple(pos.shape) == (1, 1 + 32 * 32, 384)


def test_simple_neck_is_the_released_simple_multilevel_neck():
    """SimpleMultiLevelNeck: fpn1 = deconv, BN, GELU, deconv; fpn2 = deconv; fpn3 = identity; fpn4 = 2x max-pool; no other norm."""
    from torch import nn

    _cfg, model = _model("upernet_deit3_base_fdam_ade20k_160k", 64)
    neck = model.features.neck
    assert all(isinstance(n, nn.Identity) for n in neck.norms)
    kinds = [[type(m).__name__ for m in (s if isinstance(s, nn.Sequential) else [s])] for s in neck.stages]
    assert kinds == [
        ["ConvTranspose2d", "BatchNorm2d", "GELU", "ConvTranspose2d"],
        ["ConvTranspose2d"],
        ["Identity"],
        ["MaxPool2d"],
    ]
    model.eval()
    feats = model.features(torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    _cfg, small = _model("upernet_deit_small_ade20k_160k", 64)
    assert all(isinstance(s, nn.Identity) for s in small.features.neck.stages)  # neck=None: four stride-16 maps


def test_mmcv_schedule_is_warmup_times_poly_over_the_whole_run():
    from freqkit.train.optim import lr_factor

    cfg = resolve_config("upernet_deit3_base_fdam_ade20k_160k")

    def mmcv(t: int) -> float:  # LrUpdaterHook: regular poly lr, scaled by the linear warmup while t < warmup_iters
        regular = (1 - t / 160_000) ** 1.0
        return regular * (1 - (1 - t / 1500) * (1 - 1e-6)) if t < 1500 else regular

    for t in (0, 1, 700, 1499, 1500, 1501, 80_000, 159_999, 160_000):
        got = lr_factor(
            t,
            cfg.steps,
            cfg.warmup,
            cfg.schedule,
            cfg.min_lr_ratio,
            warmup_start=cfg.warmup_start_ratio,
            warmup_style=cfg.warmup_style,
        )
        assert got == pytest.approx(mmcv(t), rel=1e-12, abs=1e-15), t


def test_loss_mean_all_divides_by_every_pixel():
    from freqkit.train.evaluate import loss_fn

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[0, :3] = 255
    target[1, :, :2] = 255
    logp = logits.log_softmax(1)
    valid = target != 255
    nll = -logp.gather(1, target.clamp(max=4).unsqueeze(1)).squeeze(1)[valid]
    assert float(loss_fn(logits, target, "all")) == pytest.approx(float(nll.sum() / target.numel()), rel=1e-6)
    assert float(loss_fn(logits, target, "valid")) == pytest.approx(float(nll.mean()), rel=1e-6)
    assert math.isclose(
        float(loss_fn(logits, target, "all")), float(loss_fn(logits, target, "valid")) * float(valid.float().mean()), rel_tol=1e-6
    )


def test_init_loads_deit3_weights_into_the_dense_backbone(tmp_path):
    """DeiT III file names (gamma_1 / gamma_2, CLS token, 14 x 14-style grid) into the released dense backbone: LayerScale
    mapped, CLS / head / final norm dropped, the grid resized bicubically (align_corners False, no antialias)."""
    import timm

    from freqkit.models.segmentation import create_segmentation_model
    from freqkit.models.spec import init_backbone

    src = timm.create_model("deit3_small_patch16_224", img_size=64, depth=4, num_classes=9)
    sd = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in src.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "deit3.pth")
    backbone = timm.create_model("fdam_vit_small_dense", fdam=False, depth=4, img_size=96)
    net = create_segmentation_model(backbone, 3, head_channels=8, neck="simple")
    report = init_backbone(net, str(tmp_path / "deit3.pth"))
    # the dense backbone's filter drops what it has no place for (CLS token, classifier, final norm), as the release's loader
    assert report.missing == () and report.mismatched == () and report.unexpected == ()
    torch.testing.assert_close(net.encoder.blocks[3].ls2.gamma, src.blocks[3].ls2.gamma)
    grid = src.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(net.encoder.pos_embed, want)


def test_a_checkpoint_from_before_the_new_settings_resumes_with_their_defaults(tmp_path):
    from freqkit.errors import FreqkitError
    from freqkit.train import TrainConfig
    from freqkit.train.rundir import RunDir

    new = ("aux_level", "neck", "drop_path_schedule", "wd_exempt", "loss_mean", "warmup_style")
    saved = {k: v for k, v in TrainConfig().to_dict().items() if k not in new}
    RunDir(tmp_path).check_resume(saved, TrainConfig(), tmp_path)  # the old run had the defaults' behaviour
    with pytest.raises(FreqkitError, match="neck"):
        RunDir(tmp_path).check_resume(saved, TrainConfig(neck="simple"), tmp_path)
