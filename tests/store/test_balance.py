"""The pure shard balance (``keeper.store.membership.balance``): every shard owned exactly once,
an even spread (16 over 3 is 6/5/5), the same answer whatever the order it is given, and little
movement when a member leaves or joins."""

from __future__ import annotations

import random
import statistics

from hypothesis import given
from hypothesis import strategies as st

from keeper.store.membership import balance, shard_names

members_st = st.lists(st.text("abcdefghij-0123456789", min_size=1, max_size=8), min_size=1,
                      max_size=12, unique=True)
count_st = st.integers(min_value=0, max_value=80)


def owners(assignment: dict[str, list[str]]) -> dict[str, str]:
    return {s: m for m, shards in assignment.items() for s in shards}


@given(members_st, count_st)
def test_every_shard_has_exactly_one_owner_and_the_spread_is_even(members: list[str],
                                                                   count: int) -> None:
    shards = shard_names(count)
    got = balance(members, shards)
    assert set(got) == set(members)
    flat = [s for mine in got.values() for s in mine]
    assert sorted(flat, key=int) == shards  # each exactly once
    floor, extra = divmod(count, len(members))
    sizes = sorted(len(v) for v in got.values())
    assert sizes == [floor] * (len(members) - extra) + [floor + 1] * extra
    for mine in got.values():
        assert mine == sorted(mine, key=int)  # in the order of the shards given


@given(members_st, count_st, st.randoms(use_true_random=False))
def test_the_answer_depends_on_the_sets_only(members: list[str], count: int,
                                             rnd: random.Random) -> None:
    shards = shard_names(count)
    shuffled = members[:]
    rnd.shuffle(shuffled)
    assert balance(members, shards) == balance(shuffled + members[:1], shards)


@given(members_st.filter(lambda m: len(m) >= 2), count_st)
def test_a_leaving_member_moves_all_its_shards(members: list[str], count: int) -> None:
    shards = shard_names(count)
    before = owners(balance(members, shards))
    after = owners(balance(members[1:], shards))
    theirs = {s for s, m in before.items() if m == members[0]}
    assert all(after[s] != members[0] for s in shards)
    moved = {s for s in shards if before[s] != after[s]}
    assert theirs <= moved
    # A stateless balance cannot always leave the others' shards where they are: a member's cap
    # rises, so it may take a shard it prefers from another (hypothesis finds 3 extra moves of 7
    # shards over 7 members). How few move in practice is measured below, not bounded here.


def test_sixteen_shards_over_three_members_are_six_five_five() -> None:
    got = balance(["keeper-a", "keeper-b", "keeper-c"], shard_names(16))
    assert sorted(len(v) for v in got.values()) == [5, 5, 6]


def test_movement_when_one_of_three_leaves_sixteen_shards_is_nearly_minimal() -> None:
    rnd = random.Random(21)
    extra = []
    for _ in range(500):
        members = [f"keeper-{rnd.getrandbits(32):08x}" for _ in range(3)]
        before = owners(balance(members, shard_names(16)))
        after = owners(balance(members[1:], shard_names(16)))
        theirs = sum(1 for m in before.values() if m == members[0])
        extra.append(sum(before[s] != after[s] for s in before) - theirs)
    # measured: 0 extra moves in ~58% of draws, 1 in ~37%, at most 3 (of 16)
    assert statistics.mean(extra) < 0.8 and max(extra) <= 4


def test_a_joining_member_takes_its_share_and_few_more_move() -> None:
    rnd = random.Random(7)
    for _ in range(200):
        members = [f"keeper-{rnd.getrandbits(32):08x}" for _ in range(4)]
        before = owners(balance(members[:3], shard_names(16)))
        got = balance(members, shard_names(16))
        after = owners(got)
        moved = sum(before[s] != after[s] for s in before)
        assert len(got[members[3]]) == 4
        assert moved <= len(got[members[3]]) + 4


def test_no_member_no_owner() -> None:
    assert balance([], shard_names(4)) == {}
    assert balance(["a", "b", "c"], []) == {"a": [], "b": [], "c": []}
