"""The state probe: whether a policy's recurrent state holds what its task asks it to remember.

For an env whose ``info`` carries ``memory_target`` and ``memory_age`` (the native memory tasks,
see :mod:`recurrl.envs.core`), the policy plays greedy episodes of its own
(:func:`~recurrl.app.probe.collect.greedy_steps`); after each step the recurrent state (the
core's output for the windowed and memoryless cores,
:func:`~recurrl.app.probe.collect.probe_features`) is paired with the target and age of the
observation just read. Per age bucket, a linear classifier (least squares on one-hot targets,
standardised features, a small ridge) is fitted on two thirds of the episodes and scored on the
rest, against chance: the held-out frequency of the training side's most frequent class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recurrl.app.probe.collect import greedy_steps, probe_features
from recurrl.policy import ActorCritic

STATE_EPISODES = 256  # greedy episodes of the state probe (a third held out)
EXACT_AGES = 32  # the state probe's ages below this get a bucket each, later ones double
RIDGE = 1e-2  # the state probe's ridge, per training sample on standardised features


def age_buckets(max_age: int, exact: int = EXACT_AGES) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` age ranges up to ``max_age``: one per age below ``exact``,
    then ranges that double, ``(exact, 2 * exact - 1)``, ``(2 * exact, 4 * exact - 1)``, ..."""
    buckets = [(age, age) for age in range(min(exact, max_age + 1))]
    first = exact
    while first <= max_age:
        buckets.append((first, 2 * first - 1))
        first *= 2
    return buckets


def probe_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, ridge: float = RIDGE
) -> float:
    """Held-out accuracy of a linear classifier: least squares from standardised features
    ``[S, F]`` to one-hot targets ``[S]`` (ridge ``ridge * S_train`` on the weights, not on the
    bias), the class of the largest output."""
    x = train_x.double()
    mean, scale = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)  # (F,)
    x = (x - mean) / scale
    classes = int(max(train_y.max(), test_y.max())) + 1
    y = torch.nn.functional.one_hot(train_y, classes).double()  # (S, C)
    y_mean = y.mean(0)
    gram = x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)  # (F, F)
    weights = torch.linalg.solve(gram, x.T @ (y - y_mean))  # (F, C)
    scores = ((test_x.double() - mean) / scale) @ weights + y_mean  # (S_test, C)
    return float((scores.argmax(1) == test_y).double().mean())


def state_probe(
    features: Tensor,
    targets: Tensor,
    ages: Tensor,
    episodes: Tensor,
    seed: int = 0,
    exact: int = EXACT_AGES,
) -> dict:
    """Linear-probe accuracy at decoding ``targets`` from ``features`` by age bucket.

    Args:
        features: ``[S, F]`` what the policy holds after each sample's observation.
        targets: ``[S]`` int64 class ids (``memory_target``).
        ages: ``[S]`` steps since the target was shown (``memory_age``).
        episodes: ``[S]`` episode ids: a third of the episodes (drawn with ``seed``) are held
            out, so no episode gives samples to both sides.
        seed: the split's seed.
        exact: ages below it get a bucket each (:func:`age_buckets`).

    Returns:
        ``ages`` / ``age_max`` (each bucket's first and last age), ``accuracy`` (held out, None
        where a side has no sample), ``chance`` (the held-out frequency of the training
        split's most frequent class: what predicting it scores), ``samples`` per bucket, and
        ``train_episodes`` / ``test_episodes``.
    """
    ids = episodes.unique()
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    held_out = ids[order[: len(ids) // 3]]
    test = torch.isin(episodes, held_out)
    result: dict[str, Any] = {k: [] for k in ("ages", "age_max", "accuracy", "chance", "samples")}
    for first, last in age_buckets(int(ages.max()), exact):
        rows = (ages >= first) & (ages <= last)
        if not rows.any():
            continue
        train_rows, test_rows = rows & ~test, rows & test
        accuracy = chance = None
        if train_rows.any() and test_rows.any():
            train_y, test_y = targets[train_rows], targets[test_rows]
            accuracy = probe_accuracy(features[train_rows], train_y, features[test_rows], test_y)
            majority = torch.bincount(train_y).argmax()
            chance = float((test_y == majority).double().mean())
        for key, value in zip(
            result, (first, last, accuracy, chance, int(rows.sum())), strict=True
        ):
            result[key].append(value)
    result["train_episodes"] = len(ids) - len(held_out)
    result["test_episodes"] = len(held_out)
    return result


def probe_memory(policy: ActorCritic, env_config, episodes: int, num_envs: int, seed: int) -> dict:
    """Play ``episodes`` greedy episodes recording ``memory_target`` / ``memory_age`` and the
    policy's features (:func:`probe_features`), and run :func:`state_probe` on the steps that
    have a target."""
    steps = greedy_steps(policy, env_config, episodes, num_envs, seed, memory=True)
    T, N = steps["episode_start"].shape
    column_offset = torch.arange(N) * (T + 1)  # (N,): episode ids unique across envs
    episode = steps["episode_start"].long().cumsum(0) + column_offset  # (T, N)
    keep = steps["valid"].bool() & (steps["memory_target"] >= 0)  # (T, N)
    features = steps["features"][keep]  # (S, F)
    result = state_probe(
        features, steps["memory_target"][keep], steps["memory_age"][keep], episode[keep], seed
    )
    return {
        "features": probe_features(policy),
        "feature_size": int(features.shape[1]),
        "method": "least squares on one-hot targets (ridge), standardised features",
        **result,
    }
