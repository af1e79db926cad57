"""The replay job (``keeper.replay.job``): typed options in, a typed outcome out, the same
replay ``keeper replay`` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.errors import ConfigError
from keeper.replay.job import ReplayJob, run_replay
from keeper.replay.selection import select_cores
from tests.replay.scenario import PARAMS, record_live
from tests.replay.test_replay_verify import export, recorded_intents


async def test_a_verified_job_on_an_export_derives_every_recorded_decision(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    job = ReplayJob(ndjson=path, verify=True, jobs=1, manifest_out=tmp_path / "replay.json")
    job.check()
    outcome = await run_replay(job)
    assert outcome.result.entries == len(log.entries)
    assert outcome.result.stopped == "end"
    assert outcome.named == [(outcome.named[0][0], PARAMS)]
    assert outcome.live is not None and outcome.start == "0-0" and outcome.jobs == 1
    report = outcome.verify_report()
    assert report is not None and report.ok
    assert report.decisions == len(recorded_intents(log)) == len(outcome.result.derived)
    assert report.agreed == report.decisions
    m = outcome.replay_manifest(report)
    assert (m.entries, m.decisions, m.verified) == (len(log.entries), report.decisions, report.summary())


async def test_an_explained_job_holds_the_accounts_explainer(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    account = recorded_intents(log)[0][1].decision.account
    outcome = await run_replay(ReplayJob(ndjson=path, explain=account))
    assert outcome.explainer(account).explanation().decision is not None


async def test_an_account_the_log_never_named_is_refused_with_the_closest_names(tmp_path: Path) -> None:
    log, _, _ = await record_live()
    path = await export(log, tmp_path)
    account = recorded_intents(log)[0][1].decision.account
    outcome = await run_replay(ReplayJob(ndjson=path, explain=account + "x"))
    with pytest.raises(ConfigError, match=f"no account '{account}x'.*did you mean {account}"):
        outcome.explainer(account + "x")


@pytest.mark.parametrize(("job", "message"), [
    (ReplayJob(to="yesterday"), "--to: 'yesterday' is not a log entry id"),
    (ReplayJob(plot="a"), "--plot: needs --out"),
    (ReplayJob(archive=Path("x")), "--archive: only with --redis-url"),
    (ReplayJob(at="1-0"), "--at/--json: only with --explain"),
    (ReplayJob(ndjson=Path("/nonexistent.ndjson")), "--ndjson: no such file"),
])
def test_check_refuses_options_that_do_not_go_together(job: ReplayJob, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        job.check()


def test_select_cores_without_a_manifest_needs_a_profile() -> None:
    with pytest.raises(ConfigError, match="--profile"):
        select_cores(None)
    [(name, params)] = select_cores(None, profile="generic-perp", params=("cap_count=3",))
    assert params.profile == "generic-perp" and params.mode == "paper" and name
    with pytest.raises(ConfigError, match="--param: unknown parameter 'nope'"):
        select_cores(None, profile="generic-perp", params=("nope=1",))
