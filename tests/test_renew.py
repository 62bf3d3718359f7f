"""Automatic renewal: scheduled at a fraction of the lifetime, with jitter that spreads a fleet."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import wait_threads_gone

from ergo_py import gen
from ergo_py.gen.renew import RenewSchedule, retry_after
from ergo_py.lib import CertificateAuthority

NAME = "a@localhost"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("renew CA")


def test_schedule_lands_at_the_fraction_of_the_lifetime(ca: CertificateAuthority) -> None:
    start = datetime.now(UTC)
    cert = ca.issue(NAME, valid_for=timedelta(days=90), not_before=start)
    due = RenewSchedule(at=2 / 3, jitter=0).due(cert, start, random.Random(1))
    assert abs((due - (start + timedelta(days=60))).total_seconds()) < 1


def test_jitter_spreads_twenty_managers_over_the_window(ca: CertificateAuthority) -> None:
    """A fleet issued at one moment renews across the window, not at one instant."""
    start = datetime.now(UTC)
    schedule = RenewSchedule(at=2 / 3, jitter=0.1)
    certs = [ca.issue(f"n{i}@localhost", not_before=start) for i in range(20)]
    rand = random.Random(20)
    dues = sorted(schedule.due(c, start, rand) for c in certs)
    low, high = schedule.window(certs[0])
    assert all(low <= d <= high for d in dues)
    assert len(set(dues)) == 20
    # Spread over most of the window, and no crowd: each fifth of it holds a few at most.
    assert (dues[-1] - dues[0]) > 0.6 * (high - low)
    width = (high - low) / 5
    buckets = [
        sum(1 for d in dues if low + k * width <= d < low + (k + 1) * width) for k in range(5)
    ]
    assert max(buckets) <= 10


def test_a_certificate_applied_past_its_due_moment_is_not_renewed_at_once(
    ca: CertificateAuthority,
) -> None:
    """Backdated or late: renew at the same fraction of what is left (no renewal storm)."""
    start = datetime.now(UTC) - timedelta(hours=9)
    cert = ca.issue(NAME, valid_for=timedelta(hours=10), not_before=start)
    now = datetime.now(UTC)
    due = RenewSchedule(at=0.5, jitter=0).due(cert, now, random.Random(0))
    assert now < due < cert.not_after
    assert abs((due - (now + (cert.not_after - now) / 2)).total_seconds()) < 1


def test_schedule_arguments_are_checked() -> None:
    for at, jitter in ((0, 0), (1, 0), (0.5, 0.5), (0.9, 0.2), (0.5, -0.1)):
        with pytest.raises(gen.ErrIncorrect):
            RenewSchedule(at, jitter)


def test_retry_after_is_a_tenth_of_the_time_left_within_bounds(ca: CertificateAuthority) -> None:
    now = datetime.now(UTC)
    cert = ca.issue(NAME, valid_for=timedelta(seconds=100), not_before=now)
    assert retry_after(cert, now) == pytest.approx(10, abs=1)
    assert retry_after(cert, now + timedelta(seconds=200)) == 0.5
    long = ca.issue(NAME, valid_for=timedelta(days=30), not_before=now)
    assert retry_after(long, now) == 300


def test_twenty_managers_renew_through_the_ca_spread_over_the_window(
    ca: CertificateAuthority,
) -> None:
    """Live: each manager renews once, inside its window (generous bounds), at spread moments."""
    before = set(threading.enumerate())
    lifetime = timedelta(seconds=4)
    start = datetime.now(UTC)
    managers = [
        gen.create_cert_manager(ca.issue(f"n{i}@localhost", valid_for=lifetime, not_before=start))
        for i in range(20)
    ]
    renewed: dict[int, float] = {}
    lock = threading.Lock()
    for i, m in enumerate(managers):

        def record(state: gen.CertState, i: int = i) -> None:
            with lock:
                renewed.setdefault(i, time.time())

        m.subscribe(record)
        m.set_renew(ca.renewer(f"n{i}@localhost", valid_for=timedelta(hours=1)), 0.5, 0.25)
    try:
        deadline = time.monotonic() + 8
        while len(renewed) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(renewed) == 20
        offsets = sorted(t - start.timestamp() for t in renewed.values())
        # The window is 1 s .. 3 s after issue (0.5 ± 0.25 of 4 s); allow for the clock
        # truncating not_before to the second and a busy machine.
        assert offsets[0] > -0.5
        assert offsets[-1] < 4.0
        assert offsets[-1] - offsets[0] > 0.5
        for m in managers:
            r = m.renewer()
            assert r is not None and r.renewals == 1 and r.last_error is None
            assert m.version == 2
    finally:
        for m in managers:
            m.close()
    assert wait_threads_gone(before) == []


def test_a_failed_renewal_is_retried_and_reported(ca: CertificateAuthority) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    m = gen.create_cert_manager(ca.issue(NAME, valid_for=timedelta(seconds=3), not_before=start))
    rejected: list[str] = []
    m.add_listener(lambda old, new, err: rejected.append(str(err)) if new is None else None)
    calls = {"n": 0}

    def flaky() -> gen.Certificate:
        calls["n"] += 1
        if calls["n"] == 1:
            return ca.issue("someone-else@localhost")  # refused by validation
        return ca.issue(NAME)

    m.expect_node_name(NAME)
    m.set_renew(flaky, 0.5, 0)
    try:
        deadline = time.monotonic() + 6
        while m.version < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.version == 2
        assert calls["n"] == 2
        assert rejected and rejected[0].startswith("node_name")
    finally:
        m.close()
