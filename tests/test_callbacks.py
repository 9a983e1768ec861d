"""Callbacks: stopping, custom values, the sinks as callbacks, the start banner, progress that
never passes its target."""

from __future__ import annotations

import io
import re

import pytest

import recurrl
from recurrl.config import config_from_dict
from recurrl.run.callbacks import Callback, RunInfo, StopTraining
from recurrl.run.progress import Console, LineConsole, ProgressBar, banner
from recurrl.run.run_dir import read_metrics
from recurrl.run.tracking import MetricsFile, WandbSink, make_sinks
from recurrl.run.train import Trainer
from tests.test_api import Recall, small


class Record(Callback):
    """Every hook call, in order."""

    def __init__(self):
        self.calls = []

    def on_start(self, info):
        self.calls.append(("start", info))

    def on_update(self, metrics):
        self.calls.append(("update", metrics["global_step"]))

    def on_eval(self, metrics):
        self.calls.append(("eval", metrics["eval_return_mean"]))

    def on_checkpoint(self, path, aliases, global_step):
        self.calls.append(("checkpoint", path.name))

    def on_end(self, result):
        self.calls.append(("end", result and result.global_step))


def test_stop_on_return_stops_early_and_leaves_a_loadable_checkpoint(tmp_path):
    record = Record()
    model = recurrl.PPO({"id": Recall, "num_envs": 4}, **small(tmp_path), quiet=True)
    model.learn(640, callbacks=[recurrl.StopOnReturn(0.0), record])  # any return is >= 0
    result = model.result
    assert result.global_step == 64 and result.stopped_by.startswith("StopOnReturn(0.0")
    assert [c[0] for c in record.calls] == ["start", "update", "checkpoint", "end"]
    assert record.calls[2] == ("checkpoint", "final.pt")
    policy = recurrl.load_policy(result.run_dir / "checkpoints" / "final.pt")
    assert policy.action_space == Recall.action_space
    resumed = recurrl.PPO.load(result.run_dir, env=Recall, quiet=True).learn()  # goes on
    assert resumed.result.global_step == 640 and resumed.result.stopped_by is None


def test_stop_training_raised_and_eval_hook(tmp_path):
    class StopAtEval(Callback):
        def on_eval(self, metrics):
            raise StopTraining("evaluated once")

    record = Record()
    sections = small(tmp_path, eval={"every": 128, "episodes": 2})
    model = recurrl.PPO({"id": Recall, "num_envs": 4}, **sections, quiet=True)
    model.learn(640, callbacks=[record, StopAtEval()])
    assert model.result.global_step == 128
    assert model.result.stopped_by == "StopAtEval: evaluated once"
    hooks = [c[0] for c in record.calls]
    assert hooks[:4] == ["start", "update", "eval", "update"]  # eval before its update's


def test_custom_values_land_in_metrics_jsonl(tmp_path):
    class Custom(Callback):
        def on_update(self, metrics):
            metrics["custom/steps_k"] = metrics["global_step"] / 1000

    model = recurrl.PPO({"id": Recall, "num_envs": 4}, **small(tmp_path), quiet=True)
    model.learn(128, callbacks=[Custom()])
    assert [m["custom/steps_k"] for m in read_metrics(model.run_dir)] == [0.064, 0.128]
    assert model.result.history[-1]["custom/steps_k"] == 0.128


def test_the_sinks_are_callbacks_in_one_list(tmp_path):
    config = config_from_dict(
        {"env": {"id": "recurrl/TMaze-v0", "num_envs": 4}, "run": {"dir": str(tmp_path)}}
    )
    sinks = make_sinks(config, tmp_path, quiet=False)
    assert all(isinstance(sink, Callback) for sink in sinks)
    assert isinstance(sinks[0], MetricsFile) and isinstance(sinks[-1], Console)
    assert len(make_sinks(config, tmp_path, quiet=True)) == 1  # metrics.jsonl only
    for sink in sinks:
        sink.on_end(None)
    mine = Record()
    trainer = Trainer(
        config_from_dict({**small(tmp_path / "t"), "env": {"id": "recurrl/TMaze-v0"}}),
        quiet=True,
        callbacks=[mine],
    )
    assert trainer.callbacks.callbacks[0] is mine  # the user's first, then the sinks
    assert isinstance(trainer.callbacks.callbacks[1], MetricsFile)
    trainer.envs.close()
    trainer.callbacks.on_end(None)


def run_info(tmp_path, **changes) -> RunInfo:
    config = config_from_dict({"ppo": {"total_steps": 1000}})
    fields = {
        "run_dir": tmp_path,
        "env_id": "recurrl/TMaze-v0",
        "observation_space": "Box(0, 1, (3,))",
        "action_space": "Discrete(4)",
        "num_envs": 8,
        "rank": 0,
        "world_size": 1,
        "parameters": 12345,
        "core": "gru",
        "cells": "native",
        "device": "cpu",
        "start_step": 0,
        "total_steps": 1024,
        "steps_per_update": 512,
        "config": config,
    }
    return RunInfo(**{**fields, **changes})


def test_banner_says_where_what_and_how(tmp_path):
    text = "\n".join(banner(run_info(tmp_path)))
    for part in (
        f"run folder {tmp_path}",
        "env recurrl/TMaze-v0 (8 envs)",
        "observation Box(0, 1, (3,))",
        "action Discrete(4)",
        "gru core, 12,345 parameters; device cpu, cells native",
        "steps: 1,024 (ppo.total_steps 1,000 rounded up to whole updates of 512)",
    ):
        assert part in text
    assert "resumed" not in text
    info = run_info(tmp_path, start_step=512, notes=["W&B offline: files in X"])
    text = "\n".join(banner(info))
    assert "resumed from step 512" in text and "W&B offline: files in X" in text


def test_banner_of_a_real_run_and_its_resume(tmp_path, capsys):
    sections = small(tmp_path, tracking={"wandb": {"mode": "offline"}})
    recurrl.PPO({"id": Recall, "num_envs": 4}, **sections).learn(100)
    out = capsys.readouterr().out
    assert f"recurrl: run folder {tmp_path / 'run'}" in out
    assert "env <callable tests.test_api:Recall> (4 envs)" in out
    assert re.search(r"lstm core, [\d,]+ parameters; device cpu, cells \w+", out)
    assert "steps: 128 (ppo.total_steps 100 rounded up to whole updates of 64)" in out
    assert re.search(r"W&B offline: files in .*wandb.* \(upload: wandb sync ", out)
    steps = [int(s.replace(",", "")) for s in re.findall(r"step +([\d,]+)/128", out)]
    assert steps == [64, 128]  # the real target, never 128/100
    recurrl.PPO.load(tmp_path / "run", env=Recall).learn(192)
    assert "resumed from step 128" in capsys.readouterr().out


@pytest.mark.parametrize("tty", [False, True])
def test_progress_never_passes_its_target(tmp_path, tty):
    class Stream(io.StringIO):
        def isatty(self):
            return tty

    stream = Stream()
    console = ProgressBar(100, stream) if tty else LineConsole(100, stream)
    console.on_start(run_info(tmp_path, total_steps=1024))
    metrics = {"sps": 1.0, "approx_kl": 0.0}
    for step in (512, 1024, 2048):  # the last one past the target clamps
        console.on_update({**metrics, "global_step": step})
    console.on_end(None)
    shown = re.findall(r"(?:step +|\] )([\d,]+)/([\d,]+)", stream.getvalue())
    assert [a for a, _ in shown] == ["512", "1,024", "1,024"]
    assert all(b == "1,024" for _, b in shown)


def test_wandb_sink_is_a_callback():
    assert issubclass(WandbSink, Callback)


def test_banner_prints_a_box_with_per_element_bounds_on_one_line():
    import numpy as np
    from gymnasium import spaces

    from recurrl.run.progress import describe_space

    stacked = spaces.Box(np.tile([-4.8, -0.4], (4, 1)), np.tile([4.8, 0.4], (4, 1)), (4, 2))
    assert describe_space(stacked) == "Box(-4.8 to 4.8 per element, (4, 2), float32)"
    assert describe_space(spaces.Discrete(3)) == "Discrete(3)"
    board = spaces.MultiDiscrete([3] * 52)  # printed over two lines by Gymnasium
    assert describe_space(board) == "MultiDiscrete(3 values per element, (52,))"
    mixed = spaces.MultiDiscrete([2, 5] * 30)
    assert describe_space(mixed) == "MultiDiscrete(2 to 5 values per element, (60,))"
    assert describe_space(spaces.MultiDiscrete([3, 4])) == str(spaces.MultiDiscrete([3, 4]))
    assert describe_space(spaces.Box(0, 1, (3,))) == str(spaces.Box(0, 1, (3,)))


def test_banner_suggests_a_wider_network_for_a_wide_observation(tmp_path):
    import numpy as np
    from gymnasium import spaces

    from recurrl.policy.encoders import mlp_input_widths

    board = spaces.MultiDiscrete([3] * 52)  # POPGym Concentration: one-hot, 156 wide
    image = spaces.Box(0, 255, (16, 16, 3), np.uint8)
    both = spaces.Dict({"board": board, "frame": image, "x": spaces.Box(-1, 1, (4,))})
    assert mlp_input_widths(board) == [156]
    assert sorted(mlp_input_widths(both)) == [4, 156]
    assert mlp_input_widths(image) == []  # a CNN's input

    by_hand = config_from_dict({"policy": {"encoder_sizes": [64]}})  # auto widens by itself
    text = "\n".join(banner(run_info(tmp_path, encoder_inputs=[156, 4], config=by_hand)))
    assert "observation has 156 features for a 64-unit encoder layer" in text
    assert "policy.encoder_sizes=[256] policy.hidden_size=256" in text
    for narrow in ([128], [3], []):  # at most twice the layer's width, or no MLP part
        info = run_info(tmp_path, encoder_inputs=narrow, config=by_hand)
        assert "features for a" not in "\n".join(banner(info))
    for sizes in ([256], "auto"):
        wide = config_from_dict({"policy": {"encoder_sizes": sizes}})
        info = run_info(tmp_path, encoder_inputs=[156], config=wide)
        assert "features for a" not in "\n".join(banner(info))
    no_mlp = config_from_dict({"policy": {"encoder_sizes": []}})
    assert "features for a" not in "\n".join(
        banner(run_info(tmp_path, encoder_inputs=[156], config=no_mlp))
    )
