"""``create``: the one front door that builds a model by name, with pretrained weights or a checkpoint.

Names are the model specs ``freqkit train`` takes (:mod:`freqkit.models.spec`): timm / freqkit names,
presets (``vit_mini``) and ``+METHOD`` retrofits (``vit_mini+fdam``), built as the same classifier train
builds. One place for what ``freqkit analyze`` and ``freqkit.analyze`` need before they can look at a
model: the image size for models that take one, timm's pretrained weights with a fast offline answer,
and a checkpoint loaded through the family's own ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import socket
from typing import Any, Optional, Sequence, Union

from torch import nn

from freqkit.errors import FreqkitError

__all__ = ["create", "check_model_name"]

ImageSize = Union[int, Sequence[int], None]


def check_model_name(name: str) -> None:
    """Raise a FreqkitError (with close matches) unless timm knows ``name`` (freqkit's models included)."""
    import timm

    # freqkit's models are registered: importing this module ran freqkit/models/__init__.py first
    if not isinstance(name, str) or not name:
        raise FreqkitError(f"model name must be a non-empty string, got {name!r}")
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else f"list names with: python -c \"import timm; print(timm.list_models('*{name[:4]}*'))\""
    )
    raise FreqkitError(f"unknown model {name!r}; {hint}")


def _size(img_size: ImageSize) -> Optional[tuple[int, int]]:
    if img_size is None:
        return None
    vals = [int(img_size)] * 2 if isinstance(img_size, int) else [int(v) for v in img_size]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or vals[0] < 1 or vals[1] < 1:
        raise FreqkitError(f"img_size must be a positive int or a pair (H, W), got {img_size!r}; e.g. img_size=224")
    return vals[0], vals[1]


def _online(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _timm_create(name: str, pretrained: bool, size: Optional[tuple[int, int]], **kw: Any) -> nn.Module:
    """timm.create_model with the image size for models that take one (ViTs), without for others."""
    import timm

    if size is None:
        return timm.create_model(name, pretrained=pretrained, **kw)
    try:
        return timm.create_model(name, pretrained=pretrained, img_size=size, **kw)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, pretrained=pretrained, **kw)


def _create_pretrained(name: str, size: Optional[tuple[int, int]], **kw: Any) -> nn.Module:
    online = _online()
    hf_constants, saved = None, None
    if not online:
        # offline: look in the local cache only, instead of minutes of hub retries
        try:
            import huggingface_hub.constants as hf_constants

            saved, hf_constants.HF_HUB_OFFLINE = hf_constants.HF_HUB_OFFLINE, True
        except ImportError:  # pragma: no cover
            hf_constants = None
    try:
        return _timm_create(name, True, size, **kw)
    except Exception as err:  # hub / url / cfg errors all mean "no weights"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        where = (
            "they are not in the local cache and huggingface.co cannot be reached (offline)"
            if not online
            else f"download failed ({first})"
        )
        raise FreqkitError(
            f"pretrained=True: no pretrained weights for {name!r}: {where}; fetch them once with network access, "
            "or pass checkpoint=PATH (or pretrained=False for random init)"
        ) from None
    finally:
        if hf_constants is not None and saved is not None:
            hf_constants.HF_HUB_OFFLINE = saved


def _check_patch(model: nn.Module, name: str, size: tuple[int, int]) -> None:
    ps = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if ps is None:
        return
    ph, pw = (ps, ps) if isinstance(ps, int) else (int(ps[0]), int(ps[1]))
    if size[0] % ph or size[1] % pw:
        sug = (max(1, int(size[0] / ph + 0.5)) * ph, max(1, int(size[1] / pw + 0.5)) * pw)
        raise FreqkitError(
            f"image size {size[0]}x{size[1]} is not divisible by the patch size {ph}x{pw} of {name}; "
            f"use e.g. img_size=({sug[0]}, {sug[1]})"
        )


def _load(model: nn.Module, path: str, name: str) -> None:
    from freqkit.models.checkpoint import load_checkpoint

    # the family's own filter adapts official layouts (and resamples position embeddings)
    family = importlib.import_module(type(model).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    try:
        load_checkpoint(model, path, filter_fn=filter_fn)
    except FreqkitError as err:
        raise FreqkitError(f"checkpoint={path} for {name}: {err}") from None


def _is_spec(name: str) -> bool:
    from freqkit.models.spec import MODEL_PRESETS

    return isinstance(name, str) and ("+" in name or name.strip() in MODEL_PRESETS)


def _create_spec(name: str, pretrained: bool, size: Optional[tuple[int, int]], num_classes: Optional[int]) -> nn.Module:
    """A preset or ``BASE+METHOD`` spec as the classifier ``freqkit train`` builds (pretrained: timm's weights, then convert)."""
    from freqkit.models.convert import convert
    from freqkit.models.spec import build_model, parse_model_spec

    ms = parse_model_spec(name)
    if not pretrained:
        return build_model(ms, "classification", num_classes, size)
    if dict(ms.kwargs):
        raise FreqkitError(
            f"pretrained=True: preset {name.split('+')[0]!r} has no pretrained weights; use a timm name or pretrained=False"
        )
    model = _create_pretrained(ms.arch, size, **({} if num_classes is None else {"num_classes": num_classes}))
    convert(model, list(ms.methods))  # the retrofit starts at the identity: the pretrained function is kept
    return model


def create(
    name: str,
    pretrained: bool = False,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    img_size: ImageSize = None,
    num_classes: Optional[int] = None,
) -> nn.Module:
    """Build model spec ``name`` in eval mode -> nn.Module (input (B, 3, H, W)).

    ``name``: a timm / freqkit model name, a preset (``vit_mini``) or ``BASE+METHOD`` (``vit_mini+fdam``,
    ``deit_small_patch16_224+attnscale``), the vocabulary of ``freqkit train``. ``img_size`` (int or (H, W))
    is passed to models that take one (ViTs; must divide by the patch size); other models ignore it.
    ``pretrained`` loads timm's weights (offline: from the local cache only, failing in about 2 s instead of
    retrying); ``checkpoint`` loads a ``.safetensors`` or weights-only file through the family's
    ``checkpoint_filter_fn``. ``num_classes``: the classifier's class count (default: the architecture's).
    Random-init models draw from torch's global generator: seed it for reproducible weights.
    """
    spec = _is_spec(name)
    if not spec:
        check_model_name(name)
    size = _size(img_size)
    if pretrained and checkpoint is not None:
        raise FreqkitError("pretrained=True and checkpoint=PATH both give weights; pass only one of them")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FreqkitError(f"checkpoint={checkpoint} does not exist or is not a file; check the path")
    kw = {} if num_classes is None else {"num_classes": int(num_classes)}
    if spec:
        model = _create_spec(name, pretrained, size, num_classes)
    elif pretrained:
        model = _create_pretrained(name, size, **kw)
    else:
        try:
            model = _timm_create(name, False, size, **kw)
        except FreqkitError:
            raise
        except Exception as err:  # a model that cannot be built at this size, bad kwargs...
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            at = "" if size is None else f" at {size[0]}x{size[1]}"
            raise FreqkitError(f"cannot build {name}{at} ({first}); try another img_size or model") from None
    if size is not None:
        _check_patch(model, name, size)
    if checkpoint is not None:
        _load(model, str(checkpoint), name)
    return model.eval()
