"""Read back what W&B wrote offline (the ``run-*.wandb`` transaction log), without a mock.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks
of records, each ``crc32 (4) | length (2, little endian) | type (1) | data``, where type 1 is a
whole record and 2/3/4 the first/middle/last fragment. Each record is a ``wandb.proto`` Record.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = HEADER, b""
    while position + 7 <= len(data):
        space = BLOCK - position % BLOCK
        if space < 7:  # block trailer padding
            position += space
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: Path) -> dict:
    """``{"id", "config", "history", "artifacts"}`` of the one offline run in run_dir."""
    (run,) = read_offline_runs(run_dir)
    return run


def read_offline_runs(run_dir: Path, timeout: float = 30.0) -> list[dict]:
    """Every offline run in run_dir, oldest first (a resumed run adds one with the same id).

    ``wandb.finish()`` can return before W&B's service process has written the whole log, so
    each log is read again until it holds the run's ``exit`` record.
    """
    logs = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    return [_read_finished_log(log, timeout) for log in logs]


def _read_finished_log(log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = _read_log(log)
            if run["exited"]:
                return run
        except (DecodeError, AssertionError):  # a record or the header being written
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{log}: W&B never wrote the run's exit record")
        time.sleep(0.1)


def _read_log(log: Path) -> dict:
    run_id, config, history, artifacts, exited = None, {}, [], [], False
    for blob in _records(log):
        record = pb.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            for item in updates:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            items = record.history.item
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in items
                }
            )
        elif kind == "exit":
            exited = True
        elif kind == "artifact":
            artifacts.append(
                {
                    "name": record.artifact.name,
                    "type": record.artifact.type,
                    "aliases": list(record.artifact.aliases),
                }
            )
    return {
        "id": run_id,
        "config": config,
        "history": history,
        "artifacts": artifacts,
        "exited": exited,
    }
