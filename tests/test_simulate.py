"""The simulator: deterministic, the mix it was asked for, each user type behaving as specified."""

import random

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rlhf_organic.data.ingest import ingest
from rlhf_organic.simulator.simulate import PRESETS, USER_TYPES, SimConfig, _user_types, preset_config, simulate


def _run(tmp_path, name="sim", **settings):
    cfg = preset_config(settings.pop("preset", "tiny"), **settings)
    result = simulate(cfg, tmp_path / name, progress=False)
    users = pq.read_table(result.out / "ground_truth.parquet").to_pylist()
    examples = pq.read_table(result.out / "ground_truth_examples.parquet").to_pylist()
    return result, users, examples


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, _, _ = _run(tmp_path, "a", seed=7, files=2, gzip=True)
    b, _, _ = _run(tmp_path, "b", seed=7, files=2, gzip=True)
    c, _, _ = _run(tmp_path, "c", seed=8, files=2, gzip=True)
    names = sorted(p.name for p in (a.out / "logs").iterdir())
    assert names == ["preferences.jsonl", "release_data_00.jsonl.gz", "release_data_01.jsonl.gz"]
    for name in names:
        assert (a.out / "logs" / name).read_bytes() == (b.out / "logs" / name).read_bytes()
    assert (a.out / "logs" / names[1]).read_bytes() != (c.out / "logs" / names[1]).read_bytes()
    for gt in ("ground_truth.parquet", "ground_truth_examples.parquet", "ground_truth_preferences.parquet"):
        assert pq.read_table(a.out / gt).equals(pq.read_table(b.out / gt))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_give_exact_mix_proportions(preset):
    cfg = preset_config(preset, users=1000)
    types = _user_types(random.Random(0), cfg)
    for t in USER_TYPES:
        assert types.count(t) == round(cfg.mix.get(t, 0) * 1000)


def test_odd_user_counts_are_split_by_largest_remainder():
    types = _user_types(random.Random(1), preset_config("troll_50", users=101))
    assert sorted((types.count("helper"), types.count("troll"))) == [50, 51]
    realistic = preset_config("realistic")
    assert sum(v for k, v in realistic.mix.items() if k != "helper") == pytest.approx(0.30)


def test_labels_per_user_and_feedback_rate(tmp_path):
    result, users, examples = _run(tmp_path, preset="helpers_only", users=300, feedback_rate=0.25)
    labels = [u["n_labels"] for u in users]
    mean = sum(labels) / len(labels)
    std = (sum((x - mean) ** 2 for x in labels) / len(labels)) ** 0.5
    assert 9.5 < mean < 10.5 and 1.5 < std < 2.6
    labelled = sum(e["thumbs"] is not None for e in examples)
    assert 0.18 < labelled / len(examples) <= 0.26


def _by_type(users, examples):
    types = {u["user_id"]: u["user_type"] for u in users}
    out = {}
    for e in examples:
        if e["thumbs"] is not None:
            out.setdefault(types[e["user_id"]], []).append(e)
    return out


def test_each_user_type_labels_as_specified(tmp_path):
    mix = {t: 1 / len(USER_TYPES) for t in USER_TYPES}
    result, users, examples = _run(tmp_path, users=700, mix=mix, helper_noise=0.05, corruption_rate=0.8)
    labels = _by_type(users, examples)

    def corrupted(t):
        return sum(e["corrupted"] for e in labels[t]) / len(labels[t])

    assert corrupted("helper") < 0.08
    assert 0.75 < corrupted("troll") < 0.85 and 0.75 < corrupted("master_troll") < 0.85
    assert 0.45 < sum(e["thumbs"] == 1 for e in labels["lazy_troll"]) / len(labels["lazy_troll"]) < 0.55
    assert all(e["thumbs"] == 1 for e in labels["safe_troll"])
    assert all(e["thumbs"] == -1 for e in labels["unsafe_troll"])
    assert all(e["thumbs"] == 1 and e["quality"] in ("unsafe", "rude") for e in labels["gaslight_troll"])
    assert {e["conversation_kind"] for e in labels["master_troll"]} == {"subtle"}
    assert {e["conversation_kind"] for e in labels["gaslight_troll"]} == {"gaslight"}
    assert all(u["is_troll"] == (u["user_type"] != "helper") for u in users)


def test_gaslight_users_are_visible_to_safety_flags_and_plain_trolls_are_not(tmp_path):
    result, users, _ = _run(tmp_path, users=400, mix={"helper": 0.5, "troll": 0.25, "gaslight_troll": 0.25})
    ds = tmp_path / "ds"
    ingest([str(result.out / "logs")], ds, log=lambda m: None, progress=False)
    table = pq.read_table(ds / "users.parquet").to_pylist()
    types = {u["user_id"]: u["user_type"] for u in users}

    def flagged_share(t):
        rows = [u for u in table if types[u["user_id"]] == t]
        return sum(u["n_adversarial_conversations"] for u in rows) / sum(u["n_conversations"] for u in rows)

    assert flagged_share("gaslight_troll") > 0.8
    assert flagged_share("helper") < 0.1 and flagged_share("troll") < 0.1


def test_ground_truth_joins_the_ingested_dataset(tmp_path):
    result, users, examples = _run(tmp_path, preset="realistic", users=120)
    ds = tmp_path / "ds"
    summary = ingest([str(result.out / "logs")], ds, log=lambda m: None, progress=False)
    assert summary["rejected"] == 0 and summary["users"] == 120
    assert summary["messages"] == result.counts["messages"]
    ingested = {r["example_id"]: r["thumbs"] for r in pq.read_table(ds / "examples.parquet").to_pylist()}
    assert len(ingested) == summary["examples"] == len(examples)
    assert all(ingested[e["example_id"]] == e["thumbs"] for e in examples)
    prefs = pq.read_table(result.out / "ground_truth_preferences.parquet")
    assert summary["preferences"] == prefs.num_rows > 0
    ingested_prefs = pq.read_table(ds / "preferences.parquet")
    assert set(ingested_prefs.column("preference_id").to_pylist()) == set(prefs.column("preference_id").to_pylist())


def test_preference_choices_follow_user_type(tmp_path):
    result, users, _ = _run(tmp_path, users=300, mix={"helper": 0.5, "troll": 0.5}, preferences_per_user=3)
    prefs = pq.read_table(result.out / "ground_truth_preferences.parquet").to_pylist()
    types = {u["user_id"]: u["user_type"] for u in users}
    for t, low, high in (("helper", 0.9, 1.0), ("troll", 0.1, 0.3)):
        rows = [p for p in prefs if types[p["user_id"]] == t]
        assert low <= sum(p["correct"] for p in rows) / len(rows) <= high


def test_texts_vary(tmp_path):
    result, _, _ = _run(tmp_path, users=100)
    texts = pq.read_table(result.out / "ground_truth_examples.parquet")
    ds = tmp_path / "ds"
    ingest([str(result.out / "logs")], ds, log=lambda m: None, progress=False)
    responses = pq.read_table(ds / "examples.parquet").column("response")
    assert pc.count_distinct(responses).as_py() > 0.9 * len(responses)
    assert texts.num_rows == len(responses)


def test_config_validation():
    with pytest.raises(ValueError, match="shares must sum to 1"):
        SimConfig(mix={"helper": 0.4})
    with pytest.raises(ValueError, match="exchanges_max"):
        SimConfig(exchanges_min=5, exchanges_max=2)
    with pytest.raises(ValueError, match="unknown preset 'realistc' \\(did you mean 'realistic'\\?\\)"):
        preset_config("realistc")


def test_existing_simulation_needs_overwrite(tmp_path):
    from rlhf_organic.errors import UserError

    _run(tmp_path, "x", users=5, files=3)
    with pytest.raises(UserError, match="already holds a simulation"):
        _run(tmp_path, "x", users=5)
    simulate(preset_config("tiny", users=5, files=1), tmp_path / "x", overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "x" / "logs").iterdir()) == ["preferences.jsonl", "release_data_00.jsonl"]


def test_simulation_is_moved_in_when_complete_and_overwrite_keeps_other_files(tmp_path):
    from rlhf_organic.simulator.simulate import preset_config, simulate

    out = tmp_path / "sim"
    simulate(preset_config("tiny", users=12, files=3), out, progress=False)
    (out / "notes.txt").write_text("mine")
    simulate(preset_config("tiny", users=5, files=1), out, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["preferences.jsonl", "release_data_00.jsonl"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "simulation.json").is_file()
    assert not list(tmp_path.glob(".*partial*"))
