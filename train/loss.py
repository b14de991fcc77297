"""RNN-T loss: the forward algorithm in log space, vectorized over anti-diagonals.

PyTorch has no built-in RNN-T loss, so it is written here. For an utterance with ``T``
encoder frames and ``U`` target tokens, the joint network gives log-probabilities
``lp[t, u, k]`` over the vocabulary (blank ``k = 0``) for every frame ``t`` and every
prefix length ``u``. The forward variable is::

    alpha[0, 0] = 0
    alpha[t, u] = logaddexp(alpha[t-1, u] + lp[t-1, u, blank],
                            alpha[t, u-1] + lp[t, u-1, y[u-1]])
    loss        = -(alpha[T-1, U] + lp[T-1, U, blank])

Cells with the same ``n = t + u`` depend only on cells of diagonal ``n - 1``, so each
diagonal is one vector operation over ``u`` (``T + U - 1`` steps instead of ``T * U``).
"""

from __future__ import annotations

import torch

__all__ = ["rnnt_loss"]

#: Stands in for log(0): finite so that ``logaddexp`` of two impossible cells keeps a
#: finite gradient (``-inf`` would give NaN), and far below any reachable log-probability.
_LOG_ZERO = -1e30


def _skew(x: torch.Tensor, num_diagonals: int) -> torch.Tensor:
    """``[B, T, W] -> [B, N, W]``: ``out[b, n, u] = x[b, n - u, u]``, ``_LOG_ZERO`` off the grid."""
    b, t, w = x.shape
    n = torch.arange(num_diagonals, device=x.device)[:, None]
    u = torch.arange(w, device=x.device)[None, :]
    ti = n - u
    valid = (ti >= 0) & (ti < t)
    idx = ti.clamp(0, t - 1)  # [N, W]
    gathered = x.gather(1, idx[None].expand(b, -1, -1))
    return torch.where(valid[None], gathered, torch.full_like(gathered, _LOG_ZERO))


def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor, *, blank: int = 0) -> torch.Tensor:
    """Negative log-likelihood of each target sequence under an RNN-T.

    Parameters
    ----------
    logits : torch.Tensor
        ``[B, T, U + 1, V]`` joint-network outputs (unnormalized; log-softmax is applied
        here). ``T`` and ``U`` are the largest lengths in the batch.
    targets : torch.Tensor
        ``[B, U]`` int64 token ids (padding beyond a row's length is ignored; it must
        still be a valid id).
    logit_lengths, target_lengths : torch.Tensor
        ``[B]`` int64: frames (at least 1) and tokens (at least 0) of each row.
    blank : int
        Id of the blank token.

    Returns
    -------
    torch.Tensor
        ``[B]`` losses in nats (differentiable with respect to ``logits``).

    Raises
    ------
    ValueError
        On inconsistent shapes or lengths out of range.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be [B, T, U+1, V], got shape {tuple(logits.shape)}")
    b, t_max, u1, v = logits.shape
    u_max = u1 - 1
    if targets.shape != (b, u_max):
        raise ValueError(f"targets must be [B, U] = [{b}, {u_max}], got {tuple(targets.shape)}")
    if logit_lengths.shape != (b,) or target_lengths.shape != (b,):
        raise ValueError("logit_lengths and target_lengths must be [B]")
    if b and (int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > t_max):
        raise ValueError(f"logit_lengths must be in 1..{t_max}")
    if b and (int(target_lengths.min()) < 0 or int(target_lengths.max()) > u_max):
        raise ValueError(f"target_lengths must be in 0..{u_max}")
    if not 0 <= blank < v:
        raise ValueError(f"blank must be in 0..{v - 1}, got {blank}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= v):
        raise ValueError(f"targets must be token ids in 0..{v - 1}")

    lp = torch.log_softmax(logits, dim=-1)
    blank_lp = lp[..., blank]  # [B, T, U+1]
    label_lp = lp[:, :, :u_max, :].gather(
        3, targets[:, None, :, None].expand(b, t_max, u_max, 1)).squeeze(3)  # [B, T, U]
    # Label moves end at column u + 1: pad column 0 so both tables are [B, T, U+1] and
    # diagonal n's label term for cell (t, u) is label_lp[t, u-1], found at [n-1] skewed.
    label_lp = torch.cat((torch.full_like(blank_lp[:, :, :1], _LOG_ZERO), label_lp), dim=2)
    num_diag = t_max + u_max
    blank_d = _skew(blank_lp, num_diag)  # blank_d[n, u] = blank_lp[n-u, u]
    label_d = _skew(label_lp, num_diag)  # label_d[n, u] = label_lp[n-u, u] (move into u)

    alpha = torch.full_like(blank_lp[:, 0, :], _LOG_ZERO)
    alpha = torch.cat((torch.zeros_like(alpha[:, :1]), alpha[:, 1:]), dim=1)  # diagonal 0
    diagonals = [alpha]
    pad = torch.full_like(alpha[:, :1], _LOG_ZERO)
    for n in range(1, num_diag):
        # From (t-1, u) by a blank: diagonal n-1 at the same u.
        from_blank = alpha + blank_d[:, n - 1]
        # From (t, u-1) by label y[u-1]: diagonal n-1 at u-1, with label_lp[t, u-1].
        from_label = torch.cat((pad, alpha[:, :-1]), dim=1) + label_d[:, n]
        alpha = torch.logaddexp(from_blank, from_label)
        diagonals.append(alpha)
    alphas = torch.stack(diagonals, dim=1)  # [B, N, U+1]
    last_t = logit_lengths - 1
    rows = torch.arange(b, device=logits.device)
    final = alphas[rows, last_t + target_lengths, target_lengths] \
        + blank_lp[rows, last_t, target_lengths]
    return -final
