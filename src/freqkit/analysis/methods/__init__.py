"""What the frequency modules of a model apply during a forward pass, as JSON-ready data for figures.

These are the method visualizations of the FDAM supplementary (Section H, Figs. 2-3 and 7-9) and of
SPANet / SPANetV2, one module per method, each reading what its layers expose through a public tap (a forward pre-hook
that only reads, or ``forward_intermediates``; the model's outputs are unchanged):

- :func:`attinv_modulation`: AttInv's per-position high-pass weight (Fig. 7);
- :func:`freqscale_gain`: FreqScale's applied gain per frequency (Fig. 8);
- :func:`features`: one layer's feature map and its log-amplitude spectrum per model (Fig. 9);
- :func:`spam_filters`: SPANet's fixed spectral masks and SPANetV2's learned spectral gains;
- :func:`attinv_response`: local frequency responses of A, I - A and AttInv's learned combination,
  and of a two-layer stack (Figs. 2-3, supplementary eq. 25).

:func:`method_figures_data` gathers the ones that apply to a set of models;
``freqkit.analysis.methods.plots.plot_method_figures`` draws them. Every value in the returned
dicts is a plain int, float, str, None or (nested) list, so ``json.dumps`` takes them as they are.

Conventions: 2-D spectra and gains are centred (``fftshift``: DC at index (H // 2, W // 2)). A real
filter f on the ``rfft2`` half-plane (H, W // 2 + 1) is shown as the full (H, W) plane g with
``ifft2(fft2(x) * g).real == irfft2(rfft2(x) * f, s=(H, W))`` for real x: g mirrors f onto the
negative frequencies, and on the self-conjugate columns (DC and, for even W, Nyquist) it is the
average of f at k and -k, because ``irfft2`` keeps only the real part there (``freqkit.spectral.full_plane``).
"""

from __future__ import annotations

from typing import Any, Optional

from freqkit.analysis.methods import attinv, freqscale, spam
from freqkit.analysis.methods._common import Images, Models, check_images, hooked_forward, named
from freqkit.analysis.methods.attinv import attinv_modulation, attinv_response
from freqkit.analysis.methods.features import features
from freqkit.analysis.methods.freqscale import freqscale_filters, freqscale_gain
from freqkit.analysis.methods.spam import spam_filters

__all__ = [
    "METHOD_FIGURES",
    "attinv_modulation",
    "freqscale_filters",
    "freqscale_gain",
    "features",
    "spam_filters",
    "attinv_response",
    "method_figures_data",
]

METHOD_FIGURES = ("attinv_modulation", "freqscale_gain", "features", "spam_filters", "attinv_response")


def method_figures_data(
    models: Models, images: Images, *, display: Optional[Images] = None, num_images: int = 4
) -> dict[str, Any]:
    """The method-figure data that applies to ``models`` (one or a dict name -> model) on images (B, 3, H, W).

    Returns {"applies": [figure kinds present], kind: {model name: data}} for the per-model kinds
    ("attinv_modulation", "freqscale_gain", "spam_filters", "attinv_response") and "features": the data
    of :func:`features` across models. Kinds whose modules a model lacks are left out silently. Per
    model this costs one hooked forward over all images, one over ``num_images`` (features) and, with
    AttInv, one over a single image (attention of two layers).
    """
    check_images(images)
    pairs = named(models)
    found: dict[str, dict[str, Any]] = {k: {} for k in METHOD_FIGURES}
    for name, model in pairs:
        att: dict[str, Any] = {}
        gains: dict[str, list] = {}
        sizes: dict[str, Any] = {}
        # one read-only forward feeds every method's taps
        handles = (
            attinv.taps(model, att, lambda n: True, lambda n: False) + freqscale.taps(model, gains) + spam.taps(model, sizes)
        )
        hooked_forward(model, images, handles)
        mod = attinv.modulation_result(att, *attinv.grid_of(model, att, images), images, display, num_images)
        if mod is not None:
            found["attinv_modulation"][name] = mod
            # the response layer is picked on the first image, as attinv_response does on its own
            means = {n: float(r["high"][:1].mean()) for n, r in att.items()}
            resp = attinv.response_for(model, images[:1], None, 8, means)
            if resp is not None:
                found["attinv_response"][name] = resp
        fs = freqscale.gain_result(model, freqscale.full_gains(gains))
        if fs is not None:
            found["freqscale_gain"][name] = fs
        sp = spam.filters_result(model, sizes)
        if sp is not None:
            found["spam_filters"][name] = sp
    feats = features(dict(pairs), images, display=display, num_images=num_images)
    if feats is not None:
        found["features"] = feats
    out: dict[str, Any] = {"applies": [k for k in METHOD_FIGURES if found[k]]}
    out.update({k: found[k] for k in out["applies"]})
    return out
