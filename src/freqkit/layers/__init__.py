"""nn.Modules of freqkit: the shared Attention, its filters, FreqScale, SPAM mixers and the ViT block."""

from freqkit.layers.attention import Attention, AttentionContext, AttentionFilter
from freqkit.layers.attinv import AttInv

# per-method layers are added below as they land (one file each)
from freqkit.layers.attnscale import AttnScale
from freqkit.layers.block import FreqBlock, set_grid
from freqkit.layers.featscale import FeatScale
from freqkit.layers.freqscale import FreqScale
from freqkit.layers.gfsa import GFSA
from freqkit.layers.spam import SPAM
from freqkit.layers.spam_v2 import SPAMv2
from freqkit.layers.starrelu import StarReLU
