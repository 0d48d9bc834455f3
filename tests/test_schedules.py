"""hub.schedules: a schedule is valid exactly when APScheduler's trigger can be built, and the refusal says why and
what a schedule looks like; the spec refuses a bad one at load and the poller runs a good one."""

from __future__ import annotations

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from hub.schedules import check_schedule, make_trigger, parse_duration
from hub.spec import BatchSpec


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("*/15 8-18 * * 1-5", CronTrigger),
        ("  0 3 * * *  ", CronTrigger),
        ("0 0 * JAN-MAR mon-fri", CronTrigger),
        ("0 0 last * *", CronTrigger),
        ("30s", IntervalTrigger),
        ("500ms", IntervalTrigger),
        ("2w", IntervalTrigger),
        (5, IntervalTrigger),
        (2.5, IntervalTrigger),
    ],
)
def test_a_valid_schedule_is_kept_as_written_and_builds_its_trigger(value, kind):
    assert check_schedule(value) == value
    assert isinstance(make_trigger(value), kind)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("61 * * * *", "the last value (61)"),
        ("* * * *", "is not a duration"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("0 0 * 13 *", "13"),
        ("0s", "must be positive"),
        (-1, "is not a duration"),
        ("abc", "is not a duration"),
        ("", "is not a duration"),
    ],
)
def test_an_invalid_schedule_is_refused_with_the_reason_and_an_example(value, words):
    with pytest.raises(ValueError) as info:
        check_schedule(value)
    assert words in str(info.value)
    assert "use a duration like 30s or cron like '*/15 8-18 * * 1-5'" in str(info.value)


def test_durations():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5m") == 90
    assert parse_duration(" 2h ") == 7200
    assert parse_duration(30) == 30.0


def test_the_spec_refuses_a_bad_batch_schedule_and_the_poller_runs_a_good_one():
    with pytest.raises(ValueError, match="the last value \\(61\\)"):
        BatchSpec(schedule="61 * * * *")
    assert isinstance(make_trigger(BatchSpec(schedule="*/5 * * * *").schedule), CronTrigger)
