"""A policy's acting step as a file for deployment: ONNX or TorchScript, the state explicit.

The exported graph is one step of :meth:`ActorCritic.step` with ``deterministic=True``, written
as a function of plain tensors, the batch dimension ``B`` free::

    (obs leaves..., state..., episode_start[B], prev_action[B, ...]?, prev_reward[B]?)
        -> (action[B, ...], distribution parameters..., value[B], next state...)

- ``obs``: one input per observation part, named ``obs`` for a flat space and
  ``obs.<key>`` / ``obs.<index>`` (dotted paths when nested) for ``Dict`` / ``Tuple`` spaces,
  each ``[B, *part_shape]`` in the space's dtype; a top-level ``action_mask`` is such an input
  too and masks the discrete action head.
- state: ``state_h`` (and ``state_c`` for an LSTM), each ``[num_layers, B, H]``; with a separate
  critic core also ``critic_state_h`` / ``critic_state_c``. A memoryless policy has none.
- ``episode_start``: float ``[B]``, 1 where the observation is the first of an episode. Those
  rows of the state are replaced by the initial state (zeros, or the learned one) inside the
  graph, and the previous action and reward are ignored there.
- ``prev_action`` / ``prev_reward``: only for policies trained with ``policy.prev_action`` /
  ``policy.prev_reward``; the action last sent to the env (the ``action`` output) and the raw
  reward it returned.
- outputs: ``action``, the greedy action as the env takes it (``policy.act(...,
  deterministic=True)``); ``logits`` (normalised log-probabilities for ``Discrete``, per part and
  padded for ``MultiDiscrete``, Bernoulli logits for ``MultiBinary``) or ``mean`` and
  ``log_std`` (``Box``: the Gaussian before clipping or squashing) for sampling; ``value``; then
  ``next_`` + each state name.

Both files are traces of the same :class:`PolicyStep` module, whose recurrent cells run their
pure-PyTorch reference step (the native C kernels cannot be traced). ONNX is written by
PyTorch's TorchScript-based exporter (``dynamo=False``): one step has no data-dependent control
flow, so tracing captures it whole, where the ``torch.export``-based exporter would need
``onnxscript`` and guards on the observation statistics. See ``docs/deployment.md``.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recurrl import nn as rnn
from recurrl.config import ConfigError
from recurrl.policy.actor_critic import ActorCritic
from recurrl.policy.cores import FeedForwardCore, GRUCore, LearnedInitialState, LSTMCore, State
from recurrl.policy.heads import BernoulliHead, CategoricalHead, GaussianHead, MultiCategoricalHead
from recurrl.policy.inputs import null_action
from recurrl.policy.normalize import RunningNormalizer
from recurrl.policy.spaces import ACTION_MASK_KEY
from recurrl.policy.tree import space_leaves

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
"""Export formats and their default file suffixes."""

ONNX_OPSET = 17
"""ONNX opset written (``LayerNormalization`` needs 17; onnxruntime >= 1.14 runs it)."""


class ExportError(ConfigError):
    """A policy or request that cannot be exported; the message names what and why.

    A :class:`~recurrl.config.ConfigError`, so the command line reports it in one line, exit 2.
    """


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the exported step: its name, shape (``"B"`` = batch) and dtype."""

    name: str
    shape: list[int | str]
    dtype: str


@dataclass(frozen=True)
class Signature:
    """The exported step's inputs and outputs, in call order."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def describe(self) -> str:
        """One line per tensor: ``name  [shape]  dtype``, inputs then outputs."""
        lines = []
        for title, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            shapes = ["[" + ", ".join(str(size) for size in spec.shape) + "]" for spec in specs]
            name_width = max(len(spec.name) for spec in specs)
            shape_width = max(len(shape) for shape in shapes)
            for spec, shape in zip(specs, shapes, strict=True):
                lines.append(f"  {spec.name:<{name_width}}  {shape:<{shape_width}}  {spec.dtype}")
        return "\n".join(lines)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _leaf_name(path: tuple) -> str:
    return "obs" if not path else "obs." + ".".join(str(key) for key in path)


def _state_names(core: nn.Module, prefix: str) -> list[str]:
    if isinstance(core, LearnedInitialState):
        core = core.core
    if isinstance(core, LSTMCore):
        return [f"{prefix}state_h", f"{prefix}state_c"]
    if isinstance(core, GRUCore):
        return [f"{prefix}state_h"]
    if isinstance(core, FeedForwardCore):
        return []
    raise ExportError(
        f"core {type(core).__name__} cannot be exported: only the lstm, gru and none cores "
        f"(with layer_norm and learned_initial_state) have an export path"
    )


class PolicyStep(nn.Module):
    """One deterministic acting step of ``policy`` as a function of plain tensors.

    Holds a float copy of the policy on the CPU whose recurrent cells run the reference
    implementation, so it can be traced; ``policy`` itself is left as it is.

    Args:
        policy: the policy to export.

    Raises:
        ExportError: a core or action head without an export path (the message says which).
    """

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        policy = copy.deepcopy(policy).cpu().eval().requires_grad_(False)
        for module in policy.modules():
            if isinstance(module, rnn.LSTM | rnn.GRU):
                module.impl = "reference"  # pure PyTorch: the native C kernels cannot be traced
        self.policy = policy
        self.paths = [path for path, _ in space_leaves(policy.observation_space)]
        self.mask_index = self.paths.index((ACTION_MASK_KEY,)) if policy.has_action_mask else None
        self.actor_state_names = _state_names(policy.actor_core, "")
        self.critic_state_names = (
            [] if policy.critic_core is None else _state_names(policy.critic_core, "critic_")
        )
        head = policy.head
        if not isinstance(head, CategoricalHead | MultiCategoricalHead | BernoulliHead):
            if not isinstance(head, GaussianHead):
                raise ExportError(f"action head {type(head).__name__} has no export path")
            self.register_buffer("low", torch.as_tensor(head.low), persistent=False)
            self.register_buffer("high", torch.as_tensor(head.high), persistent=False)

    # --- what goes in and out -------------------------------------------------------------

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        """Valid inputs for ``batch_size`` envs (used to trace): sampled observations, the
        initial state, every row starting an episode."""
        policy = self.policy
        rng = np.random.default_rng(0)
        leaves = []
        for _, space in space_leaves(policy.observation_space):
            space.seed(int(rng.integers(2**31)))
            leaves.append(torch.as_tensor(np.stack([space.sample() for _ in range(batch_size)])))
        inputs = [*leaves, *policy.initial_state(batch_size)]
        inputs.append(torch.ones(batch_size))  # episode_start
        if policy.config.prev_action:
            inputs.append(torch.as_tensor(null_action(policy.action_space, batch_size)))
        if policy.config.prev_reward:
            inputs.append(torch.zeros(batch_size))
        return tuple(inputs)

    def signature(self) -> Signature:
        """Names, shapes (``"B"`` for the batch) and dtypes of the inputs and outputs."""
        example = self.example_inputs(1)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            outputs = self(*example)

        def spec(name: str, x: Tensor) -> TensorSpec:
            shape: list[int | str] = list(x.shape)
            shape[self.batch_axis(name)] = "B"
            return TensorSpec(name, shape, _dtype_name(x.dtype))

        return Signature(
            [spec(name, x) for name, x in zip(self.input_names(), example, strict=True)],
            [spec(name, x) for name, x in zip(self.output_names(), outputs, strict=True)],
        )

    @property
    def state_names(self) -> list[str]:
        """The state inputs, actor's then critic's (each output as ``next_`` + name)."""
        return self.actor_state_names + self.critic_state_names

    def batch_axis(self, name: str) -> int:
        """Where the batch is in input or output ``name``: 1 in states, else 0."""
        return 1 if name.removeprefix("next_") in self.state_names else 0

    def input_names(self) -> list[str]:
        names = [_leaf_name(path) for path in self.paths]
        names += self.state_names + ["episode_start"]
        config = self.policy.config
        return names + ["prev_action"] * config.prev_action + ["prev_reward"] * config.prev_reward

    def output_names(self) -> list[str]:
        params = ["mean", "log_std"] if isinstance(self.policy.head, GaussianHead) else ["logits"]
        return ["action", *params, "value", *(f"next_{name}" for name in self.state_names)]

    # --- the step -------------------------------------------------------------------------

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """``(obs leaves..., state..., episode_start, prev_action?, prev_reward?)`` ->
        ``(action, distribution parameters..., value, next state...)``; see the module doc."""
        policy, config = self.policy, self.policy.config
        n_obs, n_actor = len(self.paths), len(self.actor_state_names)
        n_state = n_actor + len(self.critic_state_names)
        leaves = list(inputs[:n_obs])
        state = inputs[n_obs : n_obs + n_state]
        episode_start = inputs[n_obs + n_state]
        rest = list(inputs[n_obs + n_state + 1 :])
        prev_action = rest.pop(0) if config.prev_action else None
        prev_reward = rest.pop(0) if config.prev_reward else None

        features = self._encode(leaves, episode_start, prev_action, prev_reward)  # (B, F)
        actor_out, actor_state = _core_step(
            policy.actor_core, features, state[:n_actor], episode_start
        )
        critic_out, critic_state = actor_out, ()
        if policy.critic_core is not None:
            critic_out, critic_state = _core_step(
                policy.critic_core, features, state[n_actor:], episode_start
            )
        value = policy.value_head(policy.critic_mlp(critic_out)).squeeze(-1)  # (B,)
        head_input = policy.head.linear(policy.actor_mlp(actor_out))
        mask = None if self.mask_index is None else leaves[self.mask_index].flatten(1)  # (B, n)
        action, params = self._greedy(head_input, mask)
        return (action, *params, value, *actor_state, *critic_state)

    def _encode(
        self,
        leaves: list[Tensor],
        episode_start: Tensor,
        prev_action: Tensor | None,
        prev_reward: Tensor | None,
    ) -> Tensor:
        """As :meth:`ActorCritic._encode` for one step: ``leaves[B, ...] -> features[B, F]``."""
        policy = self.policy
        if isinstance(policy.obs_normalizer, RunningNormalizer):
            leaves = [policy.obs_normalizer(leaves[0])]
        elif policy.obs_normalizer is not None:
            leaves = policy.obs_normalizer(leaves)
        parts = []
        if policy.encoder.out_features:
            parts.append(policy.encoder(leaves, policy.dtype))  # (B, F_obs)
        if policy.previous is not None:
            previous = [None if x is None else x.unsqueeze(0) for x in (prev_action, prev_reward)]
            start = episode_start.unsqueeze(0)  # (1, B)
            parts.append(policy.previous(*previous, start, policy.dtype)[0])  # (B, P)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _greedy(self, head_input: Tensor, mask: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """The env-ready greedy action and the distribution's parameters (as the head's
        ``mode`` then ``to_env``)."""
        head = self.policy.head
        if isinstance(head, GaussianHead):
            mean = head_input  # (B, n)
            action = mean.double()  # to_env works in float64, as the head's
            if head.squash:
                action = self.low + (torch.tanh(action) + 1.0) * (self.high - self.low) / 2.0
            action = torch.minimum(torch.maximum(action, self.low), self.high)
            action = action.to(_torch_dtype(head.dtype)).reshape(-1, *head.space_shape)
            return action, [mean, head.log_std.expand_as(mean)]
        dist = head.distribution(head_input, mask)
        action = head.mode(dist)
        if isinstance(head, CategoricalHead):
            return action + head.start, [dist.logits]  # (B,), (B, n)
        if isinstance(head, MultiCategoricalHead):
            start = torch.as_tensor(head.start, dtype=action.dtype)
            action = (action + start).to(_torch_dtype(head.dtype))
            return action.reshape(-1, *head.space_shape), [dist.logits]  # (B, P, max(nvec))
        action = action.to(torch.int8).reshape(-1, *head.space_shape)  # MultiBinary
        return action, [dist.logits]


def _core_step(
    core: nn.Module, x: Tensor, state: State, episode_start: Tensor
) -> tuple[Tensor, State]:
    """One step of a policy core, ``x[B, F] -> y[B, H]``: the call with ``T = 1``. A learned
    initial state is put into the rows that start an episode here, before the core runs."""
    if isinstance(core, LearnedInitialState):
        rows = episode_start.bool().view(1, -1, 1)  # (1, B, 1)
        pairs = zip(core.initial, state, strict=True)
        state = tuple(torch.where(rows, p.to(s.dtype), s) for p, s in pairs)
        core, episode_start = core.core, torch.zeros_like(episode_start)
    y, state = core(x.unsqueeze(0), state, episode_start.unsqueeze(0))
    return y[0], tuple(state)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


# --- writing files ----------------------------------------------------------------------------


def _trace(step: PolicyStep) -> torch.jit.ScriptModule:
    """The step traced for a batch of 2 (sizes stay symbolic, so any ``B`` runs).

    Tracer warnings are silenced: the one data-dependent branch, whether the observation
    statistics are empty, is fixed for an exported policy."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit, kept for TorchScript
        return torch.jit.trace(step, step.example_inputs(), check_trace=False)


def _require_onnx():
    """The ``onnx`` package (it checks the written file), or an :class:`ExportError`."""
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "--format onnx needs the onnx package: pip install 'recurrl[export]' "
            "(onnx, and onnxruntime to run the file)"
        ) from None
    return onnx


def _write_onnx(step: PolicyStep, path: Path) -> None:
    """Export ``step`` with PyTorch's TorchScript-based exporter (it traces ``step`` itself).

    An input the graph does not read (``episode_start`` of a memoryless policy without previous
    action or reward) is dropped by the exporter; it is put back, unread, so that every policy
    is called the same way."""
    onnx = _require_onnx()
    inputs, outputs = step.input_names(), step.output_names()
    dynamic_axes = {name: {step.batch_axis(name): "B"} for name in [*inputs, *outputs]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            step,
            step.example_inputs(),
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
        )
    model = onnx.load(str(path))
    present = {value.name for value in model.graph.input}
    if len(present) < len(inputs):
        specs = step.signature().inputs
        for index, spec in enumerate(specs):
            if spec.name not in present:
                element = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
                value = onnx.helper.make_tensor_value_info(spec.name, element, spec.shape)
                model.graph.input.insert(index, value)
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def export_policy(policy: ActorCritic, path: str | Path, format: str) -> Signature:
    """Write ``policy``'s acting step to ``path`` and its signature to ``path + ".json"``.

    Args:
        policy: a policy (e.g. from :func:`recurrl.load_policy`).
        path: the file to write (``.onnx`` / ``.pt`` by convention).
        format: ``"onnx"`` or ``"torchscript"``.

    Returns:
        The inputs and outputs of the written step, in call order.

    Raises:
        ExportError: an unknown format, a missing ``onnx`` package, or a policy part without an
            export path.
    """
    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "onnx":
        _require_onnx()
    step = PolicyStep(policy)
    signature = step.signature()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        _write_onnx(step, path)
    else:
        _trace(step).save(str(path))
    description = {
        "format": format,
        "observation_space": str(policy.observation_space),
        "action_space": str(policy.action_space),
        "state": step.state_names,
        "inputs": [asdict(spec) for spec in signature.inputs],
        "outputs": [asdict(spec) for spec in signature.outputs],
    }
    Path(f"{path}.json").write_text(json.dumps(description, indent=2) + "\n")
    return signature
