"""The training loop's cadence: when it validates and when it saves."""

from __future__ import annotations

import math

from vaegan_jax import cadence


def test_validation_follows_its_period_the_stage_end_and_a_stop() -> None:
    assert [cadence.validate_now(epoch, 5, 2, False) for epoch in range(1, 6)] == [False, True, False, True, True]
    assert cadence.validate_now(1, 5, 2, stopping=True)


def test_only_a_better_score_improves() -> None:
    assert cadence.improves(0.2, None) and cadence.improves(0.3, 0.2)
    assert not cadence.improves(0.2, 0.2) and not cadence.improves(0.1, 0.2) and not cadence.improves(None, 0.2)
    # A blank reconstruction's PCC is NaN: neither a best itself nor one that later scores fail to beat.
    assert not cadence.improves(math.nan, None) and not cadence.improves(math.nan, 0.2)


def test_saving_follows_new_bests_its_period_the_stage_end_and_a_stop() -> None:
    # The schedule of test_training's run: bests at epochs 1 and 3, a checkpoint every 4 epochs, 5 in the stage.
    scores, best, saved = [0.2, 0.1, 0.3, 0.28, 0.25], None, []
    for epoch, score in enumerate(scores, start=1):
        improved = cadence.improves(score, best)
        best = score if improved else best
        if cadence.save_now(epoch, 5, 4, improved, stopping=False):
            saved.append(epoch)
    assert saved == [1, 3, 4, 5]
    assert cadence.save_now(2, 5, 4, improved=False, stopping=True)


def test_an_epoch_hands_its_states_on_only_when_nothing_is_done_after_it() -> None:
    # Validation every 2 epochs, a checkpoint every 3, 7 in the stage: 1 and 5 go straight on; 7 ends the stage.
    assert [cadence.hands_on(epoch, 7, 2, 3) for epoch in range(1, 8)] == [True, False, False, False, True, False, False]


def test_stage_offsets_count_the_epochs_of_the_stages_before() -> None:
    assert cadence.stage_offsets((3, 0, 2)) == [0, 3, 3]
    assert cadence.stage_offsets((20, 10, 10)) == [0, 20, 30]
