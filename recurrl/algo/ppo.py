"""PPO with truncated BPTT over rollout chunks.

The rollout ``[T, B]`` is cut into ``K = T / L`` chunks per env; each chunk ``(k, b)`` is one
training sequence ``[L]`` that replays from the state saved before step ``kL`` (gradients stop
at chunk starts), resetting inside by ``episode_start``. A minibatch is a set of such sequences.
With ``L = T`` and one minibatch this is full BPTT over the rollout.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from recurrl.algo.distributed import SINGLE, World
from recurrl.algo.optim import trainable_parameters
from recurrl.algo.rollout import Rollout
from recurrl.config import PPOConfig
from recurrl.errors import DivergenceError
from recurrl.policy import ActorCritic
from recurrl.policy.cores import State
from recurrl.policy.tree import Observation, tree_map


class Sequences(NamedTuple):
    """Training sequences ``[L, S, ...]`` (S = K * B chunks) and their start states.

    ``obs`` is a :class:`~recurrl.policy.tree.TensorTree` for ``Dict``/``Tuple`` observations;
    ``prev_actions`` / ``prev_rewards`` (the previous step's env action and reward) may be None.
    """

    obs: Observation
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    episode_start: Tensor
    valid: Tensor
    prev_actions: Tensor | None
    prev_rewards: Tensor | None
    start_states: State  # each [num_layers, S, H]

    def select(self, index: Tensor) -> Sequences:
        """The sequences at ``index`` (into S)."""
        fields = [None if x is None else x.index_select(1, index) for x in self[:-1]]
        return Sequences(*fields, tuple(s.index_select(1, index) for s in self.start_states))


def to_chunks(x: Observation | None, bptt_len: int) -> Observation | None:
    """``[T, B, ...] -> [L, K * B, ...]``; sequence ``s = k * B + b`` is env b's chunk k.

    Trees are cut leaf by leaf; None stays None.
    """
    if x is None or not isinstance(x, Tensor):
        return None if x is None else tree_map(lambda leaf: to_chunks(leaf, bptt_len), x)
    T, B = x.shape[:2]
    K = T // bptt_len
    chunks = x.reshape(K, bptt_len, B, *x.shape[2:])  # (K, L, B, ...)
    return chunks.transpose(0, 1).reshape(bptt_len, K * B, *x.shape[2:])  # (L, K*B, ...)


def chunk_states_to_batch(states: State) -> State:
    """``[K, num_layers, B, H] -> [num_layers, K * B, H]`` (same ``s = k * B + b`` order)."""
    out = []
    for s in states:
        K, layers, B, H = s.shape
        out.append(s.transpose(0, 1).reshape(layers, K * B, H))  # (layers, K*B, H)
    return tuple(out)


def make_sequences(rollout: Rollout, advantages: Tensor, returns: Tensor, bptt_len: int):
    """Cut a rollout into TBPTT training sequences."""
    parts = (
        rollout.obs,
        rollout.actions,
        rollout.log_probs,
        rollout.values,
        advantages,
        returns,
        rollout.episode_start,
        rollout.valid,
        rollout.prev_actions,
        rollout.prev_rewards,
    )
    return Sequences(
        *(to_chunks(x, bptt_len) for x in parts), chunk_states_to_batch(rollout.chunk_states)
    )


def refresh_start_states(policy: ActorCritic, rollout: Rollout, bptt_len: int) -> State:
    """Recompute every chunk-start state with the current parameters.

    Replays the whole rollout from its first saved state (the state the rollout began with),
    so states reflect the latest parameters instead of the ones used while acting.
    """
    state = tuple(s[0] for s in rollout.chunk_states)
    saved = []
    with policy.acting():
        for start in range(0, rollout.valid.shape[0], bptt_len):
            saved.append(state)
            window = slice(start, start + bptt_len)
            previous = [
                None if x is None else x[window]
                for x in (rollout.prev_actions, rollout.prev_rewards)
            ]
            _, _, state = policy(
                rollout.obs[window], state, rollout.episode_start[window], *previous
            )
    stacked = tuple(torch.stack(parts) for parts in zip(*saved, strict=True))
    return chunk_states_to_batch(stacked)  # stacked outside the block: normal tensors


class LossTerms(NamedTuple):
    """Named PPO terms; the caller sums them.

    ``loss = policy_loss + vf_coef * value_loss - ent_coef * entropy``.
    """

    policy_loss: Tensor
    value_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clipfrac: Tensor


def ppo_loss(
    new_log_prob: Tensor,
    entropy: Tensor,
    new_value: Tensor,
    batch: Sequences,
    clip_coef: float,
    clip_vloss: bool,
    norm_adv: bool,
) -> LossTerms:
    """Clipped PPO objective over valid steps of ``[L, S]`` sequences.

    With ``r = exp(new_log_prob - old_log_prob)``, ``A`` the advantages (normalized over the
    batch's valid steps with ``norm_adv``), ``c = clip_coef`` and means over valid steps::

        policy_loss = mean(max(-A r, -A clip(r, 1 - c, 1 + c)))
        value_loss  = 0.5 mean((v - R)^2)   or, with clip_vloss,
                      0.5 mean(max((v - R)^2, (V + clip(v - V, -c, c) - R)^2))
        entropy     = mean(entropy)

    (``v`` the new value, ``V`` the rollout's, ``R`` the returns), plus ``approx_kl`` and
    ``clipfrac`` without gradients.
    """
    valid = batch.valid.to(new_log_prob.dtype)
    count = valid.sum().clamp(min=1.0)

    def mean(x: Tensor) -> Tensor:  # over valid steps
        return (x * valid).sum() / count

    advantages = batch.advantages
    if norm_adv:
        centered = advantages - mean(advantages)
        advantages = centered / (mean(centered * centered).sqrt() + 1e-8)
    log_ratio = new_log_prob - batch.log_probs
    ratio = log_ratio.exp()
    clipped_ratio = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    policy_loss = mean(torch.maximum(-advantages * ratio, -advantages * clipped_ratio))
    value_error = (new_value - batch.returns) ** 2
    if clip_vloss:
        clipped_value = batch.values + (new_value - batch.values).clamp(-clip_coef, clip_coef)
        value_error = torch.maximum(value_error, (clipped_value - batch.returns) ** 2)
    with torch.no_grad():
        approx_kl = mean((ratio - 1.0) - log_ratio)  # http://joschu.net/blog/kl-approx.html
        clipfrac = mean(((ratio - 1.0).abs() > clip_coef).to(ratio.dtype))
    return LossTerms(policy_loss, 0.5 * mean(value_error), mean(entropy), approx_kl, clipfrac)


def minibatch_loss(
    policy: ActorCritic, batch: Sequences, config: PPOConfig
) -> tuple[Tensor, LossTerms]:
    """Replay ``batch`` from its start states and return ``(total loss, terms)``."""
    out = policy.evaluate_actions(
        batch.obs,
        batch.actions,
        batch.start_states,
        batch.episode_start,
        batch.prev_actions,
        batch.prev_rewards,
    )
    terms = ppo_loss(
        out.log_prob,
        out.entropy,
        out.value,
        batch,
        config.clip_coef,
        config.clip_vloss,
        config.norm_adv,
    )
    loss = terms.policy_loss + config.vf_coef * terms.value_loss - config.ent_coef * terms.entropy
    return loss, terms


def update(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: Tensor,
    returns: Tensor,
    config: PPOConfig,
    generator: torch.Generator,
    world: World = SINGLE,
) -> dict[str, float]:
    """``update_epochs`` passes of minibatch PPO over the rollout's TBPTT sequences.

    With a data-parallel ``world`` every rank passes its own rollout; gradients are averaged
    over the ranks before each step and the ``target_kl`` early stop uses the mean KL over the
    ranks, so every rank takes the same steps.

    Raises:
        DivergenceError: the loss or the gradient norm of a minibatch is NaN or inf (on any
            rank); that step is not taken, earlier steps of this update are (the trainer
            restores the parameters from before the update).
    """
    sequences = make_sequences(rollout, advantages, returns, config.bptt_len)
    num_sequences = sequences.valid.shape[1]
    device = sequences.valid.device
    parameters = trainable_parameters(policy)
    history: list[LossTerms] = []
    for epoch in range(config.update_epochs):
        if config.refresh_states and epoch > 0:
            sequences = sequences._replace(
                start_states=refresh_start_states(policy, rollout, config.bptt_len)
            )
        order = torch.randperm(num_sequences, generator=generator).to(device)
        minibatches = order.tensor_split(min(config.num_minibatches, num_sequences))
        for number, index in enumerate(minibatches):
            loss, terms = minibatch_loss(policy, sequences.select(index), config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            where = f"epoch {epoch + 1}, minibatch {number + 1}"
            optimizer_step(
                policy, optimizer, loss, terms, config.max_grad_norm, world, where, parameters
            )
            history.append(LossTerms(*(term.detach() for term in terms)))
        if config.target_kl is not None:
            if world.mean(history[-1].approx_kl).item() > config.target_kl:  # same on all ranks
                break
    stats = {
        name: torch.stack([getattr(terms, name) for terms in history]).mean().item()
        for name in LossTerms._fields
    }
    stats["explained_variance"] = explained_variance(rollout.values, returns, rollout.valid)
    stats["epochs"] = epoch + 1
    return stats


def learning_rate_at(
    config: PPOConfig, global_step: int, anneal_from: tuple[int, float] | None = None
) -> float:
    """Linear annealing to 0 at ``total_steps`` (constant if ``anneal_lr`` is off).

    The line starts at ``anneal_from = (step, rate)``, by default ``(0, learning_rate)``; a
    resumed run whose ``total_steps`` or ``learning_rate`` changed starts it where it resumed.
    """
    if not config.anneal_lr:
        return config.learning_rate
    start_step, start_rate = anneal_from or (0, config.learning_rate)
    span = max(config.total_steps - start_step, 1)
    return start_rate * max(0.0, 1.0 - (global_step - start_step) / span)


def clip_coef_at(config: PPOConfig, global_step: int) -> float:
    """``clip_coef``, linearly annealed to 0 at ``total_steps`` when ``anneal_clip`` is on."""
    if not config.anneal_clip:
        return config.clip_coef
    return config.clip_coef * max(0.0, 1.0 - global_step / max(config.total_steps, 1))


def optimizer_step(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: Tensor,
    terms: LossTerms,
    max_grad_norm: float,
    world: World = SINGLE,
    where: str = "",
    parameters: list[Tensor] | None = None,
) -> None:
    """Average gradients over the ranks, clip their norm, step; refuse a non-finite update.

    ``parameters``: the policy's parameters that require gradients, if the caller has them
    listed already (:func:`update` lists them once per update).

    Raises:
        DivergenceError: the loss (on any rank) or the gradient norm is NaN or inf, naming
            which, its terms and ``where``; the optimizer does not step.
    """
    if parameters is None:
        parameters = trainable_parameters(policy)
    total_loss = world.average_gradients(parameters, loss)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    if bool(torch.isfinite(total_loss) & torch.isfinite(grad_norm)):
        optimizer.step()
        return
    values = ", ".join(
        f"{name}={getattr(terms, name).item():.4g}"
        for name in ("policy_loss", "value_loss", "entropy")
    )
    if not torch.isfinite(total_loss):
        what = f"the loss became {loss.item():.4g} ({values})"
        if world.active and torch.isfinite(loss):
            what = f"the loss became non-finite on another rank (here: {values})"
    else:
        what = f"the gradient norm became {grad_norm.item():.4g} (loss {loss.item():.4g}; {values})"
    raise DivergenceError(f"training diverged: {what}" + (f" in {where}" if where else ""))


def explained_variance(predicted: Tensor, target: Tensor, mask: Tensor) -> float:
    """``1 - Var[target - predicted] / Var[target]`` over valid steps (nan if Var is 0)."""
    keep = mask.bool()
    y, p = target[keep].double().cpu().numpy(), predicted[keep].double().cpu().numpy()
    variance = np.var(y)
    return float("nan") if variance == 0 else float(1.0 - np.var(y - p) / variance)
