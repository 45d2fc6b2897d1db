"""SecAgg+'s settings and the error bound its quantisation puts on the aggregate."""

from dataclasses import dataclass

from fedvlm.algorithms.base import OptionError


@dataclass(frozen=True)
class SecAggPlusOptions:
    """Flower's ``SecAggPlusWorkflow`` parameters, under fedvlm's config names.

    - ``secagg_num_shares``: how many clients hold a share of each client's secrets (itself
      included): a count above 2, or a fraction of the round's sampled clients (1.0: all of
      them, the original SecAgg's full graph).
    - ``secagg_reconstruction_threshold``: how many of those shares rebuild a secret, as a
      count or a fraction of ``secagg_num_shares``. Privacy holds against fewer colluding
      parties than the threshold; a round survives a client dropping out while each
      client still has that many live share holders.
    - ``secagg_clipping_range`` (C), ``secagg_quantization_range`` (Q),
      ``secagg_modulus_range`` (M): each client scales its update by its weight over the
      round's largest weight, which must then lie in [-C, C], and rounds it stochastically
      to Q levels; masks are drawn modulo M (a power of 2 above Q; at most M / Q clients
      sum without overflow).
    """

    secagg_num_shares: float = 1.0
    secagg_reconstruction_threshold: float = 0.5
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 2**22
    secagg_modulus_range: int = 2**32

    def __post_init__(self):
        shares, threshold = self.secagg_num_shares, self.secagg_reconstruction_threshold
        if not (0 < shares <= 1 or (float(shares).is_integer() and shares > 2)):
            raise OptionError("secagg_num_shares", "a fraction in (0, 1] or a count above 2", shares)
        if not (0 < threshold <= 1 or (float(threshold).is_integer() and threshold >= 2)):
            raise OptionError("secagg_reconstruction_threshold", "a fraction in (0, 1] or a count of at least 2", threshold)
        if shares > 2 and threshold > 1 and threshold >= shares:
            raise OptionError("secagg_reconstruction_threshold", f"fewer than secagg_num_shares ({shares:g})", threshold)
        if not self.secagg_clipping_range > 0:
            raise OptionError("secagg_clipping_range", "a positive number", self.secagg_clipping_range)
        q, m = self.secagg_quantization_range, self.secagg_modulus_range
        if not (isinstance(q, int) and q > 1):
            raise OptionError("secagg_quantization_range", "an integer above 1", q)
        if not (isinstance(m, int) and m > q and m & (m - 1) == 0 and m <= 2**32):
            raise OptionError("secagg_modulus_range", f"a power of 2 above secagg_quantization_range ({q}), at most 2**32", m)

    def workflow_counts(self) -> tuple[int | float, int | float]:
        """``(num_shares, reconstruction_threshold)`` as Flower reads them: an int is a
        count, a float a fraction."""
        def as_flower(value: float) -> int | float:
            return int(value) if value > 1 else float(value)

        return as_flower(self.secagg_num_shares), as_flower(self.secagg_reconstruction_threshold)


def quantization_bound(options: SecAggPlusOptions, weights: list[float]) -> float:
    """The most one coordinate of SecAgg+'s weighted mean can differ from the exact weighted
    mean of the same updates, for clients of weights ``weights`` (those aggregated).

    Client k sends ``r_k x_k`` rounded stochastically to a grid of step ``2C / Q``, with
    ``r_k = round(Q w_k / max w) / Q``; the server divides the sum by ``sum r_k``. Each
    rounding moves a coordinate by less than one step, so the sum by less than
    ``K 2C / Q``, the mean by less than ``K (2C / Q) / sum r_k``. (Rounding ``r_k``
    itself reweights the clients by at most ``1 / (2 Q r_k)`` relatively; with
    ``|x| <= C`` that adds at most ``C max_k 1 / (Q r_k)``.)
    """
    q, c = options.secagg_quantization_range, options.secagg_clipping_range
    top = max(weights)
    ratios = [round(q * w / top) / q for w in weights]
    return len(weights) * (2 * c / q) / sum(ratios) + c * max(1 / (q * r) for r in ratios)
