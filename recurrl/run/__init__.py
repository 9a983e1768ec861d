"""Running a training job; imports ``recurrl.algo`` and below, never ``recurrl.app``.

- ``train``: the trainer's loop (collect, advantages, update, evaluate, log, checkpoint);
- ``checkpoints``: checkpoint files (format, atomic and durable write, safe load) and a run's
  ``checkpoints/`` folder;
- ``resume``: continuing a stopped run (its training state, the overrides, the restore);
- ``failures``: when training stops early (rollback, graceful stop, what the message says);
- ``run_dir``: the run folder and its ``metrics.jsonl``;
- ``callbacks``: the hooks the trainer calls; ``tracking``, ``progress``: the callbacks where
  metrics go (JSONL, W&B, TensorBoard, the console);
- ``periodic_eval``: evaluation during training;
- ``agent``: ``recurrl.PPO``, the object API (``recurrl train`` goes through it).
"""
