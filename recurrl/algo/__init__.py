"""The algorithm: building and guarding envs, collecting rollouts, GAE, the PPO update, evaluation.

Imports ``recurrl.config``, ``recurrl.errors``, ``recurrl.nn`` and ``recurrl.policy`` only.
"""
