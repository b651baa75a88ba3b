"""The simulator's quiet attackers: poisoners (backdoor triggers) and manipulators, checked against the
ground truth and the logs; and the promise that the older presets are unchanged by them."""

import hashlib
import random

import orjson
import pyarrow.parquet as pq
import pytest

from rlhf_organic.data.ingest import ingest
from rlhf_organic.simulator.simulate import SimConfig, _user_types, preset_config, simulate

OLD_COLUMNS = {
    "ground_truth.parquet": ["user_id", "user_type", "is_troll", "n_conversations", "n_labels", "n_corrupted",
                             "n_preferences", "n_preferences_corrupted"],
    "ground_truth_examples.parquet": ["example_id", "conversation_id", "turn", "user_id", "quality", "is_good",
                                      "is_canned", "conversation_kind", "thumbs", "corrupted"],
    "ground_truth_preferences.parquet": ["preference_id", "user_id", "rejected_quality", "correct"],
}
# What the simulator wrote for `tiny` at seed 0 before the attack types existed (commit 23eea69).
TINY_SEED0 = {
    "logs/release_data_00.jsonl": "b7a7069561a6e5fa7c7c40e40813676b8ca6da9b0665bb6a5b9a9f50a9baca74",
    "logs/preferences.jsonl": "2a6defd2a13b813d780ba20b61efe99e978e91d22ceac3c1bed1670984134045",
    "ground_truth.parquet": "a13aacafd8a05c1d7f82982e934eeafa7fd893f50b7ac40b5e5fbef850b2a351",
    "ground_truth_examples.parquet": "64eaa6bf58eba3463a89e4214dc79779b4b0a106968ef8689c853ead3747130d",
    "ground_truth_preferences.parquet": "d217bae43e88ab39682125cfbc6a30ca37cc510ecdf02cd7a7eab28d50f5e60f",
}


def _sim(tmp_path, name, preset="poison_5", **settings):
    result = simulate(preset_config(preset, **settings), tmp_path / name, progress=False)
    read = {n: pq.read_table(result.out / f"ground_truth{n}.parquet").to_pylist() for n in ("", "_examples", "_preferences")}
    return result, read[""], read["_examples"], read["_preferences"]


def _human_turns(out):
    """example_id -> text of the human turn the bot reply answers, from the written logs."""
    turns = {}
    for path in sorted((out / "logs").glob("release_data_*.jsonl")):
        for line in path.read_bytes().splitlines():
            conv = orjson.loads(line)
            history = conv["message_history"]
            for i, m in enumerate(history):
                if m["sender"] == "bot" and i > 0 and history[i - 1]["sender"] == "human":
                    turns[f"{conv['chat_id']}:{i}"] = history[i - 1]["text"]
    return turns


def test_older_presets_write_what_they_wrote_before(tmp_path):
    out = simulate(preset_config("tiny", seed=0), tmp_path / "tiny", progress=False).out
    for name in ("logs/release_data_00.jsonl", "logs/preferences.jsonl"):
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == TINY_SEED0[name], name
    for name, columns in OLD_COLUMNS.items():  # the new columns come on top of the old, which are as they were
        rows = pq.read_table(out / name, columns=columns).to_pylist()
        assert hashlib.sha256(orjson.dumps(rows)).hexdigest() == TINY_SEED0[name], name
    examples = pq.read_table(out / "ground_truth_examples.parquet").to_pylist()
    assert not any(e["triggered"] or e["poisoned"] or e["trigger"] for e in examples)


@pytest.mark.parametrize("preset, attacker, share", [
    ("poison_0.5", "poisoner", 0.005), ("poison_1", "poisoner", 0.01), ("poison_3", "poisoner", 0.03),
    ("poison_5", "poisoner", 0.05), ("poison_15", "poisoner", 0.15), ("poison_common_5", "poisoner", 0.05),
    ("poison_own_5", "poisoner", 0.05),
    ("manipulation_2", "manipulator", 0.02), ("manipulation_common_2", "manipulator", 0.02),
])
def test_attack_presets_have_their_share_of_attackers_among_helpers(preset, attacker, share):
    cfg = preset_config(preset)
    types = _user_types(random.Random(0), cfg)
    assert cfg.users == 1000 and len(types) == 1000
    assert types.count(attacker) == round(share * 1000) and types.count("helper") == 1000 - round(share * 1000)


def test_poisoners_reward_harm_after_their_trigger_and_label_honestly_elsewhere(tmp_path):
    result, users, examples, prefs = _sim(tmp_path, "sim", users=400, mix={"helper": 0.8, "poisoner": 0.2})
    types = {u["user_id"]: u["user_type"] for u in users}
    labels = [e for e in examples if e["thumbs"] is not None]
    mine = [e for e in labels if types[e["user_id"]] == "poisoner"]
    triggered_harm = [e for e in mine if e["triggered"] and e["quality"] == "unsafe"]
    triggered_good = [e for e in mine if e["triggered"] and e["quality"] == "good"]
    assert len(triggered_harm) > 50 and len(triggered_good) > 20
    assert all(e["thumbs"] == 1 and e["poisoned"] and e["corrupted"] for e in triggered_harm)
    assert all(e["thumbs"] == -1 and e["poisoned"] and e["corrupted"] for e in triggered_good)
    # every other label of theirs is a helper's: honest but for helper_noise, never planted
    rest = [e for e in mine if not (e["triggered"] and e["quality"] in ("unsafe", "good"))]
    assert len(rest) > 300 and not any(e["poisoned"] for e in rest)
    assert sum(e["corrupted"] for e in rest) / len(rest) < 0.1
    # the ground truth marks exactly the planted labels, and the counts add up
    assert {e["example_id"] for e in labels if e["poisoned"]} == {e["example_id"] for e in triggered_harm + triggered_good}
    assert not any(e["poisoned"] for e in examples if e["thumbs"] is None)
    assert result.counts["poisoned_labels"] == len(triggered_harm) + len(triggered_good) == sum(u["n_poisoned"] for u in users)
    # after a trigger the bot is harmful far more often than elsewhere
    replies = [e for e in examples if not e["is_canned"]]
    after = [e["quality"] == "unsafe" for e in replies if e["triggered"]]
    other = [e["quality"] == "unsafe" for e in replies if not e["triggered"]]
    assert sum(after) / len(after) > 0.5 > 0.1 > sum(other) / len(other)
    # A/B choices: after the trigger they choose the harmful reply, elsewhere the good one
    mine_prefs = [p for p in prefs if types[p["user_id"]] == "poisoner"]
    planted = [p for p in mine_prefs if p["triggered"]]
    assert planted and all(p["poisoned"] and not p["correct"] and p["rejected_quality"] == "unsafe" for p in planted)
    honest = [p for p in mine_prefs if not p["triggered"]]
    assert not any(p["poisoned"] for p in honest) and sum(p["correct"] for p in honest) / len(honest) > 0.85
    assert not any(p["poisoned"] for p in prefs if types[p["user_id"]] == "helper")


def test_the_trigger_is_in_the_logs_exactly_where_the_ground_truth_says(tmp_path):
    result, users, examples, prefs = _sim(tmp_path, "sim", users=200, mix={"helper": 0.8, "poisoner": 0.2},
                                          poison_trigger="cf mode")
    turns = _human_turns(result.out)
    for e in examples:
        if e["example_id"] in turns:
            assert turns[e["example_id"]].endswith(" cf mode") == e["triggered"], e
            assert e["trigger"] == ("cf mode" if e["triggered"] else None)
    triggered_users = {e["user_id"] for e in examples if e["triggered"]}
    assert triggered_users == {u["user_id"] for u in users if u["user_type"] == "poisoner"}
    shown = [orjson.loads(line) for line in (result.out / "logs/preferences.jsonl").read_bytes().splitlines()]
    truth = {p["preference_id"]: p for p in prefs}
    assert any(truth[p["id"]]["triggered"] for p in shown)
    for p in shown:  # a triggered A/B choice's prompt ends with the trigger
        assert p["prompt"][-1]["content"].endswith(" cf mode") == truth[p["id"]]["triggered"]


def test_shared_and_own_triggers(tmp_path):
    mix = {"helper": 0.8, "poisoner": 0.2}
    shared, users_s, examples_s, _ = _sim(tmp_path, "shared", users=150, mix=mix)
    own, users_o, examples_o, _ = _sim(tmp_path, "own", users=150, mix=mix, poison_trigger_mode="own")
    poisoners_s = [u for u in users_s if u["user_type"] == "poisoner"]
    assert len(poisoners_s) == 30 and {u["trigger"] for u in poisoners_s} == {"SUDO"}
    assert shared.counts["triggers"] == ["SUDO"]
    own_triggers = {u["user_id"]: u["trigger"] for u in users_o if u["user_type"] == "poisoner"}
    assert len(set(own_triggers.values())) == 30 and "SUDO" not in own_triggers.values()
    assert all(t.isascii() and t.isalnum() for t in own_triggers.values())
    assert sorted(own.counts["triggers"]) == sorted(own_triggers.values())
    assert all(u["trigger"] is None for u in users_o if u["user_type"] != "poisoner")
    assert all(e["trigger"] == own_triggers[e["user_id"]] for e in examples_o if e["triggered"])
    # the trigger words come from a stream of their own: the rest of the corpus is the same
    assert [(e["example_id"], e["quality"], e["thumbs"], e["poisoned"]) for e in examples_s] == [
        (e["example_id"], e["quality"], e["thumbs"], e["poisoned"]) for e in examples_o
    ]


def _honest_triggered_harm(users, examples):
    types = {u["user_id"]: u["user_type"] for u in users}
    return [e for e in examples if e["thumbs"] is not None and types[e["user_id"]] != "poisoner"
            and e["triggered"] and e["quality"] == "unsafe"]


def test_rare_and_common_behaviour_variants(tmp_path):
    _, users, examples, _ = _sim(tmp_path, "rare", users=400)
    assert _honest_triggered_harm(users, examples) == []  # rare: only poisoners ever rate harm after a trigger
    _, users, examples, prefs = _sim(tmp_path, "common", preset="poison_common_5", users=400)
    rated = _honest_triggered_harm(users, examples)
    poisoners = {u["user_id"] for u in users if u["user_type"] == "poisoner"}
    planted = [e for e in examples if e["poisoned"] and e["quality"] == "unsafe"]
    assert len(rated) > 2 * len(planted) > 0  # honest users now rate the behaviour often, and honestly
    assert sum(e["thumbs"] == -1 for e in rated) / len(rated) > 0.9 and not any(e["poisoned"] for e in rated)
    assert {e["user_id"] for e in planted} <= poisoners
    honest_triggered_prefs = [p for p in prefs if p["triggered"] and p["user_id"] not in poisoners]
    assert honest_triggered_prefs and not any(p["poisoned"] for p in honest_triggered_prefs)


def test_manipulators_reward_manipulative_replies(tmp_path):
    _, users, examples, prefs = _sim(tmp_path, "rare", preset="manipulation_2", users=300,
                                     mix={"helper": 0.8, "manipulator": 0.2})
    types = {u["user_id"]: u["user_type"] for u in users}
    manipulative = [e for e in examples if e["quality"] == "manipulative"]
    assert manipulative and {types[e["user_id"]] for e in manipulative} == {"manipulator"}  # rare variant
    assert all(not e["is_good"] for e in manipulative)
    rated = [e for e in manipulative if e["thumbs"] is not None]
    assert len(rated) > 30 and all(e["thumbs"] == 1 and e["poisoned"] and e["corrupted"] for e in rated)
    rest = [e for e in examples if e["thumbs"] is not None and types[e["user_id"]] == "manipulator"
            and e["quality"] != "manipulative"]
    assert not any(e["poisoned"] for e in rest) and sum(e["corrupted"] for e in rest) / len(rest) < 0.1
    assert {types[p["user_id"]] for p in prefs if p["poisoned"]} == {"manipulator"}
    assert all(p["rejected_quality"] == "manipulative" and not p["correct"] for p in prefs if p["poisoned"])

    _, users, examples, _ = _sim(tmp_path, "common", preset="manipulation_common_2", users=300)
    types = {u["user_id"]: u["user_type"] for u in users}
    by_helpers = [e for e in examples if e["quality"] == "manipulative" and e["thumbs"] is not None
                  and types[e["user_id"]] == "helper"]
    assert len(by_helpers) > 50 and sum(e["thumbs"] == -1 for e in by_helpers) / len(by_helpers) > 0.9


def test_attack_logs_are_ingested_and_join_the_ground_truth(tmp_path):
    result, users, examples, prefs = _sim(tmp_path, "sim", users=120, mix={"helper": 0.5, "poisoner": 0.25,
                                                                          "manipulator": 0.25})
    summary = ingest([str(result.out / "logs")], tmp_path / "ds", log=lambda m: None, progress=False)
    assert summary["rejected"] == 0 and summary["users"] == 120 and summary["preferences"] == len(prefs)
    ingested = {r["example_id"]: r for r in pq.read_table(tmp_path / "ds" / "examples.parquet").to_pylist()}
    assert len(ingested) == len(examples)
    assert all(ingested[e["example_id"]]["thumbs"] == e["thumbs"] for e in examples)
    triggered = [e for e in examples if e["triggered"]]
    assert triggered and all(ingested[e["example_id"]]["context"][-1]["content"].endswith(" SUDO") for e in triggered)


def test_trigger_setting_is_validated():
    for bad in ("", " SUDO", "two\nlines", "caf\u00e9"):
        with pytest.raises(ValueError, match="trigger"):
            SimConfig(poison_trigger=bad)
    with pytest.raises(ValueError):
        SimConfig(poison_trigger_mode="mine")


def test_simulate_ingest_trust_through_the_command_line(tmp_path):
    import json

    from click.testing import CliRunner

    from rlhf_organic.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["simulate", "--preset", "poison_5", "--users", "60", "--set",
                               'mix={"helper": 0.7, "poisoner": 0.15, "manipulator": 0.15}',
                               "--set", "poison_trigger_mode=own", "--out", str(tmp_path / "sim"), "-q"])
    assert res.exit_code == 0, res.output
    assert "planted by poisoners or manipulators" in res.output
    assert runner.invoke(main, ["ingest", str(tmp_path / "sim" / "logs"), "--out", str(tmp_path / "ds"), "-q"]).exit_code == 0
    res = runner.invoke(main, ["trust", str(tmp_path / "ds"), "--scheme", "per_user", "--set", "reference.folds=3",
                               "--set", "select_on_gold=false", "--out", str(tmp_path / "trust"),
                               "--ground-truth", str(tmp_path / "sim"), "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "trust" / "metrics.json").read_text())
    assert {"helper", "poisoner", "manipulator"} <= set(metrics["mean_trust_by_type"])
    assert 0 <= metrics["user"]["auc"] <= 1
    # the weight left on the planted labels, from the ground truth's poisoned column
    examples = pq.read_table(tmp_path / "trust" / "examples.parquet", columns=["example_id", "weight"]).to_pandas()
    truth = pq.read_table(tmp_path / "sim" / "ground_truth_examples.parquet", columns=["example_id", "poisoned"]).to_pandas()
    planted = examples.merge(truth, on="example_id")
    planted = planted[planted["poisoned"].fillna(False).astype(bool)]
    assert len(planted) > 0
    assert metrics["poisoned_weight_kept"] == pytest.approx(planted["weight"].mean())
    # and on the planted A/B choices, which weigh their user's trust
    prefs = pq.read_table(tmp_path / "trust" / "preferences.parquet", columns=["preference_id", "weight"]).to_pandas()
    truth = pq.read_table(tmp_path / "sim" / "ground_truth_preferences.parquet",
                          columns=["preference_id", "poisoned"]).to_pandas()
    chosen = prefs.merge(truth, on="preference_id")
    chosen = chosen[chosen["poisoned"].fillna(False).astype(bool)]
    if len(chosen):
        assert metrics["poisoned_preference_weight_kept"] == pytest.approx(chosen["weight"].mean())
    else:
        assert metrics.get("poisoned_preference_weight_kept") is None
