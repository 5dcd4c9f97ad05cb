"""Win-rate math on hand-computed cases, and on a result AlpacaEval printed."""

import math

import pytest

from bft.training.winrate import length_controlled, win_rate


def test_a_hand_computed_case_with_a_tie_and_dropped_values():
    # model wins twice, loses once, one tie; None and 3 are not preferences; 0 is an old-style tie
    result = win_rate([2, 2, 1, 1.5, None, 3])
    # (1 + 1 + 0 + 0.5) / 4 = 0.625; deviations .375 .375 -.625 -.125 -> sum of squares .6875
    assert result["win_rate"] == pytest.approx(62.5)
    assert result["standard_error"] == pytest.approx(math.sqrt(0.6875 / 3) / 2 * 100)  # 23.9357
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"]) == (2, 1, 1)
    assert result["n_total"] == 4 and result["n_dropped"] == 2
    assert win_rate([2, 0])["n_draws"] == 1


def test_the_figures_alpacaeval_printed_for_44_wins_in_100():
    # an AlpacaEval run (public issue thread): win_rate 44.0, standard_error 4.988876515698589, 44/56/0 of 100
    result = win_rate([2] * 44 + [1] * 56)
    assert result["win_rate"] == pytest.approx(44.0)
    assert result["standard_error"] == pytest.approx(4.988876515698589, abs=1e-12)
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"], result["n_total"]) == (44, 56, 0, 100)


def test_soft_preferences_count_their_value_and_round_for_the_discrete_rate():
    result = win_rate([1.9, 1.2, 1.5])
    assert result["win_rate"] == pytest.approx((0.9 + 0.2 + 0.5) / 3 * 100)
    assert result["discrete_win_rate"] == pytest.approx((1 + 0 + 0.5) / 3 * 100)


def test_no_preferences_give_nan_not_a_crash():
    result = win_rate([None, None])
    assert math.isnan(result["win_rate"]) and result["n_dropped"] == 2


def test_length_control_removes_a_judge_that_only_rewards_length():
    # the model is longer on 75 of 100 instructions, and the judge prefers whichever output is longer
    model = [500] * 75 + [100] * 25
    reference = [300] * 100
    preferences = [2 if m > r else 1 for m, r in zip(model, reference, strict=True)]
    raw = win_rate(preferences)["win_rate"]
    controlled = length_controlled(preferences, model, reference)
    assert raw == pytest.approx(75.0)
    assert 35 < controlled["lc_win_rate"] < 65 and controlled["length_coefficient"] > 0


def test_length_control_leaves_a_length_blind_judge_alone():
    model = ([500] * 4 + [100] * 4) * 12
    reference = [300] * 96
    preferences = [2, 2, 2, 1] * 24  # 75 % wins among the longer outputs and among the shorter ones
    controlled = length_controlled(preferences, model, reference)
    assert controlled["lc_win_rate"] == pytest.approx(75.0, abs=1.0)
