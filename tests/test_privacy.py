"""Privacy: ids hashed and fields dropped at ingest, and reports that print no user text or raw user id
unless asked (docs/safety.md)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rlhf_organic.data.ingest import ingest
from rlhf_organic.data.privacy import (
    DROPPABLE,
    HASHABLE_IDS,
    HIDDEN_TEXT,
    SALT_ENV,
    PrivacySection,
    hash_array,
    hash_column,
    hash_id,
    salt_id,
    show_user_text,
)
from rlhf_organic.data.schema import OUTPUT_TABLES
from rlhf_organic.errors import RecipeError, UserError
from rlhf_organic.simulator.simulate import preset_config, simulate

from conftest import bb3x_conversation, write_lines

SALT = "a-long-test-salt-0123456789"
OTHER_SALT = "another-test-salt-9876543210"
TABLES = [name for name in OUTPUT_TABLES]
QUIET = {"progress": False, "log": lambda m: None}


# ---- hashing and the salt ----------------------------------------------------------------------

def test_hashing_is_stable_and_salted():
    salt, other = SALT.encode(), OTHER_SALT.encode()
    assert hash_id("user-1", salt) == hash_id("user-1", salt)
    assert hash_id("user-1", salt) != hash_id("user-2", salt)
    assert hash_id("user-1", salt) != hash_id("user-1", other)
    assert re.fullmatch(r"[0-9a-f]{32}", hash_id("user-1", salt))
    hashed = hash_array(pa.chunked_array([["a", None, "b"], ["a"]]), salt).to_pylist()
    assert hashed == [hash_id("a", salt), None, hash_id("b", salt), hash_id("a", salt)]


def test_a_missing_or_short_salt_is_refused_never_replaced_by_an_unsalted_hash():
    section = PrivacySection(hash_ids=["user_id"])
    with pytest.raises(UserError, match=f"needs a salt.*{SALT_ENV}"):
        section.resolve_salt(environ={})
    with pytest.raises(UserError, match="at least 16"):
        section.resolve_salt(environ={SALT_ENV: "short"})
    assert section.resolve_salt(environ={SALT_ENV: SALT}) == SALT.encode()
    assert PrivacySection(hash_ids=["user_id"], salt=OTHER_SALT).resolve_salt(environ={SALT_ENV: SALT}) == OTHER_SALT.encode()
    assert PrivacySection(drop=["source_file"]).resolve_salt(environ={}) is None  # dropping needs no salt


def test_the_salt_is_never_written_and_changes_the_ingest_fingerprint(tmp_path, monkeypatch):
    from rlhf_organic.pipeline import plan_stages
    from rlhf_organic.recipe import dump_recipe, load_recipe

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: r\ndata:\n  privacy:\n    hash_ids: [user_id]\n    salt: {SALT}\n")
    recipe = load_recipe(recipe_file)
    assert SALT not in dump_recipe(recipe) and SALT not in json.dumps(recipe.model_dump(mode="json"))
    assert SALT not in repr(recipe)

    def ingest_settings(salt):
        r = load_recipe(recipe_file, [f"data.privacy.salt={salt}"])
        return next(s for s in plan_stages(r, tmp_path / "run", **QUIET) if s.name == "ingest").settings

    one, two = ingest_settings(SALT), ingest_settings(OTHER_SALT)
    assert one["privacy"]["salt_id"] == salt_id(SALT.encode()) != two["privacy"]["salt_id"]
    assert SALT not in json.dumps(one)
    plain = load_recipe(recipe_file, ["data.privacy.hash_ids=[]"])
    assert "privacy" not in next(s for s in plan_stages(plain, tmp_path / "run", **QUIET) if s.name == "ingest").settings
    monkeypatch.delenv(SALT_ENV, raising=False)
    with pytest.raises(UserError, match="needs a salt"):  # refused while planning, before any stage runs
        plan_stages(load_recipe(recipe_file, ["data.privacy.salt=null"]), tmp_path / "run", **QUIET)
    with pytest.raises(RecipeError, match="hash_ids"):
        load_recipe(recipe_file, ["data.privacy.hash_ids=[email]"])


# ---- ingest: hashing and dropping --------------------------------------------------------------

def _logs(folder: Path) -> Path:
    """Every field the privacy options touch: a BB3x file (ids, reasons, raw reward, crowdworker labels, a
    failure note, a dislike-feedback message, the bot's memories), chat messages with a free-text
    reason, A/B choices, and a bad line."""
    rich = bb3x_conversation("chat-7", "alice@example.com")
    rich["message_history"][1]["mturk"] = {"engaging": 1.0}
    rich["message_history"][3]["previous_interaction_failure"] = "off_topic"
    rich["message_history"].append({"text": "you were rude about my divorce", "sender": "human",
                                    "human_message_id": "h3", "isDislikeFeedback": True})
    write_lines(folder / "bb3x.jsonl", [rich, bb3x_conversation("chat-8", "bob-1984"), '{"user_pseudo_id": "carol-secret", oops'])
    write_lines(folder / "messages.jsonl", [{"user_id": "dave.smith", "conversation_id": "m-1", "messages": [
        {"role": "user", "content": "my name is Dave Smith"},
        {"role": "assistant", "content": "hi Dave", "id": "a1", "feedback": {"thumbs": -1, "reason": "it called me Dave in public"}},
    ]}])
    write_lines(folder / "prefs.jsonl", [{"prompt": "hello", "chosen": "hi", "rejected": "go away", "user_id": "erin",
                                          "id": "pref-erin-1"}])
    return folder


RAW_IDS = ["alice@example.com", "bob-1984", "dave.smith", "erin"]


def _all_strings(dataset: Path) -> list[str]:
    """Every string value in every table of ``dataset`` (nested ones too)."""
    values = []

    def walk(v):
        if isinstance(v, str):
            values.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for table in TABLES:
        walk(pq.read_table(dataset / f"{table}.parquet").to_pylist())
    return values


def test_hashed_ids_replace_the_raw_ones_consistently_in_every_table(tmp_path):
    logs = _logs(tmp_path / "logs")
    plain = tmp_path / "plain"
    ingest([str(logs)], plain, **QUIET)
    hashed = tmp_path / "hashed"
    summary = ingest([str(logs)], hashed, privacy=PrivacySection(hash_ids=list(HASHABLE_IDS), salt=SALT), **QUIET)
    assert summary["privacy"] == {"hash_ids": sorted(HASHABLE_IDS), "drop": []}
    salt = SALT.encode()
    for table in TABLES:
        a, b = pq.read_table(plain / f"{table}.parquet"), pq.read_table(hashed / f"{table}.parquet")
        assert a.num_rows == b.num_rows and a.schema == b.schema
        for column in ("user_id", "conversation_id", "message_id", "preference_id"):
            if column in a.column_names:
                expected = hash_array(a.column(column), salt)
                got = b.column(column).combine_chunks()
                if table == "users":  # sorted by id: compare as sets, with the counts
                    assert sorted(got.to_pylist()) == sorted(expected.to_pylist())
                else:
                    assert got.equals(expected), (table, column)
    examples = pq.read_table(hashed / "examples.parquet")
    assert examples.column("example_id").to_pylist()[0] == f"{hash_id('chat-7', salt)}:1"
    strings = _all_strings(hashed)
    for raw in RAW_IDS + ["chat-7", "pref-erin-1"]:
        assert not any(raw in s for s in strings), raw
    def counts(dataset):  # per user, by the user's (hashed) id
        rows = pq.read_table(dataset / "users.parquet").to_pylist()
        return {(r.pop("user_id") if dataset == hashed else hash_id(r.pop("user_id"), salt)): r for r in rows}

    assert counts(hashed) == counts(plain)


def test_dropped_fields_are_gone_from_every_table(tmp_path):
    logs = _logs(tmp_path / "logs")
    out = tmp_path / "ds"
    summary = ingest([str(logs)], out, privacy=PrivacySection(drop=list(DROPPABLE)), **QUIET)
    assert summary["conversations"] == 3 and summary["preferences"] == 1 and summary["rejected"] == 1
    derived = {"dislike_reason": ["dislike_reason"], "reward": ["reward", "reward_class", "reward_prob"],
               "gold": ["gold"], "source_file": ["source_file"], "source_line": ["source_line"],
               "message_id": ["message_id"], "safety_failure": ["safety_failure"]}
    checked = set()
    for table in TABLES:
        data = pq.read_table(out / f"{table}.parquet")
        for field, columns in derived.items():
            for column in columns:
                if column in data.column_names:
                    values = data.column(column)
                    empty = values.null_count == len(values) or (
                        pa.types.is_list(values.type) and pc.sum(pc.list_value_length(values)).as_py() in (0, None))
                    assert empty, (table, column)
                    checked.add(field)
    assert checked == set(derived)
    feedback = pq.read_table(out / "feedback.parquet").to_pylist()
    thumbs = [f["label"] for f in feedback if f["kind"] == "thumbs"]
    assert len(thumbs) == 5 and set(thumbs) == {None}  # a thumbs-down's label is its dislike reason
    assert not any(f["kind"] == "gold" for f in feedback)
    strings = _all_strings(out)
    for private in ("divorce", "called me Dave in public", "likes tea", "bb3x.jsonl", "off_topic", "engaging"):
        assert not any(private in s for s in strings), private
    messages = pq.read_table(out / "messages.parquet").to_pylist()
    assert [m["text"] for m in messages if m["is_dislike_feedback"]] == [""]
    assert json.loads((out / "rejects.jsonl").read_text())["excerpt"] == ""
    assert "carol-secret" not in (out / "rejects.jsonl").read_text()


def test_without_privacy_settings_nothing_changes(tmp_path):
    logs = _logs(tmp_path / "logs")
    ingest([str(logs)], tmp_path / "a", **QUIET)
    summary = ingest([str(logs)], tmp_path / "b", privacy=PrivacySection(), **QUIET)
    assert "privacy" not in summary
    for table in TABLES:
        assert pq.read_table(tmp_path / "a" / f"{table}.parquet").equals(pq.read_table(tmp_path / "b" / f"{table}.parquet"))
    rejects = (tmp_path / "b" / "rejects.jsonl").read_text()
    assert "carol-secret" in rejects  # the private diagnostic file keeps its excerpt unless rejects_excerpt is dropped


def test_the_ingest_command_hashes_and_drops(tmp_path):
    from rlhf_organic.cli import main

    logs = _logs(tmp_path / "logs")
    runner = CliRunner()
    args = ["ingest", str(logs), "--out", str(tmp_path / "ds"), "--hash-ids", "user_id,conversation_id",
            "--drop", "dislike_reason", "--drop", "source_file", "-q"]
    refused = runner.invoke(main, args, env={SALT_ENV: ""})
    assert refused.exit_code == 2 and "needs a salt" in refused.output and not (tmp_path / "ds").exists()
    done = runner.invoke(main, args, env={SALT_ENV: SALT})
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert summary["privacy"] == {"hash_ids": ["conversation_id", "user_id"], "drop": ["dislike_reason", "source_file"]}
    users = pq.read_table(tmp_path / "ds" / "users.parquet").column("user_id").to_pylist()
    assert sorted(users) == sorted(hash_id(u, SALT.encode()) for u in RAW_IDS)
    bad = runner.invoke(main, ["ingest", str(logs), "--out", str(tmp_path / "x"), "--drop", "text"])
    assert bad.exit_code == 2 and "drop" in bad.output


# ---- trust is unchanged by hashing ---------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["uniform", "safety_filter"])
def test_trust_is_identical_up_to_the_renaming(tmp_path, scheme):
    """Schemes that do not split users into folds give each user the same trust, under its new name, and
    the same troll-detection numbers against a ground truth hashed the same way (``hash_column``).
    (The k-fold schemes shuffle users in sorted-id order: renaming re-draws their split, like a new seed.)"""
    from rlhf_organic.trust.config import settings_from_cli
    from rlhf_organic.trust.stage import compute_trust

    sim = tmp_path / "sim"
    simulate(preset_config("realistic", users=40, seed=3), sim, progress=False)
    salt = SALT.encode()
    ingest([str(sim / "logs")], tmp_path / "plain", **QUIET)
    ingest([str(sim / "logs")], tmp_path / "hashed", privacy=PrivacySection(hash_ids=["user_id"], salt=SALT), **QUIET)
    truth = tmp_path / "truth"  # the simulator's ground truth, its user ids hashed like the dataset's
    truth.mkdir()
    pq.write_table(hash_column(pq.read_table(sim / "ground_truth.parquet"), "user_id", salt), truth / "ground_truth.parquet")
    shutil.copy(sim / "ground_truth_examples.parquet", truth)  # keyed by example id: unchanged
    settings = settings_from_cli(scheme, [])
    a = compute_trust(tmp_path / "plain", tmp_path / "trust-plain", settings, ground_truth=sim, log=lambda m: None, progress=False)
    b = compute_trust(tmp_path / "hashed", tmp_path / "trust-hashed", settings, ground_truth=truth, log=lambda m: None, progress=False)
    assert a["user"]["auc"] is not None and a["example"]["n"] > 0 and a["mean_trust_by_type"]
    for key in ("user", "example", "mean_trust", "weight_kept", "distrusted_users", "mean_trust_by_type"):
        assert a.get(key) == b.get(key), key
    plain_users = pq.read_table(tmp_path / "trust-plain" / "users.parquet").to_pandas()
    hashed_users = pq.read_table(tmp_path / "trust-hashed" / "users.parquet").to_pandas().set_index("user_id")
    renamed = hashed_users.loc[[hash_id(u, salt) for u in plain_users["user_id"]]]
    np.testing.assert_array_equal(renamed["trust"].to_numpy(), plain_users["trust"].to_numpy())
    wa = pq.read_table(tmp_path / "trust-plain" / "examples.parquet").to_pandas()
    wb = pq.read_table(tmp_path / "trust-hashed" / "examples.parquet").to_pandas()
    np.testing.assert_array_equal(wa["weight"].to_numpy(), wb["weight"].to_numpy())
    assert list(wb["user_id"]) == [hash_id(u, salt) for u in wa["user_id"]]


# ---- reports ------------------------------------------------------------------------------------

def test_user_text_is_shown_by_default_only_for_simulated_data(tmp_path):
    from rlhf_organic.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    assert show_user_text(load_recipe(recipe)) is True
    files = ["data.source=files", "data.inputs=[x.jsonl]"]
    assert show_user_text(load_recipe(recipe, files)) is False
    assert show_user_text(load_recipe(recipe, files + ["output.show_user_text=true"])) is True
    assert show_user_text(load_recipe(recipe, ["output.show_user_text=false"])) is False


# seconds, not minutes: a fold-free trust scheme, a very small tiny base, 2 policy steps, 6 replies
RUN = ["trust.scheme=uniform", "trust.ground_truth=null", "policy.base=tiny", "policy.export_merged=false",
       "policy.tiny.vocab_size=300", "policy.tiny.hidden=16", "policy.tiny.layers=1", "policy.tiny.heads=2",
       "policy.tiny.imitation_max=40", "policy.tiny.imitation_epochs=1",
       "policy.max_prompt_length=48", "policy.max_completion_length=16", "policy.train.batch_size=4",
       "policy.train.max_items=8", "policy.eval.contexts=6", "policy.eval.sampling.max_new_tokens=8",
       "output.report_to=none", "output.samples_in_report=6", "data.privacy.hash_ids=[user_id, preference_id]"]


def _shared_files(run: Path) -> dict[str, str]:
    """What a run produces for people to read or to share: reports, the console summary, model cards,
    samples, metrics, the resolved recipe, stage markers."""
    names = ["report.md", "report.html", "report.txt", "recipe.yaml", "policy/README.md", "policy/adapter/README.md",
             "policy/samples.md"]
    files = [run / n for n in names] + sorted(run.glob("*/metrics.json")) + sorted(run.glob("*/stage.json"))
    return {str(f.relative_to(run)): f.read_text(encoding="utf-8") for f in files if f.is_file()}


def test_a_report_on_real_logs_prints_no_user_text_and_no_raw_user_id(tmp_path, monkeypatch):
    from rlhf_organic.pipeline import run_recipe
    from rlhf_organic.recipe import load_recipe

    sim = tmp_path / "sim"
    simulate(preset_config("realistic", users=30, seed=0), sim, progress=False)
    monkeypatch.setenv(SALT_ENV, SALT)
    recipe_file = tmp_path / "files.yaml"
    recipe_file.write_text(f"name: files\ndata:\n  source: files\n  inputs: [{sim / 'logs'}]\n"
                           f"policy: {{method: kto}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    logged: list[str] = []
    run_recipe(load_recipe(recipe_file, RUN), progress=False, log=logged.append, echo=logged.append)
    run = tmp_path / "run"

    raw_users = pq.read_table(sim / "ground_truth.parquet").column("user_id").to_pylist()
    samples = pq.read_table(run / "policy" / "samples.parquet").to_pandas()
    user_text = {m["content"] for context in samples["context"] for m in context if m["role"] == "user"}
    user_text |= set(samples["logged_reply"])  # the deployed bot's replies to real people can quote them
    user_text = {t for t in user_text if len(t) >= 12}
    assert user_text and raw_users
    shared = _shared_files(run)
    assert {"report.md", "report.html", "report.txt", "policy/README.md", "policy/samples.md"} <= set(shared)
    shared["log"] = "\n".join(logged)
    for name, text in shared.items():
        leaked_ids = [u for u in raw_users if u in text]
        assert not leaked_ids, f"{name} prints raw user ids {leaked_ids[:3]}"
        leaked_text = [t for t in user_text if t in text]
        assert not leaked_text, f"{name} prints user text {leaked_text[:2]}"
    assert HIDDEN_TEXT in shared["report.md"] and HIDDEN_TEXT in shared["policy/samples.md"]
    assert SALT not in "".join(shared.values())
    # The dataset holds hashed ids only (rejects.jsonl aside: nothing was rejected here).
    dataset_ids = set(pq.read_table(run / "dataset" / "users.parquet").column("user_id").to_pylist())
    assert dataset_ids == {hash_id(u, SALT.encode()) for u in raw_users} & dataset_ids and not dataset_ids & set(raw_users)

    # Asked to, the same run (every stage reused) shows the text.
    run_recipe(load_recipe(recipe_file, RUN + ["output.show_user_text=true"]), resume=True, progress=False,
               log=lambda m: None, echo=lambda m: None)
    shown = (run / "policy" / "samples.md").read_text(encoding="utf-8")
    assert HIDDEN_TEXT not in shown and any(t in shown for t in user_text)
    assert HIDDEN_TEXT not in (run / "report.md").read_text(encoding="utf-8")


# ---- dislike reasons: labels shown, free text counted -------------------------------------------

FREE_TEXT = ["Jane Doe 555-0199 Springfield", "my son Tom Baker died last week", "x"]


def test_only_the_formats_reason_labels_are_printed_the_rest_is_counted():
    from rlhf_organic.data.reasons import KNOWN_REASONS, NONE_GIVEN, known_reason, public_reasons
    from rlhf_organic.simulator.simulate import DISLIKE_REASONS

    assert set(DISLIKE_REASONS) <= set(KNOWN_REASONS)  # what the simulator writes is never hidden
    for spelling in ("off_topic", "Off-Topic", "off topic", " looks-like-spam ", "rude/inappropriate", "OTHER"):
        assert known_reason(spelling) in KNOWN_REASONS, spelling
    for text in FREE_TEXT + ["", "off_topic because you insulted Jane", None, 3]:
        assert known_reason(text) is None, text
    counts = {"Off-Topic": 2, "off_topic": 1, FREE_TEXT[0]: 4, FREE_TEXT[1]: 1, NONE_GIVEN: 3}
    shown = public_reasons(counts, "--show-user-text")
    assert shown == {"(free text, hidden: --show-user-text)": 5, "off_topic": 3, NONE_GIVEN: 3}
    assert public_reasons(shown, "--show-user-text") == shown  # already public: unchanged


def _logs_with_free_text_reasons(tmp_path) -> Path:
    """Simulated BB3x logs (20 users) whose thumbs-down reasons are partly replaced by free text."""
    sim = tmp_path / "sim"
    simulate(preset_config("tiny", users=20, seed=0), sim, progress=False)
    for chunk in (sim / "logs").glob("*.jsonl"):
        lines = []
        for i, line in enumerate(chunk.read_text().splitlines()):
            conversation = json.loads(line)
            for message in conversation.get("message_history", []):
                if message.get("dislike_type"):
                    message["dislike_type"] = FREE_TEXT[i % 3] if i % 2 else message["dislike_type"]
            lines.append(conversation)
        write_lines(chunk, lines)
    return sim / "logs"


def test_inspect_hides_free_text_reasons_unless_asked(tmp_path):
    logs = _logs_with_free_text_reasons(tmp_path)
    assert any(t in logs.joinpath("release_data_00.jsonl").read_text() for t in FREE_TEXT[:2])
    runner = CliRunner()
    from rlhf_organic.cli import main

    assert runner.invoke(main, ["ingest", str(logs), "--out", str(tmp_path / "ds"), "-q"]).exit_code == 0
    for extra in ([], ["--json"]):
        hidden = runner.invoke(main, ["inspect", str(tmp_path / "ds"), *extra])
        assert hidden.exit_code == 0 and "(free text, hidden: --show-user-text)" in hidden.stdout
        assert not any(t in hidden.stdout for t in FREE_TEXT[:2]), hidden.stdout
        shown = runner.invoke(main, ["inspect", str(tmp_path / "ds"), "--show-user-text", *extra])
        assert shown.exit_code == 0 and any(t in shown.stdout for t in FREE_TEXT[:2])


def test_a_run_on_real_logs_prints_no_free_text_reason_anywhere(tmp_path):
    """Reasons of 40 characters or fewer used to be printed in report.md / .txt / .html; the stage marker
    kept them all, and a reward model with a reason head named its logits after them."""
    from rlhf_organic.pipeline import run_recipe
    from rlhf_organic.recipe import load_recipe

    logs = _logs_with_free_text_reasons(tmp_path)
    recipe_file = tmp_path / "files.yaml"
    recipe_file.write_text(f"name: files\ndata:\n  source: files\n  inputs: [{logs}]\ntrust: {{scheme: uniform}}\n"
                           "reward:\n  spec: tiny\n  override: {head: {reasons: true}, tiny: {hidden: 16, vocab_size: 300},"
                           " train: {epochs: 0.2}}\n"
                           f"output: {{dir: {tmp_path / 'run'}, report_to: none}}\n")
    logged: list[str] = []
    run_recipe(load_recipe(recipe_file), progress=False, log=logged.append, echo=logged.append)
    run = tmp_path / "run"
    shared = _shared_files(run) | {"reward/reward_model.json": (run / "reward" / "reward_model.json").read_text(),
                                   "reward/README.md": (run / "reward" / "README.md").read_text(),
                                   "log": "\n".join(logged)}
    assert "dataset/stage.json" in shared and "reward/metrics.json" in shared
    for name, text in shared.items():
        leaked = [t for t in FREE_TEXT[:2] if t in text]
        assert not leaked, f"{name} prints free-text reasons {leaked}"
    assert "(free text, hidden: output.show_user_text)" in shared["report.md"]
    assert "(free text, hidden" in shared["report.txt"]
    assert json.loads(shared["reward/reward_model.json"])["reasons"]  # the labels still train the reason head

    # Asked to, the same run (every stage reused) shows them in the report.
    run_recipe(load_recipe(recipe_file, ["output.show_user_text=true"]), resume=True, progress=False,
               log=lambda m: None, echo=lambda m: None)
    assert all(t in (run / "report.md").read_text(encoding="utf-8") for t in FREE_TEXT[:2])
