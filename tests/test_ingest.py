"""Ingest as a whole: input discovery, auto-detection, accounting, outputs readable without us."""

import gzip
import json
import os
import random

import pytest

from rlhf_organic.data.ingest import ingest
from rlhf_organic.errors import InputError, UserError

from conftest import bb3x_conversation, read, unreadable, write_lines

SUMMARY_INT_KEYS = ("conversations", "messages", "examples", "thumbs_up", "thumbs_down", "preferences", "users", "rejected")


def _quiet(**kw):
    return dict(log=lambda m: None, progress=False, **kw)


def test_folder_of_mixed_formats_auto_detected(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "release_data_00.jsonl", [bb3x_conversation("c1")])
    write_lines(logs / "release_data_01.jsonl.gz", [bb3x_conversation("c2")], gz=True)
    write_lines(logs / "prefs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    write_lines(logs / "sub" / "kto.jsonl", [{"prompt": "p", "completion": "c", "label": False}])
    (logs / "notes.txt").write_text("ignored: not a .jsonl/.json/.gz file")
    said = []
    summary = ingest([str(logs)], tmp_path / "ds", log=said.append, progress=False)
    assert {i["file"].split("/")[-1]: i["format"] for i in summary["inputs"]} == {
        "prefs.jsonl": "preference", "release_data_00.jsonl": "bb3x",
        "release_data_01.jsonl.gz": "bb3x", "kto.jsonl": "kto",
    }
    assert any("format kto (auto-detected)" in m for m in said)
    assert (summary["conversations"], summary["preferences"], summary["examples"]) == (3, 1, 5)


def test_format_names_match_the_readers():
    from rlhf_organic.data import INPUT_FORMATS
    from rlhf_organic.data.readers import READERS

    assert set(INPUT_FORMATS) == {"auto", *READERS}


def test_glob_input_and_missing_input(tmp_path):
    for i in range(3):
        write_lines(tmp_path / f"part_{i}.jsonl", [bb3x_conversation(f"c{i}")])
    summary = ingest([str(tmp_path / "part_*.jsonl")], tmp_path / "ds", **_quiet())
    assert summary["conversations"] == 3
    with pytest.raises(UserError, match="input not found"):
        ingest([str(tmp_path / "nope.jsonl")], tmp_path / "ds2", **_quiet())
    with pytest.raises(UserError, match="matches no files"):
        ingest([str(tmp_path / "zzz_*.jsonl")], tmp_path / "ds2", **_quiet())


def test_unrecognisable_file_is_a_clear_error(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [{"foo": 1}, "garbage"])
    with pytest.raises(UserError, match=r"cannot tell the format of .*x\.jsonl.*\['foo'\].*--format"):
        ingest([str(src)], tmp_path / "ds", **_quiet())


def test_existing_output_needs_overwrite(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [bb3x_conversation()])
    ingest([str(src)], tmp_path / "ds", **_quiet())
    with pytest.raises(UserError, match="already exists"):
        ingest([str(src)], tmp_path / "ds", **_quiet())
    assert ingest([str(src)], tmp_path / "ds", overwrite=True, **_quiet())["conversations"] == 1


def test_truncated_gzip_stream_keeps_what_was_read_and_reports_the_rest(tmp_path):
    data = b"".join(json.dumps(bb3x_conversation(f"c{i}")).encode() + b"\n" for i in range(2000))
    packed = gzip.compress(data)
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(packed[: len(packed) // 2])
    summary = ingest([str(src)], tmp_path / "ds", chunk_bytes=1 << 16, **_quiet())
    assert summary["read_errors"] == 1 and 0 < summary["conversations"] < 2000
    rejects = [json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    assert "cannot read past this point" in rejects[-1]["reason"]


def test_every_line_is_accounted_for_in_random_garbage(tmp_path):
    rng = random.Random(3)
    pool = [
        lambda: json.dumps(bb3x_conversation(f"c{rng.random()}")),
        lambda: json.dumps(bb3x_conversation(f"c{rng.random()}"))[: rng.randrange(1, 200)],
        lambda: json.dumps({"user_pseudo_id": "u", "chat_id": "x", "message_history": rng.choice([[], None, 5, "a"])}),
        lambda: json.dumps(rng.choice([1, "s", None, [1], {"a": 1}])),
        lambda: "",
        lambda: "\t ",
    ]
    lines = [rng.choice(pool)() for _ in range(500)]
    src = write_lines(tmp_path / "g.jsonl", [json.dumps(bb3x_conversation("first"))] + lines)
    summary = ingest([str(src)], tmp_path / "ds", fmt="bb3x", **_quiet())
    nonblank = 1 + sum(1 for x in lines if x.strip())
    assert summary["lines"] == nonblank
    assert summary["conversations"] + summary["rejected"] == nonblank
    n_rejects = len((tmp_path / "ds" / "rejects.jsonl").read_text().splitlines())
    assert n_rejects == summary["rejected"] > 0


def test_outputs_are_plain_parquet_and_summary_has_integer_counts(tmp_path):
    src = write_lines(tmp_path / "x.jsonl", [bb3x_conversation(f"c{i}", f"u{i % 2}") for i in range(4)])
    summary = ingest([str(src)], tmp_path / "ds", **_quiet())
    saved = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert saved["conversations"] == summary["conversations"]
    assert all(isinstance(saved[k], int) for k in SUMMARY_INT_KEYS)
    import datasets
    import pandas as pd

    for table in ("conversations", "messages", "examples", "feedback", "preferences", "users"):
        pd.read_parquet(tmp_path / "ds" / f"{table}.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds" / "examples.parquet"), split="train")
    assert ds.num_rows == 8 and ds[0]["context"][0]["role"] == "user"


# ---------------------------------------------------------------- folders: links, unreadable and empty files

def _named(summary: dict, key: str) -> dict[str, str]:
    """{real path: reason} of the things the summary names under ``key`` (``unreadable`` or ``skipped``)."""
    return {os.path.realpath(item["path"]): item["reason"] for item in summary[key]}


def test_a_symlinked_subfolder_is_followed_and_a_loop_is_visited_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_lines(elsewhere / "more.jsonl", [bb3x_conversation("c2"), bb3x_conversation("c3")])
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1")])
    (logs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (logs / "sub").mkdir()
    (logs / "sub" / "up").symlink_to(logs, target_is_directory=True)  # a loop back to the input folder
    (logs / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice: read once
    summary = ingest([str(logs)], tmp_path / "ds", **_quiet())
    assert summary["conversations"] == 3 and summary["rejected"] == 0
    assert sorted(os.path.basename(i["file"]) for i in summary["inputs"]) == ["a.jsonl", "more.jsonl"]
    assert summary["unreadable"] == []


def test_an_unreadable_subfolder_and_a_broken_link_are_named_and_the_rest_ingested(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1")])
    write_lines(logs / "locked" / "b.jsonl", [bb3x_conversation("c2")])
    (logs / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (logs / "gone_folder").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    said = []
    with unreadable(logs / "locked"):
        summary = ingest([str(logs)], tmp_path / "ds", log=said.append, progress=False)
    assert summary["conversations"] == 1
    named = _named(summary, "unreadable")
    assert set(named) == {str(logs / "locked"), str(tmp_path / "nowhere.jsonl"), str(tmp_path / "nowhere")}
    assert "permission denied" in named[str(logs / "locked")].lower()
    assert "nothing rejected" not in said[-1] and "3 could not be read" in said[-1]
    assert any("locked" in m and "permission denied" in m.lower() for m in said)
    saved = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert saved["unreadable"] == summary["unreadable"]


def test_an_empty_file_among_good_ones_is_named_and_skipped(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1")])
    (logs / "empty.jsonl").write_bytes(b"")
    (logs / "blank.jsonl").write_bytes(b"\n  \n\n")
    write_lines(logs / "empty.jsonl.gz", [], gz=True, newline_at_end=False)
    write_lines(logs / "z.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    for fmt in ("auto", "bb3x"):
        summary = ingest([str(logs)], tmp_path / fmt, fmt=fmt, **_quiet())
        assert summary["conversations"] == 1 and summary["lines"] == 2
        assert set(_named(summary, "skipped")) == {str(logs / n) for n in ("empty.jsonl", "blank.jsonl", "empty.jsonl.gz")}
        assert all("empty" in reason for reason in _named(summary, "skipped").values())
        assert sorted(os.path.basename(i["file"]) for i in summary["inputs"]) == ["a.jsonl", "z.jsonl"]


def test_an_unreadable_file_is_a_read_error_and_the_rest_is_ingested(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1")])
    secret = write_lines(logs / "secret.jsonl", [bb3x_conversation("c2")])
    for fmt in ("auto", "bb3x"):
        with unreadable(secret):
            summary = ingest([str(logs)], tmp_path / fmt, fmt=fmt, **_quiet())
        assert summary["conversations"] == 1 and summary["read_errors"] == 1
        assert list(_named(summary, "unreadable")) == [str(secret)]
        rejects = [json.loads(x) for x in (tmp_path / fmt / "rejects.jsonl").read_text().splitlines()]
        assert [(os.path.realpath(r["file"]), r["line"]) for r in rejects] == [(str(secret), 1)]
        assert "permission denied" in rejects[0]["reason"].lower()
    with unreadable(secret), pytest.raises(InputError, match=r"secret\.jsonl:1: .*[Pp]ermission denied"):
        ingest([str(logs)], tmp_path / "strict", strict=True, **_quiet())


def test_nothing_readable_is_a_clear_error(tmp_path):
    logs = tmp_path / "logs"
    secret = write_lines(logs / "secret.jsonl", [bb3x_conversation("c2")])
    with unreadable(secret), pytest.raises(UserError, match=r"nothing could be read.*secret\.jsonl.*ermission denied"):
        ingest([str(logs)], tmp_path / "ds", **_quiet())
    with unreadable(logs), pytest.raises(UserError, match=r"nothing could be read.*logs.*ermission denied"):
        ingest([str(logs)], tmp_path / "ds", **_quiet())
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.partial-*"))


def test_a_fifo_is_named_and_never_opened(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1")])
    os.mkfifo(logs / "pipe.jsonl")  # opening it would wait for a writer forever
    summary = ingest([str(logs)], tmp_path / "ds", **_quiet())
    assert summary["conversations"] == 1
    assert "not a regular file" in _named(summary, "skipped")[str(logs / "pipe.jsonl")]


def test_a_dataset_inside_its_input_folder_is_refused_and_output_folders_are_not_read_as_logs(tmp_path):
    logs = tmp_path / "logs"
    write_lines(logs / "a.jsonl", [bb3x_conversation("c1"), "{broken"])
    with pytest.raises(UserError, match="sits inside the input"):
        ingest([str(logs)], logs / "ds", **_quiet())
    assert not (logs / "ds").exists()
    # a dataset put there by other means (moved, or written by an older version) is skipped, and said so
    ingest([str(logs)], tmp_path / "ds", **_quiet())
    os.rename(tmp_path / "ds", logs / "ds")
    summary = ingest([str(logs)], tmp_path / "again", **_quiet())
    assert summary["lines"] == 2 and summary["rejected"] == 1  # its rejects.jsonl was not read as input
    assert "output folder" in _named(summary, "skipped")[str(logs / "ds")]


# ---- blank user ids ------------------------------------------------------------------------------

BLANK_IDS = ["", "   ", "\t"]


def test_a_blank_bb3x_user_id_is_rejected_like_a_missing_one(tmp_path, quiet_log):
    """An empty user id used to be accepted as a user (one "" user holding everyone's blank-id feedback)."""
    lines = [bb3x_conversation(f"c{i}", user) for i, user in enumerate(BLANK_IDS)]
    lines += [bb3x_conversation("c-null", None), bb3x_conversation("c-ok", "u1")]
    write_lines(tmp_path / "logs" / "bb3x.jsonl", lines)
    summary = ingest([str(tmp_path / "logs")], tmp_path / "ds", progress=False, log=quiet_log)
    assert (summary["conversations"], summary["rejected"], summary["lines"]) == (1, 4, 5)
    rejects = [json.loads(line) for line in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [1, 2, 3, 4]
    assert all("user_pseudo_id" in r["reason"] for r in rejects)
    assert read(tmp_path / "ds", "users").column("user_id").to_pylist() == ["u1"]


@pytest.mark.parametrize("fmt,row", [
    ("kto", {"prompt": "hi", "completion": "hello", "label": True}),
    ("preference", {"prompt": "hi", "chosen": "hello", "rejected": "go away"}),
    ("messages", {"messages": [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello", "feedback": {"thumbs": 1}}]}),
])
def test_a_blank_user_id_in_row_formats_is_no_user_id_like_null(tmp_path, quiet_log, fmt, row):
    """Row formats may have no user id (null or absent): a blank one is the same, never a user named ""."""
    rows = [{**row, "user_id": user} for user in [*BLANK_IDS, None]] + [{**row, "user_id": "u2"}]
    write_lines(tmp_path / f"{fmt}.jsonl", rows)
    summary = ingest([str(tmp_path / f"{fmt}.jsonl")], tmp_path / "ds", fmt=fmt, progress=False, log=quiet_log)
    assert summary["rejected"] == 0 and summary["lines"] == 5
    table = "preferences" if fmt == "preference" else "conversations"
    assert read(tmp_path / "ds", table).column("user_id").to_pylist() == [None] * 4 + ["u2"]
    assert read(tmp_path / "ds", "users").column("user_id").to_pylist() == ["u2"]
