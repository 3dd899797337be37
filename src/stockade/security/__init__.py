"""The security battery: an attack corpus run inside every tier, faults, load, and a report."""

from .corpus import Attack, load_corpus
from .runner import TIERS, AttackResult, run_tier

__all__ = ["TIERS", "Attack", "AttackResult", "load_corpus", "run_tier"]
