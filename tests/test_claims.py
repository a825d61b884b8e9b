"""Candidate claims across drivers (dse.study.claims): the database decides who trains what."""

from __future__ import annotations

import multiprocessing as mp
import pickle

from dse.study.claims import CandidateClaims, candidate_key


def _claim_all(url: str, offset: int, n: int, queue) -> None:
    claims = CandidateClaims(url, "s")
    won = [i for i in range(n) if claims.claim({"w": i, "e": i % 3}, offset + i) is None]
    queue.put(won)
    claims.close()


def claim_race(url: str, n: int = 60) -> list[list[int]]:
    """Two processes (each creating the claims table) claim the same ``n`` candidates of study
    ``s`` in ``url`` at once, as trials ``i`` and ``1000 + i``; returns what each one won."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(url, off, n, queue)) for off in (0, 1000)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return won


def test_two_processes_claiming_the_same_candidates_win_each_once(tmp_path):
    won = claim_race(f"sqlite:///{tmp_path / 'study.db'}")
    assert sorted(won[0] + won[1]) == list(range(60)), "each candidate is claimed by exactly one process"


def test_a_claim_names_its_holder_and_passes_on_only_from_the_holder(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    a, b = CandidateClaims(url, "s"), CandidateClaims(url, "s")
    cand = {"width_mult": 0.35, "expand_ratio": 6}
    assert a.claim(cand, 3) is None
    assert b.claim(cand, 7) == 3
    assert a.claim(cand, 3) is None, "the holder asking again still holds it"
    assert not b.take_over(cand, 5, 7), "a take-over naming the wrong holder is refused"
    assert b.take_over(cand, 3, 7)
    assert a.claim(cand, 9) == 7
    assert CandidateClaims(url, "other").claim(cand, 1) is None, "claims are per study"
    assert candidate_key({"a": 1, "b": 2}) == candidate_key({"b": 2, "a": 1})


def test_claims_pickle_without_their_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    a = CandidateClaims(url, "s")
    a.claim({"x": 1}, 0)
    b = pickle.loads(pickle.dumps(a))
    assert b.claim({"x": 1}, 4) == 0
