"""rlhf_organic: reinforcement learning from organic human feedback, learning from helpers, not trolls."""

__version__ = "0.1.0"
