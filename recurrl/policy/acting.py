"""The acting step of an :class:`~recurrl.policy.actor_critic.ActorCritic` as one native program.

From the encoded features to the action head's ``Linear`` output and the value: the cores' layer
steps, the head MLPs and the heads' ``Linear`` layers, recorded once per
:func:`~recurrl.nn.native.frozen_weights` block and batch size
(:mod:`recurrl.nn.native.program`) and run in one kernel call per env step. Every op computes
what the layer-by-layer path computes, so the numbers are the same bit for bit
(``tests/test_acting_program.py``); policies or sizes the kernels would not run layer by layer
(layer norm, learned initial states, the memoryless core, products routed to oneDNN or MKL,
float64, GPU) get no program and act layer by layer.

Measured (AMD EPYC Zen 5, torch 2.13, one thread; sb3's MlpLstmPolicy shape, 8 envs):
``ActorCritic.step`` takes ~90-96 us instead of ~160.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recurrl import nn as rnn
from recurrl.nn import matmul
from recurrl.nn.native import mlp as native_mlp
from recurrl.nn.native.build import library
from recurrl.nn.native.program import Program, Slot
from recurrl.policy.cores import GRUCore, LSTMCore, State


class ActingProgram:
    """``(features[B, F], state, episode_start[B]) -> (head_out, value[B, 1], state)``: the
    action head's ``Linear`` output (for ``head.distribution``), the value and the new state, all
    views of one fresh tensor per call."""

    def __init__(self, program: Program, size: int, outputs: dict, state_shapes: list) -> None:
        self.program, self.size = program, size
        self.state_shapes = state_shapes
        ordered = sorted(outputs.items(), key=lambda item: item[1][0])  # laid out in this order
        self.names = [name for name, _ in ordered]
        self.sizes = [numel for _, (_, numel, _) in ordered]
        self.shapes = [shape for _, (_, _, shape) in ordered]

    def __call__(
        self, features: Tensor, state: State, episode_start: Tensor
    ) -> tuple[Tensor, Tensor, State]:
        out = features.new_empty(self.size)
        if episode_start.dtype != torch.float32 or not episode_start.is_contiguous():
            episode_start = episode_start.to(torch.float32).contiguous()
        tensors = {"x": features, "start": episode_start, "out": out}
        for index, tensor in enumerate(state):
            tensors[f"s{index}"] = tensor
        self.program(tensors)
        parts = zip(self.names, out.split(self.sizes), self.shapes, strict=True)
        views = {name: part.view(shape) for name, part, shape in parts}
        new_state = tuple(views[f"s{index}"] for index in range(len(state)))
        return views["actor"], views["critic"], new_state

    def accepts(self, features: Tensor, state: State) -> bool:
        """Whether these inputs have the layout the program was recorded for."""
        return (
            features.is_contiguous()
            and len(state) == len(self.state_shapes)
            and all(
                s.is_contiguous() and s.dtype == torch.float32 and s.shape == shape
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
        self.keep = torch.empty(batch)  # the reset mask, computed first by the program
        self.program.keep(batch, Slot("start"), self.keep)

    def output(self, name: str, shape: tuple[int, ...]) -> Slot:
        numel = math.prod(shape)
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
                    batch, inputs, hidden, x, w_ih_t, bias, h_in, c_in, self.keep, w_hh_t,
                    h_out, c_out,
                )  # fmt: skip
            else:
                self.program.gru(
                    batch, inputs, hidden, x, w_ih_t, bias_ih.detach().contiguous(), h_in,
                    self.keep, w_hh_t, bias_hh.detach().contiguous(), h_out,
                )  # fmt: skip
            x, inputs = h_out, hidden
        return x

    def mlp(self, stack: nn.Module, tail: nn.Module, x: Slot, features: int, name: str) -> bool:
        """Record ``tail(stack(x))`` as ``MLP.forward_with`` computes it natively (the last
        output is the call output ``name``); False where that runs in torch."""
        plan = stack._native_params()
        if plan is None or type(tail) is not nn.Linear or tail.bias is None:
            return False
        codes = (*plan[0], native_mlp.IDENTITY)
        params = [p.detach() for p in (*plan[1], tail.weight, tail.bias)]
        if not native_mlp.supports(torch.empty(self.batch, features), params[::2]):
            return False
        for index, code in enumerate(codes):
            weight, bias = params[2 * index], params[2 * index + 1]
            outputs = weight.shape[0]
            if index == len(codes) - 1:
                y = self.output(name, (self.batch, outputs))
            else:
                y = torch.empty(self.batch, outputs)
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
        or not all(core[1]._native_step(features) for core in (actor, critic) if core)
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
    if not builder.mlp(policy.actor_mlp, policy.head.linear, actor_out, hidden, "actor"):
        return None
    if not builder.mlp(policy.critic_mlp, policy.value_head, critic_out, hidden, "critic"):
        return None
    shapes = [tuple(s.shape) for s in state]
    expected = [
        builder.outputs[f"s{i}"][2] for i in range(len(state)) if f"s{i}" in builder.outputs
    ]
    if shapes != expected:
        return None
    return ActingProgram(builder.program, builder.size, builder.outputs, shapes)
