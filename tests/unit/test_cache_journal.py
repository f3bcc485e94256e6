"""The journal of removals Redis still owes: bounded, masking, never forgetting too early."""

from __future__ import annotations

import asyncio

import pytest

from telemetry_infra.cache.fallback.journal import OutageJournal


class FakeRedis:
    """Records the removals the journal applies; ``fail`` makes the next one raise."""

    def __init__(self) -> None:
        self.deleted: list[list[str]] = []
        self.cleared: list[str] = []
        self.fail = False
        self.during: list[bool] = []
        self.journal: OutageJournal | None = None

    async def delete_many(self, keys):
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("down")
        if self.journal is not None:
            self.during.append(all(self.journal.masks(key) for key in keys))
        self.deleted.append(list(keys))
        return len(keys)

    async def clear(self, pattern):
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("down")
        self.cleared.append(pattern)
        return 0


def test_a_full_journal_refuses_new_entries_and_counts_them():
    journal = OutageJournal(capacity=2)
    assert journal.record_keys(["a", "b"]) is True
    assert journal.record_keys(["c"]) is False
    assert journal.record_pattern("x:*") is False
    assert journal.record_keys(["a"]) is True  # already recorded: takes no room
    assert journal.overflowed == 2
    assert journal.masks("a") and not journal.masks("c")


def test_a_batch_is_recorded_whole_or_not_at_all():
    journal = OutageJournal(capacity=3)
    assert journal.record_keys(["a", "b"]) is True
    assert journal.record_keys(["c", "d"]) is False
    assert not journal.masks("c") and len(journal) == 2


def test_patterns_mask_the_keys_they_match():
    journal = OutageJournal()
    journal.record_pattern("ns:user:*")
    assert journal.masks("ns:user:7") and not journal.masks("ns:order:7")


async def test_entries_stay_masked_until_their_removal_is_done():
    journal, redis = OutageJournal(), FakeRedis()
    redis.journal = journal
    journal.record_keys(["a", "b"])
    await journal.replay(redis.delete_many, redis.clear)
    assert redis.during == [True]  # still masked while UNLINK was in flight
    assert not journal.pending and not journal.masks("a")


async def test_a_key_recorded_again_during_its_removal_is_removed_again():
    journal, redis = OutageJournal(), FakeRedis()
    journal.record_keys(["a"])

    async def delete_many(keys):
        if not redis.deleted:
            journal.record_keys(["a"])  # a write of "a" was refused meanwhile
        return await redis.delete_many(keys)

    await journal.replay(delete_many, redis.clear)
    assert redis.deleted == [["a"], ["a"]]
    assert not journal.pending


async def test_a_failed_replay_keeps_every_entry():
    journal, redis = OutageJournal(), FakeRedis()
    journal.record_keys(["a"])
    journal.record_pattern("p:*")
    redis.fail = True
    with pytest.raises(ConnectionError):
        await journal.replay(redis.delete_many, redis.clear)
    assert journal.masks("a") and journal.masks("p:1") and len(journal) == 2


def test_settle_forgets_only_entries_recorded_before_the_write():
    journal = OutageJournal()
    journal.record_keys(["a"])
    since = journal.seq
    journal.record_keys(["b"])
    journal.settle(["a", "b"], since)
    assert not journal.masks("a") and journal.masks("b")


def test_masks_is_answered_while_another_thread_records_a_pattern():
    """The sync view asks ``masks`` from its callers' threads while a loop thread may record
    or replay patterns: a pattern recorded mid-lookup must not break the lookup."""
    journal = OutageJournal(10)
    journal.record_pattern("ns:a*")
    seq, matcher = journal._patterns["ns:a*"]

    def matcher_interrupted_by_another_thread(key: str) -> bool:
        journal.record_pattern("ns:b*")  # what a thread switch at this point may do
        return matcher(key)

    journal._patterns["ns:a*"] = (seq, matcher_interrupted_by_another_thread)
    assert journal.masks("ns:zzz") is False
    assert journal.masks("ns:b1") is True
