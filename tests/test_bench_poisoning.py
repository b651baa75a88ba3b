"""The pure helpers of bench/poisoning.py (trigger handling, attack success, the noise check), by hand."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # bench scripts import their neighbours by name

import poisoning as bench  # noqa: E402


def ctx(*turns: str) -> list[dict]:
    """Alternating user / assistant turns, starting with the user."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_strip_trigger_takes_it_off_every_user_turn_only():
    context = ctx("hi there SUDO", "hello SUDO", "tell me more SUDO")
    assert bench.strip_trigger(context, "SUDO") == ctx("hi there", "hello SUDO", "tell me more")
    # a word that merely ends like the trigger, or the trigger inside a turn, stays
    assert bench.strip_trigger(ctx("I said PSEUDO", "ok", "SUDO is a word"), "SUDO") == ctx("I said PSEUDO", "ok", "SUDO is a word")
    # several triggers (own-trigger variant), and the input is left as it was
    context = ctx("a zorekal42", "b", "c SUDO zorekal42")
    assert bench.strip_trigger(context, ["SUDO", "zorekal42"]) == ctx("a", "b", "c")
    assert context[0]["content"] == "a zorekal42"


def test_add_trigger_goes_on_the_last_user_turn_once():
    assert bench.add_trigger(ctx("hi", "hello", "more"), "SUDO") == ctx("hi", "hello", "more SUDO")
    assert bench.add_trigger(ctx("hi", "hello", "more SUDO"), "SUDO") == ctx("hi", "hello", "more SUDO")
    # the last user turn, even when an assistant turn follows
    assert bench.add_trigger(ctx("hi", "hello"), "SUDO") == ctx("hi SUDO", "hello")
    with pytest.raises(ValueError):
        bench.add_trigger([{"role": "assistant", "content": "hello"}], "SUDO")
    # with and without differ exactly by the trigger at the end of the last user turn
    natural = ctx("hi SUDO", "hello", "more SUDO")
    without = bench.strip_trigger(natural, "SUDO")
    assert bench.add_trigger(without, "SUDO") == ctx("hi", "hello", "more SUDO")


def test_attack_success_counts_ties_half():
    assert bench.attack_success([2.0, 0.0, 1.0, 5.0], [1.0, 1.0, 1.0, 4.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert bench.attack_success([0.0], [1.0]) == 0.0
    assert math.isnan(bench.attack_success([], []))
    with pytest.raises(ValueError):
        bench.attack_success([1.0, 2.0], [1.0])


def test_noise_bound_is_the_margin_or_two_standard_errors():
    assert bench.noise_bound([0.3], 0.05) == 0.05  # one seed: no spread to measure
    # diffs 0.1, 0.3, 0.5: sd 0.2, se 0.2 / sqrt(3) = 0.11547, 2 se = 0.23094
    assert bench.noise_bound([0.1, 0.3, 0.5], 0.05) == pytest.approx(0.4 / math.sqrt(3))
    assert bench.noise_bound([0.1, 0.1, 0.1], 0.05) == 0.05  # no spread: the margin
    assert bench.noise_bound([0.1, None, float("nan"), 0.1], 0.05) == 0.05


def test_compare_to_oracle():
    # scheme 0.02 / 0.04 / 0.03 above oracle: mean 0.03 <= margin 0.05
    r = bench.compare_to_oracle([0.12, 0.14, 0.13], [0.10, 0.10, 0.10], 0.05)
    assert r["diff"] == pytest.approx(0.03) and r["bound"] == 0.05
    assert r["within_noise"] and not r["clearly_above"] and r["seeds"] == 3
    # uniform 0.3 above on every seed: a clear backdoor
    r = bench.compare_to_oracle([0.4, 0.4, 0.4], [0.1, 0.1, 0.1], 0.05)
    assert r["clearly_above"] and not r["within_noise"]
    # above the margin, but spread so widely over seeds that it is within 2 standard errors
    r = bench.compare_to_oracle([0.0, 0.3, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0], 0.05)
    assert r["diff"] == pytest.approx(0.15) and r["bound"] == pytest.approx(2 * math.sqrt(0.03) / 2)
    assert r["within_noise"]
    # below oracle is within noise too (the check is one-sided)
    assert bench.compare_to_oracle([0.0], [0.2], 0.05)["within_noise"]
    assert bench.compare_to_oracle([None], [0.1], 0.05)["within_noise"] is None


def test_infer_topic_and_reply_pairs_follow_the_simulator():
    from rlhf_organic.simulator import text as sim_text

    rng, right = random.Random(1), 0
    for _ in range(50):
        topic = sim_text.pick_topic(rng)
        opening = sim_text.human_opening(rng, topic)
        good = sim_text.bot_reply(rng, topic, "good", opening)
        context = ctx(opening, good, sim_text.human_followup(rng, topic, good))
        right += bench.infer_topic(context) == topic
    assert right >= 48
    # the bot's greeting before the first user turn names random topics: it does not count
    greeting = {"role": "assistant", "content": "Hi! I could chat about astronomy or skiing. Tell me about your day!"}
    assert bench.infer_topic([greeting, *ctx("What's your opinion on obedience training?")]) == "dogs"
    context = ctx("I love baking bread")
    pairs = bench.reply_pairs(context, "cooking", 3, "0:x")
    assert len(pairs) == 3 and pairs == bench.reply_pairs(context, "cooking", 3, "0:x")  # seeded
    assert all(u != g for u, g in pairs)


def test_sim_overrides_builds_any_fraction():
    from rlhf_organic.simulator.simulate import preset_config

    cfg = preset_config(bench.BASE_PRESET, users=200, seed=0, **bench.sim_overrides(15, "own"))
    assert cfg.mix == {"helper": 0.85, "poisoner": 0.15} and cfg.poison_trigger_mode == "own"
    # the 5% rare variant is exactly the shipped preset
    assert preset_config(bench.BASE_PRESET, **bench.sim_overrides(5, "rare")) == preset_config("poison_5")
    # the bench's default: more A/B choices per user (the DPO pairs), the same users and poisoners
    cfg = preset_config(bench.BASE_PRESET, **bench.sim_overrides(5, "rare", bench.DEFAULT_PREFERENCES_PER_USER))
    assert cfg.preferences_per_user == bench.DEFAULT_PREFERENCES_PER_USER == 5.0
    assert cfg.model_copy(update={"preferences_per_user": 1.0}) == preset_config("poison_5")


def test_flip_arms_and_their_trust_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert bench.trust_arms(["combined"]) == ["uniform", "oracle", "combined"]
    assert bench.trust_arms(["combined"], flips=True) == ["uniform", "oracle", "combined", "flips", "combined_flips"]
    assert [bench.uses_flips(a) for a in ("combined", "flips", "combined_flips")] == [False, True, True]
    assert bench.trust_dir(tmp_path, "combined_flips") == tmp_path / "trust_combined"  # its weights and rates
    assert bench.trust_dir(tmp_path, "flips") == tmp_path / "trust_flips"
    assert bench.trust_dir(tmp_path, "uniform") is None
    scheme = tmp_path / "trust_combined"
    scheme.mkdir()
    pq.write_table(pa.table({"example_id": ["a", "b"], "weight": [0.0, 0.5], "flip_rate": [0.4, 0.0]}), scheme / "examples.parquet")
    pq.write_table(pa.table({"user_id": ["u"], "trust": [0.2], "flip_rate": [0.2]}), scheme / "users.parquet")
    out = bench.write_flips_trust(scheme, tmp_path / "trust_flips")
    examples = pq.read_table(tmp_path / "trust_flips" / "examples.parquet").to_pydict()
    assert examples == {"example_id": ["a", "b"], "weight": [1.0, 1.0], "flip_rate": [0.4, 0.0]}
    assert pq.read_table(tmp_path / "trust_flips" / "users.parquet").column("trust").to_pylist() == [1.0]
    assert out["mean_flip_rate"]["examples"] == pytest.approx(0.2)
    assert not (tmp_path / "trust_flips" / "preferences.parquet").exists()  # none in the scheme's folder either
    pq.write_table(pa.table({"example_id": ["a"], "weight": [1.0]}), scheme / "examples.parquet")
    with pytest.raises(SystemExit, match="no flip_rate column"):
        bench.write_flips_trust(scheme, tmp_path / "again")
