"""The difference scores of visual words and tokens: TF-ICF, log-odds enrichment, prototype distance."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SCORERS", "TFICF_FORMULA", "tficf_scores", "enrichment_scores", "enriched_words", "prototype_distance"]

SCORERS = ("distance", "enrichment", "tficf")
TFICF_FORMULA = "tf_T(w) = c_T(w)/N_T; icf(w) = log((N_S + V)/(c_S(w) + 1)); tficf(w) = tf_T(w) * icf(w)"


def tficf_scores(counts_target: Tensor, counts_source: Tensor) -> Tensor:
    """TF-ICF per word ``[V]``: ``tf_T(w) * log((N_S + V) / (c_S(w) + 1))`` with ``tf_T(w) = c_T(w) / N_T``."""
    V = counts_target.numel()
    n_t = counts_target.sum().clamp_min(1).double()
    n_s = counts_source.sum().double()
    tf = counts_target.double() / n_t
    icf = torch.log((n_s + V) / (counts_source.double() + 1))
    return (tf * icf).float()


def enrichment_scores(counts_target: Tensor, counts_source: Tensor, prior: float = 0.0) -> Tensor:
    """Target enrichment of each word ``[V]``: the z-score of the log-odds ratio with an informative
    Dirichlet prior (Monroe, Colaresi and Quinn 2008, "Fightin' Words", eq. 16-22)::

        a_w     = a0 * (c_T(w) + c_S(w)) / (N_T + N_S)            # prior from the pooled frequencies
        delta_w = log((c_T+a_w) / (N_T+a0-c_T-a_w)) - log((c_S+a_w) / (N_S+a0-c_S-a_w))
        z_w     = delta_w / sqrt(1/(c_T+a_w) + 1/(c_S+a_w))

    ``a0 = prior`` (0 = the pooled token count ``N_T + N_S``, a prior as strong as the data). ``z > 0``
    means the word is more frequent in the target than in the source; ``z > 1.96`` is significant at
    about 5%. Words with no count in either set get 0.
    """
    c_t, c_s = counts_target.double(), counts_source.double()
    n_t, n_s = c_t.sum(), c_s.sum()
    a0 = (n_t + n_s) if prior <= 0 else torch.tensor(float(prior), dtype=torch.float64)
    a = a0 * (c_t + c_s) / (n_t + n_s).clamp_min(1)
    seen = a > 0
    a = torch.where(seen, a, torch.ones_like(a))
    delta = torch.log((c_t + a) / (n_t + a0 - c_t - a)) - torch.log((c_s + a) / (n_s + a0 - c_s - a))
    z = delta / torch.sqrt(1.0 / (c_t + a) + 1.0 / (c_s + a))
    return torch.where(seen, z, torch.zeros_like(z)).float()


def enriched_words(counts_target: Tensor, counts_source: Tensor, z: Tensor, *, max_words: int, z_min: float) -> Tensor:
    """Word ids ``[K]`` (most enriched first) with ``z >= z_min`` **and** a higher share in the target than
    in the source, at most ``max_words``: a word more frequent in the source is never among them."""
    share_t = counts_target.double() / counts_target.sum().clamp_min(1)
    share_s = counts_source.double() / counts_source.sum().clamp_min(1)
    ok = (z >= z_min) & (share_t > share_s)
    order = z.argsort(descending=True, stable=True)
    return order[ok[order]][:max_words]


def prototype_distance(emb: Tensor, prototypes: Tensor) -> Tensor:
    """Novelty of unit vectors ``emb [..., D]``: cosine distance to the nearest source prototype ``[M, D]``,
    ``1 - max_m cos(e, p_m)`` in ``[0, 2]`` -> ``[...]``."""
    return 1.0 - (emb @ prototypes.T).amax(dim=-1)
