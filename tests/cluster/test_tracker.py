"""SeqTracker: the watermark of a document's store sequence a bridge has seen."""

from bridge.cluster.tracker import SeqTracker


def test_ranges_in_order_advance_the_watermark():
    t = SeqTracker(3)
    assert t.note(3, 5, 0.0) and t.seen == 5 and not t.has_gap
    assert t.note(5, 6, 0.0) and t.seen == 6


def test_a_range_past_a_gap_waits_until_the_gap_closes():
    t = SeqTracker(0)
    assert t.note(4, 6, 1.0)  # rows 1-4 are someone's message still on its way
    assert t.seen == 0 and t.has_gap and t.gap_since == 1.0
    assert t.note(6, 9, 2.0) and t.seen == 0
    assert t.note(0, 4, 3.0)
    assert t.seen == 9 and not t.has_gap and t.gap_since is None


def test_old_and_repeated_ranges_bring_nothing():
    t = SeqTracker(10)
    assert not t.note(2, 7, 0.0)
    assert not t.note(8, 10, 0.0)
    assert t.seen == 10 and not t.has_gap


def test_reading_the_store_closes_gaps_it_covers_and_keeps_later_ones():
    t = SeqTracker(0)
    t.note(2, 3, 0.0)
    t.note(5, 8, 0.0)
    t.healed(4)  # the store was read up to 4: the range (2, 3] is in it
    assert t.seen == 4 and t.has_gap, "(5, 8] still waits for row 5"
    t.healed(5)
    assert t.seen == 8 and not t.has_gap


def test_an_empty_range_at_the_watermark_is_not_a_gap():
    t = SeqTracker(4)
    assert not t.note(4, 4, 0.0)
    assert not t.has_gap


def test_a_range_the_store_never_had_is_forgotten_after_a_read():
    t = SeqTracker(0)
    t.note(10**9, 10**9 + 1, 0.0)  # forged, or corrupt: no such rows
    pending = t.pending()
    t.note(5, 6, 0.0)  # noted after the read began: may be real
    t.healed(3, pending)
    assert t.seen == 3 and t.pending() == {5}, "the forged range is gone, the later one waits"
