"""The optimizer side of the PPO update: Adam and gradient clipping with less Python per step.

A minibatch step of a small recurrent policy on CPU takes a few milliseconds, and torch's
``Adam(fused=True).step`` and ``clip_grad_norm_`` spend ~60 us of it regrouping the same tensors
every call around their kernels. The versions here make the same kernel calls (bit-identical
parameters, tested in ``tests/test_ppo_fast.py``) and fall back to torch's for anything unusual.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from recurrl.config import PPOConfig


def make_optimizer(policy: torch.nn.Module, config: PPOConfig) -> torch.optim.Adam:
    """Adam over the policy's parameters, with torch's fused kernel where it has one.

    The fused step was measured 3x faster than the default per-tensor loop on CPU (122 vs 394 us
    for a 200k-parameter LSTM policy), and :class:`CachedFusedAdam` takes another ~25 us of
    Python off it (121 -> 97 us); devices without the kernel get the default.
    """
    parameters = list(policy.parameters())
    settings = dict(lr=config.learning_rate, eps=config.adam_eps)
    try:
        return CachedFusedAdam(parameters, **settings)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(parameters, **settings)


class _AdamTensors(NamedTuple):
    """What ``torch.optim.Adam`` gathers for its fused kernel at every step, kept."""

    group: dict
    params: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    steps: list[Tensor]


class CachedFusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` whose step skips re-gathering its tensors.

    torch's step spends ~35 us of Python per call collecting each group's parameters,
    gradients and state and grouping them by device and dtype around its one fused kernel.
    After a step of torch's this one keeps those lists and, while they hold, calls the kernel
    itself with torch's arguments: parameters and state are bit-identical to torch's, and
    ``state_dict()`` is torch's. Anything unusual takes torch's step: several parameter
    groups, a parameter without a gradient, mixed devices or dtypes, amsgrad, maximize,
    weight decay, capturable, differentiable, a tensor learning rate or betas, gradient
    scaling (AMP), a closure, compilation, a torch without ``torch._fused_adam_`` or whose
    kernel refuses torch's arguments of today (TypeError). ``load_state_dict`` and
    ``add_param_group`` drop the lists (tensors put into ``state`` by hand are not seen). An
    error of the kernel itself is raised: torch's step would make the same call.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], **settings: Any):
        self._kept: _AdamTensors | None = None
        self._direct = _direct_calls_exist()  # False too once the kernel refused a call
        super().__init__(params, **settings, fused=True)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._kept, self._direct = None, _direct_calls_exist()

    def add_param_group(self, param_group: dict) -> None:
        self._kept = None
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict) -> None:
        self._kept = None
        super().load_state_dict(state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adam step over the parameters' gradients (see the class docstring)."""
        kept = self._kept if closure is None else None
        grads = None if kept is None else self._gradients(kept)
        if grads is None:
            loss = _adam_step(self, closure)
            self._kept = self._gather() if self._direct else None
            return loss
        self._accelerator_graph_capture_health_check()
        group = kept.group
        beta1, beta2 = group["betas"]
        with torch.no_grad():  # the calls torch.optim.adam._fused_adam makes
            torch._foreach_add_(kept.steps, 1)
            try:
                torch._fused_adam_(
                    kept.params,
                    grads,
                    kept.exp_avgs,
                    kept.exp_avg_sqs,
                    [],
                    kept.steps,
                    amsgrad=False,
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
            except TypeError:  # a torch whose kernel takes other arguments: torch's step
                torch._foreach_sub_(kept.steps, 1)
                self._kept, self._direct = None, False
                return _adam_step(self, closure)
        return None

    def _gradients(self, kept: _AdamTensors) -> list[Tensor] | None:
        """The kept parameters' gradients, or None when the kept lists may not hold."""
        groups = self.param_groups
        if len(groups) != 1 or groups[0] is not kept.group or not _plain_adam(self, kept.group):
            return None
        params = kept.group["params"]
        if len(params) != len(kept.params) or not all(map(operator.is_, params, kept.params)):
            return None
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse for g in grads):
            return None
        return grads

    def _gather(self) -> _AdamTensors | None:
        """The lists torch's step just used, if the fused kernel can take them directly."""
        if len(self.param_groups) != 1:
            return None
        group = self.param_groups[0]
        params = list(group["params"])
        states = [self.state.get(p, {}) for p in params]
        if not params or not _plain_adam(self, group) or not all(states):
            return None
        device, dtype = params[0].device, params[0].dtype
        if not all(p.device == device and p.dtype == dtype for p in params):
            return None
        steps = [state["step"] for state in states]
        if not all(step.device == device and step.dtype == torch.float32 for step in steps):
            return None
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        return _AdamTensors(group, params, exp_avgs, exp_avg_sqs, steps)


def _direct_calls_exist() -> bool:
    """Whether this torch has what ``CachedFusedAdam``'s own step calls."""
    return (
        hasattr(torch, "_fused_adam_")
        and hasattr(torch.compiler, "is_compiling")
        and hasattr(torch.optim.Adam, "_accelerator_graph_capture_health_check")
    )


def _plain_adam(optimizer: torch.optim.Adam, group: dict) -> bool:
    """Whether ``group`` steps with torch's fused kernel and nothing more."""
    return (
        group["fused"]
        and not (group["amsgrad"] or group["maximize"] or group["weight_decay"])
        and not (group["capturable"] or group["differentiable"])
        and not group.get("decoupled_weight_decay", False)
        and not isinstance(group["lr"], Tensor)
        and not any(isinstance(beta, Tensor) for beta in group["betas"])
        and getattr(optimizer, "grad_scale", None) is None
        and getattr(optimizer, "found_inf", None) is None
        and not torch.compiler.is_compiling()
    )


def _adam_step(optimizer: torch.optim.Adam, closure: Callable[[], float] | None) -> float | None:
    """torch's ``Adam.step`` without the hooks wrapper it gets once any plain Adam exists
    (``CachedFusedAdam.step`` already runs inside its own)."""
    step = torch.optim.Adam.step
    if getattr(step, "hooked", False):
        step = step.__wrapped__
    return step(optimizer, closure)


def trainable_parameters(policy: torch.nn.Module) -> list[Tensor]:
    """The parameters of ``policy`` that require gradients."""
    return [p for p in policy.parameters() if p.requires_grad]


def clip_grad_norm_(parameters: list[Tensor], max_norm: float) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm)``, bit-identical.

    When the gradients are plain tensors on one CPU or CUDA device in one dtype this makes
    torch's calls without its regrouping and per-tensor moves (~25 us less per call); anything
    else goes to torch's. Returns the total norm before clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        device, dtype = grads[0].device, grads[0].dtype
        if device.type in ("cpu", "cuda") and all(
            type(g) is Tensor and g.dtype == dtype and g.device == device for g in grads
        ):
            with torch.no_grad():
                norms = torch._foreach_norm(grads, 2.0)
                total_norm = torch.linalg.vector_norm(torch.stack(norms), 2.0)
                clip_coef = float(max_norm) / (total_norm + 1e-6)
                torch._foreach_mul_(grads, torch.clamp(clip_coef, max=1.0))
            return total_norm
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
