"""The chat server's log writers: what they write ingests unchanged, with exact counts, and survives a crash."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.serve.chat import UI_REASONS, Candidate, ChatStore
from rlhf_organic.serve.limits import InputRejected, Limits
from rlhf_organic.serve.log import AppendLog, ChatLog, LogError

from conftest import read

SERVED = {"adapter": "policy", "policy": "p1"}


def _ingest(tmp_path, log_folder):
    out = tmp_path / "dataset"
    result = CliRunner().invoke(main, ["ingest", str(log_folder / "data"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "summary.json").read_text())


def test_conversations_and_choices_ingest_with_exact_counts(tmp_path):
    log = ChatLog(tmp_path / "log")
    store = ChatStore(log)
    helper = store.new_chat("a" * 32)
    store.add_human(helper, "hello, what is a good book?")
    r1 = store.add_bot(helper, Candidate("1" * 32, "Try Middlemarch.", SERVED))
    store.thumbs(helper, r1["bot_message_id"], "up")
    store.add_human(helper, "why that one?")
    r2 = store.add_bot(helper, Candidate("2" * 32, "banana banana", SERVED))
    store.reason(helper, r2["bot_message_id"], "nonsensical")
    store.explain(helper, r2["bot_message_id"], "it did not answer <script>alert(1)</script>")
    store.add_human(helper, "compare two")
    ab = store.add_ab(helper, [Candidate("3" * 32, "reply A", SERVED), Candidate("4" * 32, "reply B", {"adapter": "base"})])
    chosen = store.choose(helper, ab, "b")
    assert chosen["text"] == "reply B"

    troll = store.new_chat("b" * 32)
    store.add_human(troll, "you are stupid")  # flagged by the string matcher
    r3 = store.add_bot(troll, Candidate("5" * 32, "I am sorry to hear that.", SERVED))
    store.thumbs(troll, r3["bot_message_id"], "down")
    log.close()

    dataset, summary = _ingest(tmp_path, tmp_path / "log")
    assert summary["conversations"] == 2
    assert summary["examples"] == 4  # one per bot message
    assert (summary["thumbs_up"], summary["thumbs_down"], summary["preferences"]) == (1, 2, 1)
    assert summary["unsafe_user_messages"] == 1
    assert summary["rejected"] == 0
    examples = read(dataset, "examples").to_pylist()
    reasons = {e["message_id"]: e["dislike_reason"] for e in examples}
    assert reasons["2" * 32] == "nonsensical"
    prefs = read(dataset, "preferences").to_pylist()
    assert prefs[0]["chosen"] == "reply B" and prefs[0]["rejected"] == "reply A" and prefs[0]["user_id"] == "a" * 32
    assert [m["content"] for m in prefs[0]["context"]][-1] == "compare two"
    # the typed explanation is kept as the message the user wrote, markup and all (the page escapes it)
    messages = read(dataset, "messages").to_pylist()
    assert any(m["text"] == "it did not answer <script>alert(1)</script>" and m["is_dislike_feedback"] for m in messages)
    served = [json.loads(line) for line in (tmp_path / "log" / "run" / "served.jsonl").read_text().splitlines()]
    assert {s["message_id"] for s in served} == {"1" * 32, "2" * 32, "3" * 32, "4" * 32, "5" * 32}


def test_feedback_is_validated(tmp_path):
    store = ChatStore(ChatLog(tmp_path / "log"), Limits(max_message_chars=10, max_turns=4))
    chat = store.new_chat("a" * 32)
    with pytest.raises(InputRejected, match="limit is 10"):
        store.add_human(chat, "x" * 11)
    with pytest.raises(InputRejected, match="empty"):
        store.add_human(chat, "\x00\x01  ")
    assert store.add_human(chat, "hi\x00\u202e")["text"] == "hi\u202e"  # NUL removed, other text kept
    reply = store.add_bot(chat, Candidate("1" * 32, "hello", SERVED))
    with pytest.raises(InputRejected, match="reason must be one of"):
        store.reason(chat, reply["bot_message_id"], "../../etc/passwd")
    with pytest.raises(InputRejected, match="no such reply"):
        store.thumbs(chat, "9" * 32, "up")
    with pytest.raises(InputRejected, match="no such conversation"):
        store.get(chat.chat_id, "b" * 32)  # another user's conversation is not theirs to touch
    with pytest.raises(InputRejected, match="not a conversation id"):
        store.get("../x", "a" * 32)
    store.add_human(chat, "again")
    with pytest.raises(InputRejected, match="reached 4 messages"):
        store.add_human(chat, "and again")
    assert set(UI_REASONS) == {"off_topic", "nonsensical", "rude_inappropriate", "looks_like_spam", "other"}


def test_chat_ids_cannot_name_paths(tmp_path):
    log = ChatLog(tmp_path / "log")
    for bad in ("../../evil", "/etc/passwd", "a" * 31 + "/", "A" * 32):
        with pytest.raises(LogError):
            log.save_conversation({"chat_id": bad, "user_pseudo_id": "u", "message_history": []})
    assert not list((tmp_path / "log" / "data" / "chats").iterdir())


def test_append_log_cuts_a_crashed_partial_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "cut off mid-wr')  # a crash during the second append
    log = AppendLog(path)
    assert log.dropped_tail == len(b'{"a": 2, "cut off mid-wr')
    log.append({"a": 3})
    log.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"a": 3}]
