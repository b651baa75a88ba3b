"""The BB3x reader: valid shapes, broken lines, and that the fast and per-line paths agree."""

import json

import pyarrow as pa
import pytest

from rlhf_organic.data.ingest import ingest
from rlhf_organic.data.readers import bb3x
from rlhf_organic.data.sources import Chunk
from rlhf_organic.errors import InputError

from conftest import bb3x_conversation, read, write_lines


def _ingest(tmp_path, lines, name="data.jsonl", **kw):
    src = write_lines(tmp_path / "in" / name, lines, **{k: kw.pop(k) for k in ("gz", "newline_at_end") if k in kw})
    out = tmp_path / "ds"
    summary = ingest([str(src)], out, log=lambda m: None, progress=False, **kw)
    return summary, out


def test_valid_conversation_becomes_messages_examples_feedback(tmp_path):
    summary, out = _ingest(tmp_path, [bb3x_conversation()])
    assert summary["conversations"] == 1 and summary["messages"] == 4
    assert summary["examples"] == 2 and summary["thumbs_up"] == 1 and summary["thumbs_down"] == 1
    assert summary["rejected"] == 0 and summary["users"] == 1
    ex = read(out, "examples").to_pylist()
    assert [e["example_id"] for e in ex] == ["c1:1", "c1:3"]
    assert ex[0]["context"] == [{"role": "user", "content": "hi there"}]
    assert [m["content"] for m in ex[1]["context"]] == ["hi there", "hello! how are you?", "you are dumb"]
    assert ex[0]["thumbs"] == 1 and ex[1]["thumbs"] == -1 and ex[1]["dislike_reason"] == "rude_inappropriate"
    assert ex[0]["reward_class"] == "__ok__" and ex[0]["reward_prob"] == pytest.approx(0.93)
    msgs = read(out, "messages").to_pylist()
    assert [m["is_unsafe"] for m in msgs] == [False, None, True, None]
    conv = read(out, "conversations").to_pylist()[0]
    assert conv["is_adversarial"] and conv["n_unsafe_user_messages"] == 1
    user = read(out, "users").to_pylist()[0]
    assert user == {
        "user_id": "u1", "n_conversations": 1, "n_adversarial_conversations": 1, "n_user_messages": 2,
        "n_unsafe_user_messages": 1, "n_examples": 2, "n_thumbs_up": 1, "n_thumbs_down": 1,
        "n_preferences": 0, "n_feedback": 2,
    }


def test_both_sender_spellings_give_the_same_dataset(tmp_path):
    _, lower = _ingest(tmp_path / "a", [bb3x_conversation()])
    _, upper = _ingest(tmp_path / "b", [bb3x_conversation(bot="Chatbot", human="Human")])
    for table in ("messages", "examples"):
        assert read(lower, table).equals(read(upper, table))


def test_gzip_input_matches_plain(tmp_path):
    lines = [bb3x_conversation(f"c{i}", f"u{i % 3}") for i in range(20)]
    _, plain = _ingest(tmp_path / "a", lines)
    _, gz = _ingest(tmp_path / "b", lines, name="data.jsonl.gz", gz=True)
    assert read(plain, "examples").equals(read(gz, "examples"))


def test_truncated_last_line_is_rejected_with_its_line_number(tmp_path):
    good = json.dumps(bb3x_conversation("c1"))
    cut = json.dumps(bb3x_conversation("c2"))[:-40]
    summary, out = _ingest(tmp_path, [good, cut], newline_at_end=False)
    assert summary["conversations"] == 1 and summary["rejected"] == 1
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert reject["line"] == 2 and reject["file"].endswith("data.jsonl")
    assert "not valid JSON" in reject["reason"] and "truncated" in reject["reason"]


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda c: c.update(message_history=[]), "message_history is empty"),
        (lambda c: c.pop("message_history"), "missing field message_history"),
        (lambda c: c.pop("chat_id"), "missing field chat_id"),
        (lambda c: c.pop("user_pseudo_id"), "missing field user_pseudo_id"),
        (lambda c: c["message_history"][2].update(sender="alien"), "message_history[2].sender"),
        (lambda c: c["message_history"][1].pop("text"), "message_history[1].text: missing"),
        (lambda c: c["message_history"][1].update(isLiked="yes"), "message_history[1].isLiked: expected true/false"),
        (lambda c: c.update(chat_id=17), "chat_id: expected a string"),
        (lambda c: c.update(message_history={"a": 1}), "message_history: expected an array"),
        (lambda c: c["message_history"][0].update(safety="ok"), "message_history[0].safety: expected an object"),
    ],
)
def test_broken_conversation_is_rejected_and_the_rest_kept(tmp_path, mutate, reason):
    bad = bb3x_conversation("bad")
    mutate(bad)
    summary, out = _ingest(tmp_path, [bb3x_conversation("c1"), bad, bb3x_conversation("c3")])
    assert summary["conversations"] == 2 and summary["rejected"] == 1 and summary["lines"] == 3
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert reject["line"] == 2 and reason in reject["reason"], reject
    assert reject["excerpt"]  # the start of the bad line, to find it
    assert read(out, "conversations").column("conversation_id").to_pylist() == ["c1", "c3"]


def test_not_json_and_not_object_and_blank_lines(tmp_path):
    lines = [bb3x_conversation("c1"), "", "not json", "[1, 2]", "   ", '"text"', bb3x_conversation("c2")]
    summary, out = _ingest(tmp_path, lines)
    assert summary["lines"] == 5 and summary["conversations"] == 2 and summary["rejected"] == 3
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [3, 4, 6]
    assert "expected a JSON object per line, got array" in rejects[1]["reason"]


def test_strict_stops_at_first_bad_line_and_writes_nothing(tmp_path):
    with pytest.raises(InputError, match=r"data\.jsonl:2: not valid JSON"):
        _ingest(tmp_path, [bb3x_conversation("c1"), "{oops", bb3x_conversation("c3")], strict=True)
    assert not (tmp_path / "ds").exists()


def test_unknown_fields_are_not_fatal(tmp_path):
    conv = bb3x_conversation(extra_top={"x": [1, {"y": None}]}, other="z")
    conv["message_history"][1]["brand_new_field"] = {"deep": [1, 2, 3]}
    summary, _ = _ingest(tmp_path, [conv])
    assert summary["rejected"] == 0 and summary["examples"] == 2


def test_mturk_gold_labels_and_reward_given_as_dict(tmp_path):
    conv = bb3x_conversation()
    conv["message_history"][1]["mturk"] = {"good": 1, "some_unpublished_key": 0.5}
    conv["message_history"][3]["reward"] = {"text": "Predicted class: __not_ok__ with probability: 0.8"}
    conv["message_history"][0]["mturk"] = None
    summary, out = _ingest(tmp_path, [conv, bb3x_conversation("c2")])
    assert summary["gold_labels"] == 1 and summary["rejected"] == 0
    gold = [e["gold"] for e in read(out, "examples").to_pylist()]
    assert gold[0] == [{"key": "good", "value": 1.0}, {"key": "some_unpublished_key", "value": 0.5}]
    assert gold[1] is None
    assert read(out, "examples").column("reward_class").to_pylist()[:2] == ["__ok__", "__not_ok__"]
    events = [e for e in read(out, "feedback").to_pylist() if e["kind"] == "gold"]
    assert {(e["example_id"], e["label"], e["value"]) for e in events} == {
        ("c1:1", "good", 1.0), ("c1:1", "some_unpublished_key", 0.5)
    }


def test_fast_and_per_line_paths_produce_identical_tables():
    convs = [bb3x_conversation(f"c{i}", f"u{i}") for i in range(5)]
    convs[3]["message_history"][1]["isLiked"] = None
    convs[2]["message_history"][3]["mturk"] = {"bad": 1, "rude": 0.5}
    convs[4]["message_history"][0]["mturk"] = None
    lines = [json.dumps(c).encode() for c in convs]
    chunk = Chunk("f.jsonl", 1, lines)
    fast = bb3x._try_fast(list(chunk.numbered()))
    rejects = []
    slow = bb3x._parse_slow(list(chunk.numbered()), chunk, rejects)
    assert fast is not None and not rejects
    fast_out, _ = bb3x.to_canonical(fast, "f.jsonl")
    slow_out, _ = bb3x.to_canonical(slow, "f.jsonl")
    assert fast_out.equals(slow_out)


def test_one_bad_line_in_a_big_chunk_keeps_every_good_line(tmp_path):
    lines = [bb3x_conversation(f"c{i}") for i in range(600)]
    lines[437] = '{"user_pseudo_id": "u", "chat_id": 5, "message_history": []}'
    summary, out = _ingest(tmp_path, lines)
    assert summary["conversations"] == 599 and summary["rejected"] == 1
    ids = read(out, "conversations").column("conversation_id").to_pylist()
    assert ids == [f"c{i}" for i in range(600) if i != 437]  # input order is kept
    assert json.loads((out / "rejects.jsonl").read_text())["line"] == 438


def test_chunk_size_does_not_change_the_result(tmp_path):
    lines = [bb3x_conversation(f"c{i}", f"u{i % 7}") for i in range(300)]
    _, big = _ingest(tmp_path / "a", lines)
    src = tmp_path / "a" / "in" / "data.jsonl"
    small = tmp_path / "small"
    ingest([str(src)], small, chunk_bytes=3000, log=lambda m: None, progress=False)  # a few lines per chunk
    for table in ("conversations", "messages", "examples", "feedback", "users"):
        assert read(big, table).equals(read(small, table)), table


def test_two_objects_on_one_line_are_rejected_not_misnumbered(tmp_path):
    a, b = json.dumps(bb3x_conversation("c1")), json.dumps(bb3x_conversation("c2"))
    summary, out = _ingest(tmp_path, [a + " " + b, bb3x_conversation("c3")])
    assert summary["conversations"] == 1 and summary["rejected"] == 1
    assert json.loads((out / "rejects.jsonl").read_text())["line"] == 1


def test_invalid_utf8_is_rejected(tmp_path):
    raw = json.dumps(bb3x_conversation("c2")).encode().replace(b"hi there", b"hi \xff\xfe there")
    summary, out = _ingest(tmp_path, [bb3x_conversation("c1"), raw])
    assert summary["conversations"] == 1 and summary["rejected"] == 1


def test_empty_chunk_table_converts():
    empty = pa.Table.from_pylist([], schema=bb3x.FULL_SCHEMA.append(pa.field("source_line", pa.int64())))
    out, rejects = bb3x.to_canonical(empty, "f")
    assert out.num_rows == 0 and rejects == []


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    lines = [json.dumps(bb3x_conversation(f"c{i}")) + "\r" for i in range(3)]
    lines[0] = "\ufeff" + lines[0]
    summary, out = _ingest(tmp_path, lines)
    assert summary["conversations"] == 3 and summary["rejected"] == 0
    assert read(out, "messages").column("text").to_pylist()[0] == "hi there"


def test_long_conversation_contexts_are_capped_and_counted(tmp_path):
    conv = bb3x_conversation()
    conv["message_history"] = [
        {"text": f"m{i}", "sender": "human" if i % 2 == 0 else "bot"} for i in range(40)
    ]
    summary, out = _ingest(tmp_path, [conv], max_context=5)
    ex = read(out, "examples").to_pylist()
    assert len(ex) == 20 and summary["contexts_truncated"] == 17  # turns 7, 9, ..., 39
    assert [m["content"] for m in ex[-1]["context"]] == ["m34", "m35", "m36", "m37", "m38"]
    assert [m["content"] for m in ex[1]["context"]] == ["m0", "m1", "m2"]
    assert summary["messages"] == 40  # the messages table keeps everything
