"""The policy on one shared base: a causal LM with a LoRA adapter ("default"), the reference as the same
base with the adapter switched off, and optionally the reward model as a second adapter ("reward") +
its score head on that same base.

Sequences are always built unpadded (prompt ids + completion ids) and right-padded for a forward pass
(``sequences.batch_sequences``), so positions are the same in training, reference and evaluation passes.
Generation pads prompts on the left (``sequences.pad_left``: a decoder continues from the last position).
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.loading import BaseModelError, compute_autocast, load_base, load_tokenizer
from ..models.tiny import CHAT_TEMPLATE
from ..sequences import batch_sequences, cut_left, pad_left, pad_right, prompt_text

POLICY = "default"  # PEFT's name for the first adapter
REWARD = "reward"


# ---- text and token ids -------------------------------------------------------------------------


def ensure_chat_template(tokenizer, log=print) -> None:
    """Give a tokenizer without a chat template the role-tagged default, with a warning."""
    if not tokenizer.chat_template:
        log("[policy] warning: the base's tokenizer has no chat template; using a role-tagged default "
            "(<|user|>...). Fine-tuning teaches it, but a base trained on another format will start weaker")
        tokenizer.chat_template = CHAT_TEMPLATE


def encode_prompts(tokenizer, contexts, max_length: int) -> list[list[int]]:
    """Prompt ids per context, cut from the left (the latest turns matter most) but keeping the first token
    (``sequences.cut_left``: a prompt must not start mid-dialogue)."""
    ids = tokenizer([prompt_text(tokenizer, c) for c in contexts], add_special_tokens=False)["input_ids"]
    return [cut_left(p, max_length) for p in ids]


def encode_completions(tokenizer, responses, max_length: int) -> list[list[int]]:
    """Reply ids + EOS, cut from the right (a reply is judged from its start)."""
    ids = tokenizer([str(r) for r in responses], add_special_tokens=False)["input_ids"]
    return [(c + [tokenizer.eos_token_id])[:max_length] for c in ids]


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, seq-1] log-probability of each next token (logits at t predict token t+1)."""
    logits = logits[:, :-1].float()
    picked = logits.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[batch] sum of the completion tokens' log-probabilities (from the whole sequence's logits)."""
    return (token_logps(logits, input_ids) * completion_mask[:, 1:]).sum(-1)


CHUNK_ELEMENTS = 1 << 25  # float32 logits converted at once by selective_logps (128 MB)


def selective_logps(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` at ``targets``, for logits [batch, steps, vocab] -> [batch, steps].

    In float32, a slice of rows at a time, so there is never a float32 copy of all the logits; under
    autograd each slice is recomputed in backward rather than kept (its float32 copy and softmax would
    otherwise stay alive until backward: 8 sequences of 500 tokens over a 49k vocabulary is 0.8 GB each).
    """
    def part(chunk: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        chunk = chunk.float() / temperature if temperature != 1.0 else chunk.float()
        return chunk.gather(-1, picked.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(chunk, dim=-1)

    rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[1] * logits.shape[2]))
    recompute = torch.is_grad_enabled() and logits.requires_grad
    pieces = []
    for start in range(0, logits.shape[0], rows):
        args = (logits[start: start + rows], targets[start: start + rows])
        pieces.append(torch.utils.checkpoint.checkpoint(part, *args, use_reentrant=False) if recompute else part(*args))
    return torch.cat(pieces) if pieces else logits.new_zeros(targets.shape, dtype=torch.float32)


def completion_window(completion_mask: torch.Tensor) -> tuple[int, int]:
    """(first, last + 1): the logit columns that predict some row's completion token (column t predicts
    token t + 1). Only these columns' logits are computed: not the prompts', often half of a batch."""
    columns = completion_mask[:, 1:].any(0).nonzero()
    if len(columns) == 0:
        return 0, 1
    return int(columns[0]), int(columns[-1]) + 1


# ---- the model ---------------------------------------------------------------------------------


@dataclass
class Generation:
    completions: list[list[int]]  # token ids, ending with EOS when the model stopped by itself
    texts: list[str]


class PolicyModel:
    """A PEFT causal LM (policy adapter) with its tokenizer; reference and reward on the same base."""

    def __init__(self, peft_model, tokenizer, base: str):
        self.peft, self.tokenizer, self.base = peft_model, tokenizer, base
        self.reward_head: torch.nn.Linear | None = None
        self.reward_meta: dict | None = None
        self.precision = "auto"  # train.precision (models.loading.compute_autocast)
        self._separate_reward = None  # (model, tokenizer, meta) when the reward model has its own base
        self.value_head: torch.nn.Linear | None = None  # PPO's critic, on the policy's hidden states

    @property
    def device(self):
        return next(self.peft.parameters()).device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        extra = list(self.value_head.parameters()) if self.value_head is not None else []
        return [p for p in self.peft.parameters() if p.requires_grad] + extra

    def logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with compute_autocast(self.peft, self.precision):
            return self.peft(input_ids=ids, attention_mask=mask, use_cache=False).logits

    def completion_logits(self, ids: torch.Tensor, mask: torch.Tensor, completion: torch.Tensor, *,
                          hidden_states: bool = False):
        """The logits over the columns that predict completion tokens (``completion_window``), through the
        model's own forward (``logits_to_keep``: the LM head runs on those columns only).

        Returns (logits [batch, K, vocab], targets [batch, K], token mask [batch, K] (bool), first column,
        last hidden state over the same K columns or None)."""
        first, stop = completion_window(completion)
        kwargs = {"output_hidden_states": True} if hidden_states else {}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = torch.arange(first, stop, device=ids.device)
        with compute_autocast(self.peft, self.precision):
            out = self.peft(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs)
        logits = out.logits if self._keeps_logits else out.logits[:, first:stop]
        hidden = out.hidden_states[-1][:, first:stop] if hidden_states else None
        return logits, ids[:, first + 1: stop + 1], completion[:, first + 1: stop + 1].bool(), first, hidden

    @property
    def _keeps_logits(self) -> bool:
        """Whether the base's forward takes ``logits_to_keep`` (Llama, Qwen, Mistral, Gemma and most others do)."""
        import inspect

        if not hasattr(self, "_keeps_logits_cached"):
            forward = self.peft.get_base_model().forward
            self._keeps_logits_cached = "logits_to_keep" in inspect.signature(forward).parameters
        return self._keeps_logits_cached

    def completion_token_logps(self, ids: torch.Tensor, mask: torch.Tensor, completion: torch.Tensor,
                               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [batch, K], token mask [batch, K]) of the completion tokens, 0 outside the mask."""
        logits, targets, tokens, _, _ = self.completion_logits(ids, mask, completion)
        logps = selective_logps(logits, targets, temperature)
        return torch.where(tokens, logps, torch.zeros_like(logps)), tokens

    @contextmanager
    def reference(self):
        """The base with the policy adapter switched off (no gradient)."""
        with torch.no_grad(), self.peft.disable_adapter():
            yield self

    def sequence_logps(self, prompts, completions, *, reference: bool = False) -> torch.Tensor:
        """Summed completion log-probs of each (prompt, completion); the reference's without gradient."""
        ids, mask, comp = batch_sequences(prompts, completions, self.pad_id, self.device)
        with self.reference() if reference else nullcontext():
            return self.completion_token_logps(ids, mask, comp)[0].sum(-1)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, temperature: float, top_p: float, max_new_tokens: int,
                 n: int = 1, reference: bool = False, seed: int | None = None, reuse_prompt_cache: bool = True) -> Generation:
        """Sample ``n`` replies per prompt in one left-padded batch; prompt i's replies come at i*n .. i*n+n-1.
        ``reference`` samples from the base. With ``n`` > 1 the prompts are run through the model once and
        their key/value cache copied ``n`` times (``reuse_prompt_cache``), instead of ``n`` prefills."""
        eos = self.tokenizer.eos_token_id
        ids, mask = pad_left(prompts, self.pad_id, self.device)
        width = ids.shape[1]
        if seed is not None:
            torch.manual_seed(seed)
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=self.pad_id, eos_token_id=eos)
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else kwargs.update(do_sample=False)
        was_training = self.peft.training
        self.peft.eval()
        try:
            with warnings.catch_warnings(), ExitStack() as stack:
                warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
                if reference:
                    stack.enter_context(self.peft.disable_adapter())
                if n > 1:
                    if reuse_prompt_cache and width > 1:
                        kwargs["cache"] = self._prompt_cache(ids, mask, n)
                    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
                out = self.peft.generate(input_ids=ids, attention_mask=mask, **kwargs)
        finally:
            self.peft.train(was_training)
        completions = []
        for row in out[:, width:].tolist():
            completions.append(row[: row.index(eos) + 1] if eos in row else row)
        texts = self.tokenizer.batch_decode([[t for t in c if t != eos] for c in completions], skip_special_tokens=True)
        return Generation(completions, [t.strip() for t in texts])

    def _prompt_cache(self, ids: torch.Tensor, mask: torch.Tensor, n: int):
        """The key/value cache of every prompt but its last token, repeated ``n`` times along the batch;
        ``generate`` then only runs that last token. Positions follow the left padding, as in ``generate``."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self.peft(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                          use_cache=True).cache
        cache.batch_repeat_interleave(n)
        return cache

    # ---- PPO: per-token log-probs and values --------------------------------------------------

    def add_value_head(self) -> torch.nn.Linear:
        """A scalar value head on the policy's last hidden state (trainable; starts at 0)."""
        hidden = self.peft.get_base_model().config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        return self.value_head

    def token_stats(self, prompts, completions, *, values: bool = False, reference: bool = False, temperature: float = 1.0):
        """Per completion token: (log-probs [batch, steps], values [batch, steps] or None, mask [batch, steps]).

        Step t is the t-th completion token; its log-prob and the value of the state before it are read at
        the position that predicts it. Sequences are right-padded, prompt + completion unpadded within.
        ``temperature`` divides the logits first: the log-probs of the distribution the replies were sampled from.
        """
        ids, mask, comp = batch_sequences(prompts, completions, self.pad_id, self.device)
        steps = max(len(c) for c in completions)
        lengths = torch.tensor([len(c) for c in completions], device=self.device)
        step_mask = (torch.arange(steps, device=self.device)[None] < lengths[:, None]).long()
        with self.reference() if reference else nullcontext():
            logits, targets, _, first, state = self.completion_logits(ids, mask, comp, hidden_states=values)
        # column of step t in the window: the prompt's last position + t, less the window's first column
        starts = torch.tensor([len(p) - 1 - first for p in prompts], device=self.device)
        index = (starts[:, None] + torch.arange(steps, device=self.device)[None]).clamp(0, logits.shape[1] - 1)
        logps = selective_logps(logits, targets, temperature).gather(1, index) * step_mask
        if not values:
            return logps, None, step_mask
        v = self.value_head(state.to(self.value_head.weight.dtype)).squeeze(-1).gather(1, index) * step_mask
        return logps, v.float(), step_mask

    # ---- the reward model on the same base ------------------------------------------------------

    @contextmanager
    def _adapter(self, name: str):
        """Switch the active adapter; PEFT's set_adapter also flips requires_grad, so restore it after."""
        flags = {p: p.requires_grad for p in self.peft.parameters()}
        self.peft.base_model.set_adapter(name)
        try:
            yield
        finally:
            self.peft.base_model.set_adapter(POLICY)
            for p, flag in flags.items():
                p.requires_grad_(flag)

    @property
    def has_reward(self) -> bool:
        return self.reward_head is not None or self._separate_reward is not None

    @property
    def shares_reward_base(self) -> bool:
        return self.reward_head is not None

    @torch.no_grad()
    def reward_scores(self, contexts, responses, batch_size: int = 64) -> np.ndarray:
        """The reward model's score of each (context, response)."""
        from ..reward.model import encode, pool

        if self._separate_reward is not None:
            from ..reward.train import score

            model, tokenizer, meta = self._separate_reward
            return score(model, encode(tokenizer, contexts, responses, meta["max_length"]), tokenizer.pad_token_id, batch_size)[0]
        if self.reward_head is None:
            raise RuntimeError("no reward model attached")
        sequences = encode(self.tokenizer, contexts, responses, self.reward_meta["max_length"])
        backbone = _backbone(self.peft)
        scores = np.zeros(len(sequences), np.float32)
        was_training = self.peft.training
        self.peft.eval()
        try:
            with self._adapter(REWARD):
                for start in range(0, len(sequences), batch_size):
                    ids, mask = pad_right(sequences[start: start + batch_size], self.pad_id, self.device)
                    with compute_autocast(self.peft, self.reward_meta.get("precision", "auto")):  # as the reward model was trained
                        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                    out = self.reward_head(pool(hidden, mask, self.reward_meta["pooling"]).to(self.reward_head.weight.dtype))
                    scores[start: start + len(ids)] = out[:, 0].float().cpu().numpy()
        finally:
            self.peft.train(was_training)
        return scores


def _backbone(peft_model):
    """The transformer body (no LM head) of a PEFT causal LM, with the LoRA layers injected."""
    lm = peft_model.get_base_model()
    return getattr(lm, lm.base_model_prefix)


def lora_config(settings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=settings.target_modules, task_type="CAUSAL_LM")


def build_policy(base: str, lora, *, dtype: str = "float32", quantization: str = "none", seed: int = 0,
                 adapter: str | Path | None = None, trust_remote_code: bool = False, hub_kernels: str = "auto",
                 attention: str = "auto", log=print) -> PolicyModel:
    """Load ``base`` once and put a fresh LoRA adapter on it (or load ``adapter``, trainable).
    ``trust_remote_code`` (default False) lets a base run the code that ships with it."""
    from peft import PeftModel, get_peft_model

    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    ensure_chat_template(tokenizer, log)
    lm = load_base(base, causal_lm=True, dtype=dtype, quantization=quantization, trust_remote_code=trust_remote_code,
                   hub_kernels=hub_kernels, attention=attention, log=log)
    torch.manual_seed(seed)
    if adapter is not None:
        peft_model = PeftModel.from_pretrained(lm, adapter, is_trainable=True)
    else:
        peft_model = get_peft_model(lm, lora_config(lora))
    return PolicyModel(peft_model, tokenizer, base)


def attach_reward(policy: PolicyModel, reward_dir: str | Path, *, share_base: bool = True,
                  trust_remote_code: bool = False, log=print) -> str:
    """Attach the reward model in ``reward_dir``: as a second adapter + head on the policy's own base when
    the reward model was trained on the same base (and ``share_base``), else loaded beside it (with
    ``trust_remote_code``, the caller's decision). Returns "shared" or "separate"."""
    from ..reward.model import check_reward_files, load_reward_model, read_reward_meta

    reward_dir = Path(reward_dir)
    meta = read_reward_meta(reward_dir)
    check_reward_files(reward_dir, meta)  # every file in place, before any is read
    same = meta["base"] != "tiny" and _same_base(meta["base"], policy.base)
    if share_base and same:
        _load_shared_reward(policy, reward_dir, meta)
        return "shared"
    why = "it was trained on another base" if not same else "reward_model.share_base is false"
    log(f"[policy] reward model loaded with its own copy of its base ({meta['base']}): {why}")
    policy._separate_reward = load_reward_model(reward_dir, trust_remote_code=trust_remote_code)
    return "separate"


def _same_base(a: str, b: str) -> bool:
    pa_, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa_.exists() and pb.exists():
        return pa_.resolve() == pb.resolve()
    return a == b


def _load_shared_reward(policy: PolicyModel, reward_dir: Path, meta: dict) -> None:
    """Add the reward adapter to the policy's PEFT model and load its weights and head.

    The reward adapter was saved from a bare backbone (``AutoModel``), whose module paths lack the causal
    LM's body prefix (``layers.0...`` versus ``model.layers.0...``): the keys are moved under it.
    """
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..models.folder import reading
    from ..reward.model import load_head

    with reading(reward_dir / "adapter" / "adapter_config.json", "a LoRA adapter's configuration"):
        config = LoraConfig.from_pretrained(reward_dir / "adapter")
    config.inference_mode = True
    policy.peft.add_adapter(REWARD, config)
    prefix = policy.peft.get_base_model().base_model_prefix
    state = {}
    with reading(reward_dir / "adapter" / "adapter_model.safetensors", "the LoRA adapter"):
        weights = load_file(reward_dir / "adapter" / "adapter_model.safetensors")
    for key, value in weights.items():
        inner = key.removeprefix("base_model.model.")
        state[f"base_model.model.{prefix}.{inner}"] = value
    result = set_peft_model_state_dict(policy.peft, state, adapter_name=REWARD)
    missing = [k for k in result.missing_keys if f".{REWARD}." in k or k.endswith(f".{REWARD}")]
    if missing or result.unexpected_keys:
        raise BaseModelError(f"{reward_dir}: the reward adapter does not fit the policy's base "
                             f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})")
    hidden = policy.peft.get_base_model().config.hidden_size
    head = load_head(reward_dir, torch.nn.Linear(hidden, 1 + len(meta["reasons"])))
    head.requires_grad_(False)
    policy.reward_head = head.to(policy.device)
    policy.reward_meta = meta
    for name, p in policy.peft.named_parameters():  # the reward adapter is frozen: only the policy trains
        if f".{REWARD}." in name:
            p.requires_grad_(False)
