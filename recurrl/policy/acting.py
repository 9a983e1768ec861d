"""The acting step of an :class:`~recurrl.policy.actor_critic.ActorCritic` as one native program.

From the encoded features to the actor's and the critic's head inputs: the cores' layer steps
and the head MLPs, recorded once per :func:`~recurrl.nn.native.frozen_weights` block and batch
size (:mod:`recurrl.nn.native.program`) and run in one kernel call per env step. Every op
computes what the layer-by-layer path computes, so the numbers are the same bit for bit
(``tests/test_policy.py``); policies or sizes the kernels would not run layer by layer (layer
norm, learned initial states, the memoryless core, products routed to oneDNN or MKL, float64,
GPU) get no program and act layer by layer.

Measured (AMD EPYC Zen 5, torch 2.13, one thread; sb3's MlpLstmPolicy shape, 8 envs): the cores
and MLPs of one acting step in ~25 us instead of ~90.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recurrl import nn as rnn
from recurrl.nn import matmul
from recurrl.nn.cores import _keep_mask
from recurrl.nn.native import mlp as native_mlp
from recurrl.nn.native.build import library
from recurrl.nn.native.program import Program, Slot
from recurrl.policy.cores import GRUCore, LSTMCore, State


class ActingProgram:
    """``(features[B, F], state, episode_start[B]) -> (actor_in, critic_in, state)``: the head
    inputs (the MLP outputs, or the core outputs where an MLP has no layers) and the new state,
    all views of one fresh tensor per call."""

    def __init__(self, program: Program, size: int, outputs: dict, state_shapes: list) -> None:
        self.program, self.size, self.outputs = program, size, outputs
        self.state_shapes = state_shapes

    def __call__(
        self, features: Tensor, state: State, episode_start: Tensor
    ) -> tuple[Tensor, Tensor, State]:
        out = features.new_empty(self.size)
        tensors = {"x": features, "keep": _keep_mask(features, episode_start), "out": out}
        for index, tensor in enumerate(state):
            tensors[f"s{index}"] = tensor
        self.program(tensors)
        views = {
            name: out[start : start + numel].view(shape)
            for name, (start, numel, shape) in self.outputs.items()
        }
        new_state = tuple(views[f"s{index}"] for index in range(len(state)))
        return views["actor"], views["critic"], new_state

    def accepts(self, features: Tensor, state: State) -> bool:
        """Whether these inputs have the layout the program was recorded for."""
        return (
            features.is_contiguous()
            and len(state) == len(self.state_shapes)
            and all(
                s.is_contiguous() and s.shape == shape
                for s, shape in zip(state, self.state_shapes, strict=True)
            )
        )


def _core_layers(core: nn.Module | None):
    """``(kind, rnn module)`` of a core the program can run, else None."""
    if type(core) is LSTMCore and type(core.rnn) is rnn.LSTM:
        return "lstm", core.rnn
    if type(core) is GRUCore and type(core.rnn) is rnn.GRU:
        return "gru", core.rnn
    return None


class _Builder:
    def __init__(self, batch: int) -> None:
        self.program, self.batch, self.size = Program(), batch, 0
        self.outputs: dict[str, tuple[int, int, tuple[int, ...]]] = {}

    def output(self, name: str, shape: tuple[int, ...]) -> Slot:
        numel = 1
        for n in shape:
            numel *= n
        self.outputs[name] = (self.size, numel, shape)
        self.size += numel
        return Slot("out", self.outputs[name][0])

    def core(self, kind: str, module, first_state: int, x: Slot, features: int) -> Slot | None:
        """Record every layer step of one core; returns the slot of its last ``h``."""
        batch, hidden = self.batch, module.hidden_size
        names = [f"s{first_state}", f"s{first_state + 1}"]
        h_all = self.output(names[0], (module.num_layers, batch, hidden))
        c_all = (
            self.output(names[1], (module.num_layers, batch, hidden)) if kind == "lstm" else None
        )
        inputs = features
        for layer in range(module.num_layers):
            weight_ih, weight_hh, bias_ih, bias_hh = module.layer_weights(layer)
            gates = weight_ih.shape[0]
            probe = torch.empty(0, dtype=torch.float32)
            if not matmul.use_native(probe, batch, inputs, gates):
                return None  # the layer path's input product would not be the native kernel's
            offset = layer * batch * hidden
            h_in, h_out = Slot(names[0], offset), Slot("out", h_all.offset + offset)
            w_ih_t, w_hh_t = (
                weight_ih.detach().t().contiguous(),
                weight_hh.detach().t().contiguous(),
            )
            if kind == "lstm":
                c_in, c_out = Slot(names[1], offset), Slot("out", c_all.offset + offset)
                bias = torch.add(bias_ih.detach(), bias_hh.detach())  # as the layer path's
                self.program.lstm(
                    batch, inputs, hidden, x, w_ih_t, bias, h_in, c_in, Slot("keep"), w_hh_t,
                    h_out, c_out,
                )  # fmt: skip
            else:
                self.program.gru(
                    batch, inputs, hidden, x, w_ih_t, bias_ih.detach().contiguous(), h_in,
                    Slot("keep"), w_hh_t, bias_hh.detach().contiguous(), h_out,
                )  # fmt: skip
            x, inputs = h_out, hidden
        return x

    def mlp(self, stack: nn.Module, x: Slot, features: int, name: str) -> bool:
        """Record the MLP (its last output is the call output ``name``); False if it cannot."""
        layers = list(stack)
        if not layers:
            start, numel = x.offset, self.batch * features  # the core's output itself
            self.outputs[name] = (start, numel, (self.batch, features))
            return True
        plan = stack._plan if stack._plan is not False else stack._make_plan()
        probe = torch.empty(self.batch, features)
        if plan is None or not native_mlp.supports(probe, plan[1][::2]):
            return False
        codes, params = plan
        for index, code in enumerate(codes):
            weight, bias = params[2 * index].detach(), params[2 * index + 1].detach()
            outputs = weight.shape[0]
            last = index == len(codes) - 1
            y = (
                self.output(name, (self.batch, outputs))
                if last
                else torch.empty(self.batch, outputs)
            )
            self.program.linear(
                self.batch, features, outputs, code, x, weight.t().contiguous(),
                bias.contiguous(), y,
            )  # fmt: skip
            x, features = y, outputs
        return True


def build(policy: nn.Module, features: Tensor, state: State) -> ActingProgram | None:
    """The program for ``policy`` acting on ``features[B, F]``, or None where it cannot have one."""
    actor, critic = _core_layers(policy.actor_core), _core_layers(policy.critic_core)
    if (
        library() is None
        or features.dtype != torch.float32
        or not features.is_cpu
        or features.dim() != 2
        or actor is None
        or (policy.critic_core is not None and critic is None)
        or not actor[1]._native_step(features)
    ):
        return None
    builder = _Builder(features.shape[0])
    x = Slot("x")
    actor_out = builder.core(*actor, 0, x, features.shape[1])
    critic_out = actor_out
    if actor_out is not None and critic is not None:
        critic_out = builder.core(
            *critic, len(policy.actor_core.initial_state(1)), x, features.shape[1]
        )
    if actor_out is None or critic_out is None:
        return None
    hidden = policy.actor_core.out_features
    if not builder.mlp(policy.actor_mlp, actor_out, hidden, "actor"):
        return None
    if not builder.mlp(policy.critic_mlp, critic_out, hidden, "critic"):
        return None
    shapes = [tuple(s.shape) for s in state]
    expected = [
        builder.outputs[f"s{i}"][2] for i in range(len(state)) if f"s{i}" in builder.outputs
    ]
    if shapes != expected:
        return None
    return ActingProgram(builder.program, builder.size, builder.outputs, shapes)
