"""Evaluation that no training reads: the clean judge (``judge.py``: a reward model trained on the
simulator's ground truth only, never on user feedback) and the policy's evaluation on held-out contexts
(``policy.py``: base vs tuned replies, scored by the reward model and the judge, KL to the reference).
Nothing that trains imports this package: the policy stage calls it once training is done, and the
report reads its samples (``tests/test_layering.py`` holds the rule)."""
