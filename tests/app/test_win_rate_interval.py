"""The blind-review win-rate interval holds the observed rate for every record, even at 0 and 1."""

import math

import pytest

from app.services.reviews import WinRate


@pytest.mark.parametrize("votes", range(1, 200))
def test_the_interval_holds_the_rate_at_every_vote_count(votes):
    for wins, ties in ((votes, 0), (0, 0), (0, votes), (votes // 2, votes % 2), (votes - 1, 1)):
        record = WinRate("adapter:1", "adapter:2", wins, ties, votes - wins - ties)
        low, high = record.interval()
        assert 0.0 <= low <= record.rate <= high <= 1.0, (wins, ties, votes, low, record.rate, high)


def test_all_wins_over_six_votes_reaches_one_and_no_wins_over_eleven_reaches_zero():
    # the two records CI met: rounding put the end a hair inside 1.0 and above 0.0
    assert WinRate("adapter:1", "adapter:2", 6, 0, 0).interval()[1] == 1.0
    assert WinRate("adapter:1", "adapter:2", 0, 0, 11).interval()[0] == 0.0


def test_no_votes_has_no_interval():
    low, high = WinRate("adapter:1", "adapter:2", 0, 0, 0).interval()
    assert math.isnan(low) and math.isnan(high)
