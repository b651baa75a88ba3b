"""Per-user label-flip rates: the estimate by hand, the trust folder's columns, and the clear error where a
scheme estimates none."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from rlhf_organic.cli import main
from rlhf_organic.reward.data import RewardDataError, load_reward_data
from rlhf_organic.trust.flips import CAP, flip_rates


def _labels(disagreements: list[int], per_user: int = 10):
    """Labels of users 0..n-1, ``per_user`` each, the first ``disagreements[u]`` of user u against the reference."""
    p, label, user = [], [], []
    for u, wrong in enumerate(disagreements):
        for i in range(per_user):
            p.append(0.9)
            label.append(0 if i < wrong else 1)
            user.append(u)
    return np.array(p), np.array(label), np.array(user)


def test_flip_rates_by_hand():
    p, label, user = _labels([1, 1, 5])
    trust = np.array([1.0, 1.0, 0.2, 1.0])  # user 3 has no labels
    rates, r = flip_rates(p, label, user, 4, trust, prior_strength=10)
    assert r == pytest.approx(0.1)  # the trusted users' labels disagree with the reference 2 times in 20
    # user 2: d = (5 + 10 x 0.1) / (10 + 10) = 0.3; e = (0.3 - 0.1) / (1 - 0.2) = 0.25
    assert rates == pytest.approx([0.0, 0.0, 0.25, 0.0])


def test_flip_rates_are_capped_and_zero_without_a_usable_reference():
    p, label, user = _labels([0, 0, 40], per_user=40)
    rates, _ = flip_rates(p, label, user, 3, np.array([1.0, 1.0, 0.0]))
    assert rates[2] == CAP and rates[0] == 0
    p, label, user = _labels([6, 6])  # the reference disagrees with most trusted labels: nothing to measure against
    rates, r = flip_rates(p, label, user, 2, np.ones(2))
    assert r >= 0.5 and not rates.any()
    anonymous, _ = flip_rates(np.array([0.9]), np.array([1]), np.array([-1]), 2, np.ones(2))
    assert not anonymous.any()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flips")
    runner = CliRunner()
    sim = ["simulate", "--preset", "realistic", "--users", "80", "--set", "preferences_per_user=2", "--out", str(root / "sim"), "-q"]
    for args in (sim,
                 ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"],
                 ["trust", str(root / "ds"), "--scheme", "combined", "--set", "reference.folds=3", "--ground-truth", str(root / "sim"),
                  "--out", str(root / "trust"), "-q"],
                 ["trust", str(root / "ds"), "--scheme", "uniform", "--out", str(root / "uniform"), "-q"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    return root


def test_the_trust_folder_holds_each_users_flip_rate_on_every_label(folders):
    users = pq.read_table(folders / "trust" / "users.parquet").to_pandas().set_index("user_id")
    assert users["flip_rate"].between(0, CAP).all()
    for file in ("examples.parquet", "preferences.parquet"):
        table = pq.read_table(folders / "trust" / file).to_pandas()
        assert table["flip_rate"].to_numpy() == pytest.approx(users.loc[table["user_id"], "flip_rate"].to_numpy())
    metrics = json.loads((folders / "trust" / "metrics.json").read_text())["flip_rates"]
    by_type = metrics["mean_by_type"]
    assert 0 < metrics["reference_disagreement"] < 0.5
    assert by_type["troll"] > 3 * by_type["helper"]  # trolls flip 80% of their labels, helpers none on purpose
    data = load_reward_data(folders / "ds", folders / "trust", flip_rates=True)
    assert data.point["flip"].between(0, CAP).all() and len(data.pairs["flip"]) == len(data.pairs)


def test_a_scheme_without_the_reference_has_no_flip_rates_and_says_so(folders):
    assert "flip_rate" not in pq.read_schema(folders / "uniform" / "users.parquet").names
    with pytest.raises(RewardDataError, match=r"examples.parquet has no flip_rate column.*combined"):
        load_reward_data(folders / "ds", folders / "uniform", flip_rates=True)
    with pytest.raises(RewardDataError, match="come from a trust folder"):
        load_reward_data(folders / "ds", None, flip_rates=True)
