"""Reply generation for the chat server: one model in memory, one generation at a time, streamed.

``Replier`` holds a causal LM (a plain base, or a base with a policy adapter from ``policy train``)
and streams a reply token by token: ``model.generate`` runs in one worker thread and hands text to an
``AsyncTextIteratorStreamer``, so neither the server's event loop nor its thread pool (which the log
writes use) waits on the model: fifty readers waiting for their turn hold no thread. One lock orders the
generations: one model on one device gains nothing from running two at once, and a swap of the adapter
(``swap``) must not happen in the middle of a reply.

Which weights wrote a reply is returned with it (``served_by``): ``adapter`` is ``"policy"`` (the
adapter named by ``policy``, loaded at start or swapped in later, ``version`` counting swaps) or
``"base"`` (the same model with the adapter disabled, as the LoRA reference is run elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

POLICY_META = "policy.json"  # policy.stage.META_FILE, without importing the training stage


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    max_prompt_tokens: int = 1024  # the oldest turns are cut first (sequences.cut_left)
    # torch's CPU threads for generation (None: torch's default, one per core). On a CPU shared with other
    # work, 1 can be much faster: SmolLM2, 8 tokens on 2 busy cores, 0.6 s with 1 thread, 9 s with 2
    # (measured; the threads wait for each other at every operation when one is descheduled). torch's count
    # is process-wide: it applies to whatever else the process runs.
    cpu_threads: int | None = None


class _Cancelled:
    """A stopping criterion that ends a generation whose reader went away, or every one when the server stops."""

    def __init__(self, closing: threading.Event) -> None:
        self.event, self.closing = threading.Event(), closing

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = self.event.is_set() or self.closing.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class Replier:
    def __init__(self, model, tokenizer, *, base: str, policy: str | None, sampling: Sampling, log=print):
        self.model, self.tokenizer = model, tokenizer
        self.base, self.policy, self.sampling = base, policy, sampling
        self.version = 0  # adapters swapped in since start
        self.log = log
        self._lock = threading.Lock()
        self._closing = threading.Event()
        # One long-lived thread runs every generation, with the CPU thread count set once for it.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlhf-organic-generate",
                                          initializer=self._set_threads)

    def _set_threads(self) -> None:
        if self.sampling.cpu_threads is not None:
            import torch

            torch.set_num_threads(self.sampling.cpu_threads)

    def close(self) -> None:
        """End the generations under way at their next token (the server is stopping)."""
        self._closing.set()
        self._worker.shutdown(wait=False, cancel_futures=True)

    @property
    def has_policy(self) -> bool:
        return self.policy is not None

    def served_by(self, adapter: str) -> dict:
        s = self.sampling
        return {"adapter": adapter, "policy": self.policy if adapter == "policy" else None, "version": self.version,
                "base": self.base, "temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens}

    async def stream(self, context: list[dict], *, adapter: str = "policy") -> AsyncIterator[str]:
        """Yield the reply to ``context`` (``{"role", "content"}`` turns) piece by piece (call from the event loop).

        ``adapter``: ``"policy"``, or ``"base"`` for the base with the policy adapter disabled."""
        from transformers import AsyncTextIteratorStreamer

        from ..policy.model import encode_prompts

        if adapter == "base" and not self.has_policy:
            raise UserError("no policy adapter is loaded: the base is all there is to sample")
        s = self.sampling
        prompt = encode_prompts(self.tokenizer, [context], s.max_prompt_tokens)[0]
        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = _Cancelled(self._closing)
        failure: list[BaseException] = []

        def run() -> None:
            import torch
            from transformers import StoppingCriteriaList

            try:
                with self._lock, torch.no_grad():
                    if self._closing.is_set():  # the server stopped while this one waited its turn
                        streamer.end()
                        return
                    device = next(self.model.parameters()).device
                    ids = torch.tensor([prompt], device=device)
                    kwargs = dict(max_new_tokens=s.max_new_tokens, min_new_tokens=1, streamer=streamer,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                                  stopping_criteria=StoppingCriteriaList([cancel]))
                    if s.temperature > 0:
                        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
                    else:
                        kwargs.update(do_sample=False)
                    if adapter == "base":
                        with self.model.disable_adapter():
                            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
                    else:
                        self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            except BaseException as exc:  # handed to the reader, which raises it
                failure.append(exc)
                streamer.end()

        worker = self._worker.submit(run)
        try:
            async for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancel.event.set()  # the reader stopped early (client gone): end the generation too
        await asyncio.wrap_future(worker)  # it has ended the stream: only its last steps remain
        if failure:
            raise failure[0]

    def swap(self, policy_folder: str | Path) -> int:
        """Put the adapter of ``policy_folder`` in place of the current one, between two replies.

        The new adapter is loaded beside the old one first (no reply waits for the disk), then made the
        active one under the generation lock; conversations and their history are untouched. Returns the
        new version number."""
        from peft import PeftModel

        folder = Path(policy_folder)
        meta = _policy_meta(folder)
        if not _same_base(meta["base"], folder, self.base):
            raise UserError(f"{folder} was trained on {meta['base']}, not on the served base {self.base}: "
                            "an adapter only fits the base it was trained on")
        name = f"v{self.version + 1}"
        with self._lock:
            if isinstance(self.model, PeftModel):
                old = self.model.active_adapter
                self.model.load_adapter(str(folder / "adapter"), adapter_name=name)
                self.model.set_adapter(name)
                self.model.delete_adapter(old)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder / "adapter"), adapter_name=name).eval()
            self.version += 1
            self.policy = str(folder)
        self.log(f"[serve] swapped in the adapter of {folder} (version {self.version})")
        return self.version


def _policy_meta(folder: Path) -> dict:
    path = folder / POLICY_META
    if not path.is_file():
        raise UserError(f"{folder} is not a policy folder (no {POLICY_META}; `rlhf-organic policy train` writes one)")
    return json.loads(path.read_text())


def _same_base(recorded: str, folder: Path, served: str) -> bool:
    if recorded == "base":  # the policy carries its own (tiny) base
        recorded = str(folder / "base")
    a, b = Path(recorded).expanduser(), Path(served).expanduser()
    if a.exists() and b.exists():
        return a.resolve() == b.resolve()
    return recorded == served


def load_replier(policy_or_base: str, sampling: Sampling, *, trust_remote_code: bool = False, log=print) -> Replier:
    """A ``Replier`` for a policy folder (base + adapter) or a base model (hub id or folder)."""
    from ..models.loading import load_base, load_tokenizer
    from ..policy.model import ensure_chat_template

    folder = Path(policy_or_base)
    if (folder / POLICY_META).is_file():
        from ..models.folder import saved_base
        from ..policy.stage import load_policy

        meta = _policy_meta(folder)
        model, tokenizer = load_policy(folder, trust_remote_code=trust_remote_code)
        base = saved_base(meta["base"], folder, "base", POLICY_META)
        policy: str | None = str(folder)
    else:
        tokenizer = load_tokenizer(policy_or_base, trust_remote_code=trust_remote_code)
        model = load_base(policy_or_base, causal_lm=True, trust_remote_code=trust_remote_code, log=log).eval()
        base, policy = policy_or_base, None
    ensure_chat_template(tokenizer, log)
    return Replier(model.eval(), tokenizer, base=base, policy=policy, sampling=sampling, log=log)


__all__ = ["Replier", "Sampling", "load_replier"]
