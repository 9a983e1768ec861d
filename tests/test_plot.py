"""``recurrl plot``: a panel per env, normalised returns, no silent cut, smoothing, step ticks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("matplotlib")

from recurrl.app.cli import main  # noqa: E402
from recurrl.app.plot import draw_runs, find_runs, format_steps, smooth  # noqa: E402

CARTPOLE, TMAZE = "recurrl/CartPoleNoVelocity-v0", "recurrl/TMaze-v0"


def fake_run(
    path: Path, name: str, env_id: str, seed: int, steps: int, optimum: float, every: int = 500
) -> Path:
    """A run folder as training leaves it (``every`` env steps per update): returns rise from
    0 towards ``optimum``."""
    path.mkdir(parents=True)
    config = {"name": name, "seed": seed, "env": {"id": env_id}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for step in range(every, steps + 1, every):
        value = optimum * (step / steps) * (0.9 + 0.05 * seed)
        record = {"global_step": step, "time_s": step / 1000, "episodic_return": value}
        if step % (2 * every) == 0:
            record["eval_return_mean"] = value
        lines.append(json.dumps(record))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def suite_of_two_envs(root: Path) -> Path:
    for seed in (1, 2, 3):
        fake_run(root / f"cartpole/seed{seed}", "cartpole_lstm", CARTPOLE, seed, 100_000, 500)
        fake_run(root / f"tmaze/seed{seed}", "tmaze_lstm", TMAZE, seed, 200_000, 1.0)
    return root


def data_axes(figure) -> list:
    return [axis for axis in figure.axes if axis.lines]


def test_one_panel_per_env_and_metric_normalised_by_the_optimum(tmp_path):
    runs = find_runs([suite_of_two_envs(tmp_path / "suite")])
    figure = draw_runs(runs)
    axes = data_axes(figure)
    titles = [axis.get_title() for axis in axes]
    assert len(axes) == 4  # (CartPole, TMaze) x (training, evaluation)
    assert sum(CARTPOLE in t for t in titles) == 2 and sum(TMAZE in t for t in titles) == 2
    assert "normalised by optimum 500" in titles[0] and "normalised by optimum 1" in titles[2]
    assert "training return" in titles[0] and "evaluation return" in titles[1]
    assert {axis.get_ylabel() for axis in axes} == {"return / optimum"}
    for axis in axes:  # both envs on a 0-1 scale: CartPole's 500 flattens nothing
        mean = axis.lines[0].get_ydata()
        assert 0 < mean.max() <= 1.2
        assert axis.get_xlabel() == "env steps"
    # One env alone keeps its own units unless asked.
    alone = draw_runs([r for r in runs if r.env_id == CARTPOLE])
    assert len(data_axes(alone)) == 2 and "normalised" not in alone.axes[0].get_title()
    assert data_axes(alone)[0].lines[0].get_ydata().max() > 400
    forced = draw_runs([r for r in runs if r.env_id == CARTPOLE], normalize=True)
    assert "normalised by optimum 500" in forced.axes[0].get_title()


def test_the_cli_writes_a_readable_multi_env_png(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "curves.png"
    root = suite_of_two_envs(tmp_path / "suite")
    assert main(["plot", str(root), "--out", str(out), "--smooth", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        width, height = image.size
    assert width > 2 * height  # two envs side by side, each with its two panels
    with pytest.raises(SystemExit) as refused:
        main(["plot", str(root), "--out", str(out), "--smooth", "0"])
    assert refused.value.code == 2
    assert "argument --smooth: expected a positive integer, got '0'" in capsys.readouterr().err


def test_runs_of_different_lengths_warn_and_are_not_cut(tmp_path):
    for seed in (1, 2, 3):
        fake_run(tmp_path / f"full{seed}", "lstm", CARTPOLE, seed, 100_000, 500)
    fake_run(tmp_path / "test-run", "lstm", CARTPOLE, 4, 1_000, 500)
    warnings = []
    figure = draw_runs(find_runs([tmp_path]), warn=warnings.append)
    assert len(warnings) == 1  # for the group, from its first panel (training return)
    assert "runs end at different points" in warnings[0]
    assert "the curve is the mean of 4 runs up to 1k" in warnings[0]
    assert str(tmp_path / "test-run") + " (1k)" in warnings[0]
    assert str(tmp_path / "full1") + " (100k)" in warnings[0]
    axis = data_axes(figure)[0]
    assert axis.lines[0].get_xdata()[-1] == 1_000  # the mean over all four runs
    tails = [line for line in axis.lines[1:] if line.get_linestyle() == "-"]
    assert len(tails) == 3 and all(line.get_xdata()[-1] == 100_000 for line in tails)


def test_a_run_that_ends_before_the_others_start_is_drawn_alone(tmp_path):
    for seed in (1, 2, 3):
        fake_run(tmp_path / f"full{seed}", "lstm", CARTPOLE, seed, 100_000, 500, every=1_000)
    fake_run(tmp_path / "test-run", "lstm", CARTPOLE, 4, 400, 500, every=100)
    warnings = []
    axis = data_axes(draw_runs(find_runs([tmp_path]), warn=warnings.append))[0]
    assert axis.lines[0].get_xdata()[-1] == 100_000  # the mean of the three full runs
    assert axis.get_legend_handles_labels()[1] == ["lstm (3 runs)", "lstm: test-run alone"]
    assert axis.lines[1].get_xdata()[-1] == 400  # the short run, alone
    assert "the curve is the mean of 3 runs up to 100k" in warnings[0]
    assert f"{tmp_path / 'test-run'} (400)" in warnings[0]


def test_step_ticks_read_as_100k_and_1M(tmp_path):
    labels = [format_steps(v) for v in (0, 500, 1_000, 2_500, 100_000, 1_000_000, 1.5e6, 2e9)]
    assert labels == ["0", "500", "1k", "2.5k", "100k", "1M", "1.5M", "2B"]
    figure = draw_runs(find_runs([fake_run(tmp_path / "run", "x", TMAZE, 1, 1_000_000, 1.0)]))
    figure.canvas.draw()
    ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert "1M" in ticks and any(t.endswith("k") for t in ticks), ticks


def test_smoothing_is_a_trailing_moving_average():
    np.testing.assert_allclose(smooth(np.array([1.0, 2, 3, 4]), 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth(np.array([1.0, 2, 3]), 1), [1, 2, 3])
    np.testing.assert_allclose(smooth(np.array([3.0, 0, 0, 0]), 3), [3, 1.5, 1, 0])
