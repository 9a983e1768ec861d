"""Checkpoint files: synced to disk before the rename, refusals named from the file's structure."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest
import torch

from recurrl.errors import CheckpointWriteError
from recurrl.run import checkpoints
from recurrl.run.checkpoints import CheckpointError, load_checkpoint, write_checkpoint

PAYLOAD = {"format": checkpoints.FORMAT, "format_version": checkpoints.FORMAT_VERSION}


def test_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "latest.pt"
    write_checkpoint(target, {**PAYLOAD, "global_step": 1})  # a previous file to replace
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        status = os.fstat(descriptor)
        events.append(("fsync", "folder" if stat.S_ISDIR(status.st_mode) else status.st_ino))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", os.stat(source).st_ino))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_checkpoint(target, {**PAYLOAD, "global_step": 2})
    monkeypatch.undo()
    written = target.stat().st_ino
    assert events == [("fsync", written), ("replace", written), ("fsync", "folder")]
    assert load_checkpoint(target)["global_step"] == 2


def test_a_failed_sync_keeps_the_previous_file(tmp_path, monkeypatch):
    target = write_checkpoint(tmp_path / "latest.pt", {**PAYLOAD, "global_step": 1})

    def fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError) as failure:
        write_checkpoint(target, {**PAYLOAD, "global_step": 2}, held_step=1)
    monkeypatch.undo()
    error = failure.value
    assert (error.errno, error.previous_intact, error.previous_step) == (28, True, 1)
    assert str(error) == (
        f"could not write checkpoint {target}: No space left on device; the previous latest.pt "
        f"is intact (it holds global step 1)"
    )
    assert load_checkpoint(target)["global_step"] == 1
    assert sorted(tmp_path.iterdir()) == [target]  # the temporary file is gone


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
