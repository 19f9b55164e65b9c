"""Spectral diagnostics: pure tensor functions (no nn.Module, no plotting) over token maps,
attention matrices and token matrices, plus representation similarity (CKA)."""

from freqkit.spectral.cka import cka_from_hsic, hsic_matrix, linear_cka, minibatch_cka, unbiased_hsic
from freqkit.spectral.fourier import (
    frequency_radius,
    full_plane,
    high_frequency_log_amplitude,
    high_frequency_ratio,
    radial_bin_centers,
    radial_profile,
    relative_log_amplitude,
    spectrum,
)
from freqkit.spectral.heads import attention_distance, attention_entropy, local_response_hf_share
from freqkit.spectral.operators import circulant, layer_kernel, periodic_gaussian, stack_response
from freqkit.spectral.rank import effective_rank, rank_collapse_residual, stable_rank
from freqkit.spectral.response import (
    attention_token_spectrum,
    global_response,
    local_response,
    local_response_summary,
)
from freqkit.spectral.similarity import cross_layer_similarity, token_cosine_similarity
from freqkit.spectral.tokens import infer_grid, split_tokens

__all__ = [
    "attention_distance",
    "attention_entropy",
    "attention_token_spectrum",
    "cka_from_hsic",
    "hsic_matrix",
    "linear_cka",
    "local_response_hf_share",
    "minibatch_cka",
    "unbiased_hsic",
    "circulant",
    "cross_layer_similarity",
    "effective_rank",
    "frequency_radius",
    "full_plane",
    "global_response",
    "high_frequency_log_amplitude",
    "high_frequency_ratio",
    "infer_grid",
    "layer_kernel",
    "periodic_gaussian",
    "stack_response",
    "local_response",
    "local_response_summary",
    "radial_bin_centers",
    "radial_profile",
    "rank_collapse_residual",
    "relative_log_amplitude",
    "spectrum",
    "split_tokens",
    "stable_rank",
    "token_cosine_similarity",
]

# graph-spectral simulation of token mixers (SPANetV2's graph-spectral analysis); the rest via freqkit.spectral.graph
from freqkit.spectral import graph  # noqa: E402
from freqkit.spectral.graph import eigenspace_response, graph_fourier_basis, graph_response, grid_laplacian  # noqa: E402

__all__ += ["graph", "eigenspace_response", "graph_fourier_basis", "graph_response", "grid_laplacian"]
