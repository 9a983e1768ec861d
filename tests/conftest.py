"""Shared fixtures: small configs and tiny envs built from spaces."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a fast CartPoleNoVelocity run in ``tmp_path``."""
    return [
        f"run.dir={tmp_path / 'run'}",
        "env.num_envs=4",
        "ppo.total_steps=512",
        "ppo.rollout_len=32",
        "ppo.bptt_len=8",
        "ppo.num_minibatches=2",
        "ppo.update_epochs=2",
        "policy.hidden_size=16",
        "policy.encoder_sizes=[16]",
    ]
