"""Differentiable expected latency of a distribution over architectures.

Gradient-based controllers (DARTS / TangleNAS style) keep one probability
vector per choice and need the latency *penalty* as a differentiable function
of those vectors. The cost model is linear in per-(slot, op) table entries, so
its expectation under independent categorical choices is exact and cheap:

    E[latency] = intercept + sum_{s, o} P[s, o] * table[s, o]

with ``P = space.op_probabilities(probs)`` (the distribution of each slot's op
id) and ``table = model.latency_table()``. For one-hot probabilities this is
exactly ``CostModel.predict`` of that architecture.

Dtype: the table is cast to the dtype (and device) of the probabilities, so
float64 probabilities give float64 results that match ``predict`` to ~1e-12
relative; float32 probabilities give float32 results (~1e-7 relative).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from nas.cost.model import CostModel


def _ndim(value: object) -> int:
    return value.ndim if isinstance(value, torch.Tensor) else int(np.ndim(value))


def _expected(model: CostModel, probs: Mapping[str, torch.Tensor], validate: bool) -> torch.Tensor:
    P = model.space.op_probabilities(probs, validate=validate)  # [*batch, S, O]
    table = torch.as_tensor(model.latency_table(), dtype=P.dtype, device=P.device)
    if P.shape[-2:] != table.shape:
        raise ValueError(
            f"space {model.space.name!r} gave op probabilities of shape {tuple(P.shape[-2:])} but its latency"
            f" table is {tuple(table.shape)}"
        )
    return model.intercept + (P * table).sum(dim=(-2, -1))


def expected_latency(
    model: CostModel, probs: Mapping[str, torch.Tensor], validate: bool = True
) -> torch.Tensor:
    """Expected predicted latency (ms), a 0-d tensor differentiable w.r.t. every probability tensor.

    ``probs`` maps each choice key of ``model.space`` to a 1-D probability vector
    (length = number of values of that key, summing to 1). ``validate=False``
    skips the value checks (finite, >= 0, sums to 1), which read the tensors back
    to the host: use it inside a hot GPU training loop once inputs are known good.
    """
    for k, v in probs.items():
        if _ndim(v) != 1:
            raise ValueError(
                f"expected_latency takes 1-D probabilities, but {k!r} has shape {tuple(np.shape(v))}; use"
                " expected_latency_batch for a batch"
            )
    return _expected(model, probs, validate)


def expected_latency_batch(
    model: CostModel, probs: Mapping[str, torch.Tensor], validate: bool = True
) -> torch.Tensor:
    """Expected latency (ms) of ``B`` distributions at once, ``[B]``: ``probs[k]`` has shape ``[B, n_k]``."""
    for k, v in probs.items():
        if _ndim(v) != 2:
            raise ValueError(
                f"expected_latency_batch takes [B, n] probability tensors, but {k!r} has shape"
                f" {tuple(np.shape(v))}"
            )
    return _expected(model, probs, validate)
