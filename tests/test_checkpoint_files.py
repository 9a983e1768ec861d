"""Checkpoint files: refusals named from the file's structure, not from an error's text."""

from __future__ import annotations

import pathlib

import pytest
import torch

from recurrl.run import checkpoints
from recurrl.run.checkpoints import CheckpointError, load_checkpoint, write_checkpoint

PAYLOAD = {"format": checkpoints.FORMAT, "format_version": checkpoints.FORMAT_VERSION}


def test_code_carrying_file_is_refused_naming_what_it_would_import(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    torch.save({**PAYLOAD, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused: .*pathlib\.Path") as refusal:
        load_checkpoint(tmp_path / "evil.pt")
    assert "cannot read" not in str(refusal.value)
    assert not marker.exists()
    good = write_checkpoint(tmp_path / "good.pt", PAYLOAD).read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
