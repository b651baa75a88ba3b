"""The shared sequence code (``rlhf_organic.sequences``) on small hand-checked inputs: padding on either
side, prompt + completion batches, dialogue formatting with its fallback, the held-out split."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rlhf_organic.sequences import (
    apply_chat,
    batch_sequences,
    chat_messages,
    cut_left,
    format_dialogue,
    held_out,
    pad_left,
    pad_right,
    prompt_text,
)


def test_pad_right_puts_tokens_first_and_pads_after():
    ids, mask = pad_right([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.long and ids.device.type == mask.device.type == "cpu"


def test_pad_left_pads_before_so_every_row_ends_in_the_last_column():
    ids, mask = pad_left([[5, 6, 7], [8], [9, 10]], pad_id=-1)
    assert ids.tolist() == [[5, 6, 7], [-1, -1, 8], [-1, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_a_pad_token_inside_a_sequence_stays_unmasked():
    """The mask follows the lengths, not the values: a real token equal to the pad id is attended to."""
    ids, mask = pad_right([[0, 4], [3]], pad_id=0)
    assert ids.tolist() == [[0, 4], [3, 0]] and mask.tolist() == [[1, 1], [1, 0]]
    ids, mask = pad_left([[0, 4], [3]], pad_id=0)
    assert ids.tolist() == [[0, 4], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]


def test_batch_sequences_marks_the_completion_tokens():
    ids, mask, completion = batch_sequences([[1, 2], [3]], [[4], [5, 6, 7]], pad_id=0)
    assert ids.tolist() == [[1, 2, 4, 0], [3, 5, 6, 7]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert completion.tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]
    assert ids.dtype == mask.dtype == completion.dtype == torch.long
    _, _, empty = batch_sequences([[1, 2]], [[]], pad_id=0)  # an empty completion marks nothing
    assert empty.tolist() == [[0, 0]]


def test_cut_left_keeps_the_first_token_and_the_latest_ones():
    assert cut_left([1, 2, 3, 4, 5], 3) == [1, 4, 5]
    assert cut_left([1, 2], 5) == [1, 2]
    with pytest.raises(ValueError):
        cut_left([1, 2, 3], 1)


class _Tokenizer:
    """What the formatting needs of a tokenizer: a chat template and ``apply_chat_template``; the own
    template here rejects two user turns in a row, as strict templates do."""

    def __init__(self, template):
        self.chat_template = template

    def apply_chat_template(self, messages, chat_template=None, tokenize=False, add_generation_prompt=False):
        if chat_template is None:
            roles = [m["role"] for m in messages]
            if any(a == b for a, b in zip(roles, roles[1:])):
                raise ValueError("roles must alternate")
            text = "".join(f"[{m['role']}] {m['content']}" for m in messages)
            return text + ("[assistant]" if add_generation_prompt else "")
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)  # the role-tagged default, by hand
        return text + ("<|assistant|>" if add_generation_prompt else "")


def test_dialogue_formatting_uses_the_template_and_falls_back_to_role_tags():
    own = _Tokenizer("own")
    assert chat_messages(None) == []
    assert chat_messages([{"role": "user", "content": 3}]) == [{"role": "user", "content": "3"}]
    assert format_dialogue(own, [{"role": "user", "content": "hi"}], "yo") == "[user] hi[assistant] yo"
    assert prompt_text(own, [{"role": "user", "content": "hi"}]) == "[user] hi[assistant]"
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert prompt_text(own, two_users) == "<|user|>a\n<|user|>b\n<|assistant|>"
    assert format_dialogue(_Tokenizer(None), None, "yo") == "<|assistant|>yo\n"
    assert apply_chat(_Tokenizer(None), [], add_generation_prompt=True) == "<|assistant|>"


def test_held_out_is_a_stable_seeded_split_of_ids():
    ids = pd.Series([f"c{i}" for i in range(12)])
    # pinned: the split reward, judge, tiny base and policy evaluation have always used
    assert held_out(ids, 0.3, 0).astype(int).tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert held_out(ids, 0.3, 1).astype(int).tolist() == [0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0]
    assert held_out(ids[::-1], 0.3, 0).tolist() == held_out(ids, 0.3, 0)[::-1].tolist()  # per id, not per row
    assert not held_out(ids, 0.0, 0).any() and held_out(ids, 1.0, 0).all()
    assert held_out(pd.Series([], dtype=object), 0.5, 0).shape == (0,)
