"""Policies: encoders, recurrent cores and heads assembled from the env's spaces."""

from recurrl.policy.actor_critic import ActorCritic, SequenceOutput, StepOutput

__all__ = ["ActorCritic", "SequenceOutput", "StepOutput"]
