"""What every policy method gets: the model, its settings, the weighted training data, and helpers to
tokenise, sample, score and run the shared optimisation loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..reward.data import RewardData
from ..training import Objective, Trainer, step_plan
from .model import PolicyModel, encode_completions, encode_prompts


@dataclass
class MethodRun:
    policy: PolicyModel
    section: Any  # PolicySection (built from the method registry: no static type)
    data: RewardData  # the training split: thumbs (point) and A/B choices (pairs), each with a weight
    user_weight: dict = field(default_factory=dict)  # user_id -> trust (1 for everyone when unweighted)
    seed: int = 0
    progress: bool | None = None
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    @property
    def config(self):
        return self.section.method_config()

    def prompts(self, contexts) -> list[list[int]]:
        return encode_prompts(self.policy.tokenizer, contexts, self.section.max_prompt_length)

    def completions(self, responses) -> list[list[int]]:
        return encode_completions(self.policy.tokenizer, responses, self.section.max_completion_length)

    def context_weight(self, user_ids) -> np.ndarray:
        """Weight of a context generated for: the trust of the user whose conversation it is."""
        return np.array([self.user_weight.get(u, 1.0) for u in user_ids], np.float64)

    def limit(self, n: int) -> np.ndarray:
        """Indices of the items to train on: all, or a random ``train.max_items`` of them."""
        cap = self.section.train.max_items
        if cap is None or n <= cap:
            return np.arange(n)
        return np.sort(self.rng.choice(n, cap, replace=False))

    @torch.no_grad()
    def logps(self, prompts, completions, *, reference: bool, batch_size: int | None = None) -> torch.Tensor:
        """Summed completion log-probs of every (prompt, completion), in batches of similar length, no larger than
        training's (``train.batch_size``): memory peaks in training, not in this pass before it."""
        batch_size = batch_size or self.section.train.batch_size
        out = torch.zeros(len(prompts))
        order = np.argsort([len(p) + len(c) for p, c in zip(prompts, completions)], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            out[rows] = self.policy.sequence_logps([prompts[i] for i in rows], [completions[i] for i in rows],
                                                   reference=reference).float().cpu()
        return out

    def sample(self, contexts, n: int, desc: str) -> list[list[str]]:
        """``n`` replies per context from the current policy, batched across contexts and samples."""
        s = self.section.eval.sampling
        prompts = self.prompts(contexts)
        flat = [p for p in prompts for _ in range(n)]
        texts: list[str] = []
        with tqdm(total=len(flat), desc=desc, unit="reply", disable=self._quiet()) as bar:
            for start in range(0, len(flat), s.batch_size):
                chunk = flat[start: start + s.batch_size]
                texts += self.policy.generate(chunk, temperature=s.temperature, top_p=s.top_p,
                                              max_new_tokens=s.max_new_tokens, seed=self.seed + start).texts
                bar.update(len(chunk))
        return [texts[i * n: (i + 1) * n] for i in range(len(prompts))]

    def plan(self, lengths) -> list[np.ndarray]:
        """The steps over items of these ``lengths`` (``train.batch_size``, ``epochs``, ``group_by_length``)."""
        t = self.section.train
        return step_plan(lengths, t.batch_size, t.epochs, t.group_by_length, self.rng)

    def trainer(self, steps: int) -> Trainer:
        """The optimizer and schedule of a method's whole training, ``steps`` optimizer steps long (an upper
        bound for an online method: its rounds share one optimizer state and one warm-up and decay)."""
        return Trainer(self.policy.trainable_parameters(), self.section.train, steps, model=self.policy.peft)

    def fit(self, lengths, objective: Objective, desc: str, trainer: Trainer | None = None) -> list[dict]:
        """The shared loop over the method's items (``lengths`` per item) with a progress bar; ``trainer``
        carries the optimizer from an earlier round (a fresh one when None)."""
        t = self.section.train
        plan = self.plan(lengths)
        if trainer is None:
            trainer = self.trainer(len(plan))
        torch.manual_seed(self.seed)
        if t.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA), no input-grad hook
            self.policy.peft.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.policy.peft.train()
        with tqdm(total=sum(len(s) for s in plan), desc=desc, unit="ex", disable=self._quiet()) as bar:
            def advance(n, loss):
                bar.update(n)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

            history = trainer.fit(plan, objective, advance)
        self.policy.peft.eval()
        return history

    def online_trainer(self, steps: int) -> Trainer | None:
        """One trainer for all the rounds of an online method (``steps``: an upper bound of their optimizer
        steps), or None with ``train.keep_optimizer: false`` (then each round's ``fit`` starts afresh)."""
        return self.trainer(steps) if self.section.train.keep_optimizer else None

    def _quiet(self):
        return None if self.progress is None else not self.progress


def weights_tensor(values, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, np.float64), dtype=torch.float32, device=device)


def completion_tokens(prompt: list[int], completion: list[int]) -> int:
    """How many of ``completion``'s tokens a loss sees: each is predicted from the token before it, so all of
    them after a non-empty prompt (the denominators of token means over a step)."""
    return len(completion) if prompt else max(0, len(completion) - 1)
