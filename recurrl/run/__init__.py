"""Running a training job: the trainer, its run folder, checkpoints and resume, tracking sinks.

Imports ``recurrl.algo`` and below, never ``recurrl.app``.
"""
