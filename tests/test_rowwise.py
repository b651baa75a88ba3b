"""The kto, preference and messages readers, valid and broken."""

import json

import pytest

from rlhf_organic.data.ingest import ingest

from conftest import read, write_lines


def _ingest(tmp_path, lines, fmt="auto"):
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "ds"
    return ingest([str(src)], out, fmt=fmt, log=lambda m: None, progress=False), out


def _rejects(out):
    return [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]


def test_kto_rows_become_one_example_each(tmp_path):
    rows = [
        {"prompt": "tell me a joke", "completion": "why did the chicken...", "label": True, "user_id": "a"},
        {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
         "completion": [{"role": "assistant", "content": "go away"}], "label": False, "user_id": 7},
    ]
    summary, out = _ingest(tmp_path, rows)
    assert (summary["examples"], summary["thumbs_up"], summary["thumbs_down"], summary["users"]) == (2, 1, 1, 2)
    ex = read(out, "examples").to_pylist()
    assert ex[0]["context"] == [{"role": "user", "content": "tell me a joke"}] and ex[0]["thumbs"] == 1
    assert ex[1]["response"] == "go away" and ex[1]["thumbs"] == -1 and ex[1]["user_id"] == "7"
    assert [m["role"] for m in ex[1]["context"]] == ["system", "user"]
    assert ex[0]["example_id"] == "in.jsonl:1:1"


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"prompt": "p", "completion": "c", "label": "yes"}, "field label: expected true/false"),
        ({"prompt": "p", "completion": "c", "label": None}, "missing field label"),
        ({"prompt": 3, "completion": "c", "label": True}, "field prompt: expected a string or a list"),
        ({"prompt": "p", "completion": [{"role": "user", "content": "c"}], "label": True}, "only assistant"),
        ({"prompt": [{"content": "x"}], "completion": "c", "label": True}, "prompt[0].role"),
        ({"prompt": "p", "completion": "c", "label": True, "user_id": [1]}, "field user_id"),
    ],
)
def test_broken_kto_rows(tmp_path, row, reason):
    good = {"prompt": "p", "completion": "c", "label": True}
    summary, out = _ingest(tmp_path, [good, row], fmt="kto")
    assert summary["conversations"] == 1 and summary["rejected"] == 1
    assert reason in _rejects(out)[0]["reason"] and _rejects(out)[0]["line"] == 2


def test_preferences_explicit_and_implicit_prompt(tmp_path):
    rows = [
        {"prompt": "which is better?", "chosen": "this one", "rejected": "that one", "user_id": "u"},
        {"prompt": [{"role": "user", "content": "hi"}],
         "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "bye"}]},
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
         "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}], "id": "p3"},
    ]
    summary, out = _ingest(tmp_path, rows)
    assert summary["preferences"] == 3 and summary["conversations"] == 0 and summary["rejected"] == 0
    prefs = read(out, "preferences").to_pylist()
    assert prefs[2]["context"] == [{"role": "user", "content": "q"}]
    assert (prefs[2]["chosen"], prefs[2]["rejected"], prefs[2]["preference_id"]) == ("good", "bad", "p3")
    assert prefs[1]["preference_id"] == "in.jsonl:2"
    fb = read(out, "feedback").to_pylist()
    assert [f["kind"] for f in fb] == ["preference"] * 3 and fb[0]["user_id"] == "u"
    assert read(out, "users").to_pylist()[0]["n_preferences"] == 1


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"prompt": "p", "chosen": "a"}, "auto-detect"),  # not recognisable as a preference row
        ({"prompt": "p", "chosen": "a", "rejected": None}, "missing field rejected"),
        ({"chosen": "a", "rejected": "b"}, "missing field prompt"),
        ({"prompt": "p", "chosen": 1, "rejected": "b"}, "field chosen"),
        ({"prompt": "p", "chosen": [], "rejected": "b"}, "field chosen"),
    ],
)
def test_broken_preference_rows(tmp_path, row, reason):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    summary, out = _ingest(tmp_path, [good, row], fmt="preference")
    assert summary["preferences"] == 1 and summary["rejected"] == 1
    if reason != "auto-detect":
        assert reason in _rejects(out)[0]["reason"]


def test_messages_format_with_feedback(tmp_path):
    row = {
        "conversation_id": "conv-1", "user_id": "u9",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "assistant", "content": "Hi! Ask me anything."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4", "feedback": {"thumbs": 1}},
            {"role": "user", "content": [{"type": "text", "text": "and 3+3?"}]},
            {"role": "assistant", "content": "7", "feedback": {"thumbs": -1, "reason": "wrong"}},
        ],
    }
    summary, out = _ingest(tmp_path, [row])
    assert (summary["messages"], summary["examples"], summary["thumbs_up"], summary["thumbs_down"]) == (6, 3, 1, 1)
    ex = read(out, "examples").to_pylist()
    assert [e["example_id"] for e in ex] == ["conv-1:1", "conv-1:3", "conv-1:5"]
    assert [e["thumbs"] for e in ex] == [None, 1, -1] and ex[2]["dislike_reason"] == "wrong"
    assert ex[2]["context"][-1] == {"role": "user", "content": "and 3+3?"}


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([], "empty"),
        ("hello", "field messages: expected a list"),
        ([{"role": "user", "content": "x", "feedback": {"thumbs": 1}}], "only assistant messages"),
        ([{"role": "assistant", "content": "x", "feedback": {"thumbs": 5}}], "feedback.thumbs"),
        ([{"role": "assistant", "content": None}], "messages[0].content"),
        ([{"role": "assistant", "content": "x", "feedback": "good"}], "messages[0].feedback"),
    ],
)
def test_broken_messages_rows(tmp_path, messages, reason):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    summary, out = _ingest(tmp_path, [good, {"messages": messages}], fmt="messages")
    assert summary["conversations"] == 1 and summary["rejected"] == 1
    assert reason in _rejects(out)[0]["reason"]
