"""The memory horizon: how far back a trained policy's outputs depend on its observations.

The policy plays greedy episodes in its env (:func:`~recurrl.app.probe.collect.greedy_steps`);
every step ``t`` is then replayed as a window of the ``K + 1`` steps up to it (from the state
the policy really had at the window's first step) with autograd, and the norm of the gradient of
the action distribution's parameters (the head's linear output: logits, or the Gaussian mean)
and of the value at ``t`` with respect to the normalised observation at ``t - k`` is taken for
``k = 0..K``. A lag that reaches back before ``t``'s episode start is skipped for that ``t``;
each curve point is the mean over the steps where the lag exists. The gradient norm of a vector
output is the Frobenius norm of its Jacobian.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from recurrl.app.probe.errors import ProbeError
from recurrl.policy import ActorCritic
from recurrl.policy.normalize import RunningNormalizer

DEFAULT_LAGS = 64
THRESHOLD = 0.01  # the horizon: the last lag whose gradient is at least 1% of lag 0's


def _normalised(policy: ActorCritic, obs: Tensor) -> tuple[ActorCritic, Tensor]:
    """A copy of ``policy`` without its observation normaliser, and ``obs`` normalised by it
    (so gradients are taken with respect to what the encoder reads)."""
    probe = copy.deepcopy(policy)
    if isinstance(probe.obs_normalizer, RunningNormalizer):
        with torch.no_grad():
            obs = probe.obs_normalizer(obs)
    elif probe.obs_normalizer is not None:
        raise ProbeError("probe supports normalised array observations only")
    probe.obs_normalizer = None
    return probe, obs.to(policy.dtype)


def memory_horizon(policy: ActorCritic, steps: dict, lags: int, batch: int = 256) -> dict:
    """Gradient-norm curves over lags ``0..lags`` from
    :func:`~recurrl.app.probe.collect.greedy_steps`' output.

    Returns ``{"lags": [0..K], "action": [...], "value": [...], "counts": [...]}``; a lag no
    target reaches has ``None``.
    """
    probe, obs = _normalised(policy, steps["obs"].float())
    T, N = steps["episode_start"].shape
    K = lags
    episode_begin = _episode_begin(steps["episode_start"].bool())
    targets = [(t, b) for t in range(T) for b in range(N) if steps["valid"][t, b]]
    initial = probe.initial_state(1)
    sums = {name: torch.zeros(K + 1, dtype=torch.float64) for name in ("action", "value")}
    counts = torch.zeros(K + 1, dtype=torch.float64)
    captured: list[Tensor] = []
    hook = probe.head.linear.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        for first in range(0, len(targets), batch):
            group = targets[first : first + batch]
            windows = _windows(steps, obs, group, K, initial)
            captured.clear()
            action_norm, value_norm = _gradient_norms(probe, windows, captured, K)
            # Window row j is lag K - j; keep lags inside the target's episode.
            t_index = torch.tensor([t for t, _ in group])
            begin = torch.stack([episode_begin[t, b] for t, b in group])
            lag = torch.arange(K, -1, -1).unsqueeze(1)  # (K+1, 1)
            inside = (t_index.unsqueeze(0) - lag) >= begin.unsqueeze(0)  # (K+1, W)
            inside = inside.double()
            sums["action"] += (action_norm * inside).sum(1).flip(0)
            sums["value"] += (value_norm * inside).sum(1).flip(0)
            counts += inside.sum(1).flip(0)
    finally:
        hook.remove()

    def curve(total: Tensor) -> list[float | None]:
        return [float(s / c) if c > 0 else None for s, c in zip(total, counts, strict=True)]

    return {
        "lags": list(range(K + 1)),
        "action": curve(sums["action"]),
        "value": curve(sums["value"]),
        "counts": [int(c) for c in counts],
    }


def _episode_begin(starts: Tensor) -> Tensor:
    """``[T, N]``: the step where each step's episode began, from the episode starts
    ``[T, N]`` (for the lags that stay inside it)."""
    T, N = starts.shape
    episode_begin = torch.zeros(T, N, dtype=torch.long)
    current = torch.zeros(N, dtype=torch.long)
    for t in range(T):
        current = torch.where(starts[t], torch.full_like(current, t), current)
        episode_begin[t] = current
    return episode_begin


def _gradient_norms(
    probe: ActorCritic, windows: dict, captured: list[Tensor], K: int
) -> tuple[Tensor, Tensor]:
    """Replay ``windows`` (:func:`_windows`) with autograd; the norms ``[K+1, W]`` of the
    gradients of the distribution's parameters (what the hook on the head's linear layer puts
    in ``captured``) and of the value at each window's last step with respect to each window
    row's observation."""
    x = windows["obs"].requires_grad_(True)
    _, value, _ = probe(
        x,
        windows["state"],
        windows["episode_start"],
        windows["prev_action"],
        windows["prev_reward"],
    )
    params = captured[-1][-1]  # (W, P): the distribution's parameters at the target
    squared = torch.zeros(K + 1, params.shape[0], dtype=torch.float64)
    for p in range(params.shape[-1]):
        (grad,) = torch.autograd.grad(params[:, p].sum(), x, retain_graph=True)
        squared += grad.double().pow(2).flatten(2).sum(-1)
    (grad,) = torch.autograd.grad(value[-1].sum(), x)
    value_norm = grad.double().pow(2).flatten(2).sum(-1).sqrt()  # (K+1, W)
    return squared.sqrt(), value_norm


def _windows(steps: dict, obs: Tensor, group: list, K: int, initial) -> dict:
    """The ``K + 1`` steps up to each target ``(t, b)`` of ``group`` as ``[K+1, W, ...]``,
    with the state before the window's first step; steps before 0 are padding (zeros, then
    the episode start at step 0 resets whatever the padding did)."""

    def window(x: Tensor, t: int, b: int) -> Tensor:
        lo = t - K
        part = x[max(lo, 0) : t + 1, b]
        if lo < 0:
            part = torch.cat([torch.zeros(-lo, *part.shape[1:], dtype=part.dtype), part])
        return part

    out = {
        "obs": torch.stack([window(obs, t, b) for t, b in group], 1),
        "episode_start": torch.stack([window(steps["episode_start"], t, b) for t, b in group], 1),
        "prev_action": torch.stack([window(steps["prev_action"], t, b) for t, b in group], 1),
        "prev_reward": torch.stack([window(steps["prev_reward"], t, b) for t, b in group], 1),
    }
    states = []
    for i, parts in enumerate(steps["states"]):  # each [T, layers, N, H]
        columns = [
            parts[t - K, :, b] if t - K >= 0 else initial[i][:, 0] for t, b in group
        ]  # each [layers, H]
        states.append(torch.stack(columns, 1))  # [layers, W, H]
    out["state"] = tuple(states)
    return out


def horizon_lag(curve: list[float | None], threshold: float = THRESHOLD) -> dict:
    """``first_below``: the first lag >= 1 under ``threshold`` x lag 0's gradient (None if none
    is); ``last_above``: the last lag at or over it (0 when only the present step counts)."""
    base = curve[0]
    if base is None or base == 0:
        return {"first_below": None, "last_above": None}
    first_below = next(
        (k for k, v in enumerate(curve) if k > 0 and v is not None and v < threshold * base),
        None,
    )
    above = [k for k, v in enumerate(curve) if v is not None and v >= threshold * base]
    return {"first_below": first_below, "last_above": max(above)}
