"""A real cluster: two Ray nodes, a PostgreSQL server, two drivers sharing one study (issue 7), and
the faults of a deployment: the database server restarting or staying down, a worker node dying.

Run by .ci/run as its own step (``pytest -m cluster``). It skips, saying why, when PostgreSQL's
Debian binaries (``/usr/lib/postgresql/*/bin``) or psycopg2 are missing.

Every process started here is stopped by its own id: each Ray node is one ``ray start --block`` in
a session of its own, killed with its process group, then any process left over that names this
cluster's temp dir is killed. Never ``ray stop``: it would also stop every other Ray on the machine
(a test suite or a search running beside this test).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE = str(96 * 2**20)
TARGET = 6

SPACE = {
    "name": "cluster",
    "trials": TARGET,
    "seed": 0,
    "sampler": "random",
    "budget": {},
    "resources": {"cpu": 1, "concurrent": 2},
    "data": {"dataset": "digits"},
    "train": {"epochs": 3},
    "space": {
        "backbone": {"arch": "mobilenetv2", "width": 0.125, "depth": {"int": [1, 2]}},
        "branches": {"placement": {"subset": [1, 2]}},
        # A continuous key: a config is trained once per study, and these tests count trained trials.
        "train": {"lr": {"float": [0.02, 0.1], "log": True}},
    },
}

# One driver, through the real command line (``cli.main``: one-line errors, exit codes) with the
# training replaced by FakeFit. The storage URL (with its password) comes through the environment,
# never argv, which Ray records as the job's entrypoint.
DRIVER = """\
import json, os, sys
import sdsearch.search.runner as runner
from sdsearch.cli import main
from sdsearch.space.space import parse_space
from sdsearch.search.testing import FakeFit

space = parse_space(json.loads(sys.argv[1]), source="cluster.yaml")
real_run = runner.run

def run(_path, **kwargs):
    fit = FakeFit(epoch_seconds=float(os.environ.get("SDSEARCH_TEST_EPOCH_SECONDS", "2")),
                  rendezvous=os.environ.get("SDSEARCH_TEST_RENDEZVOUS"))
    kwargs.update(storage=os.environ["SDSEARCH_TEST_STORAGE"], progress=False, fit_fn=fit)
    summary = real_run(space, **kwargs)
    print(summary)
    print("SUMMARY", json.dumps({"before": summary.trained_before, "trained": summary.trained,
                                 "counts": dict(summary.counts), "storage": summary.storage}))
    return summary

runner.run = run
sys.exit(main(["run", "cluster.yaml", "--address", sys.argv[2], *sys.argv[3:]]))
"""

# Waits until both nodes are alive; prints {"head_node": id, "worker_node": id}.
NODES = """\
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.time() + 60
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({k: n["NodeID"] for n in alive for k in ("head_node", "worker_node") if k in n["Resources"]}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of one ``ray start --block`` we started in a session of its own.

    (Its SIGTERM handler drains the node for up to 30 s first; the children fate-share anyway.)
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def kill_leftovers(marker: str) -> None:
    """Kill, by pid, processes whose command line names ``marker`` (this cluster's own temp dir)."""
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(cmdline.split("/")[2])
        with contextlib.suppress(OSError):
            if pid != os.getpid() and marker.encode() in Path(cmdline).read_bytes():
                os.kill(pid, signal.SIGKILL)


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin dir (``/usr/lib/postgresql/<major>/bin``), if installed."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL on 127.0.0.1 with a database and a password-protected user: yields the URL."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); apt-get install postgresql"
        )
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install -e '.[cluster]'")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="sdpg-"))
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    password = "pw" + secrets.token_hex(8)
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "admin", "-E", "UTF8",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
        subprocess.run([*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)  # fmt: skip
        started = True
        with contextlib.closing(
            psycopg2.connect(host=str(root), port=port, user="admin", dbname="postgres")
        ) as c:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(f"CREATE ROLE sd LOGIN PASSWORD '{password}'")
                cur.execute("CREATE DATABASE sdsearch OWNER sd")

        def stop() -> None:  # fast: the server ends every session, as a restart or a fail-over does
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"], check=True, capture_output=True,
                           timeout=90)  # fmt: skip

        def start() -> None:
            subprocess.run([*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                           check=True, capture_output=True, timeout=90)  # fmt: skip

        yield {"url": f"postgresql+psycopg2://sd:{password}@127.0.0.1:{port}/sdsearch", "password": password,
               "stop": stop, "start": start}  # fmt: skip
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(f"PostgreSQL did not start: {exc}\n{exc.stderr.decode(errors='replace')}\n{tail}")
    finally:
        if started:  # (a no-op when a test left it stopped)
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# -- Ray -----------------------------------------------------------------------------------------


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a worker node (1 CPU each) on this machine: yields the address and both node ids."""
    import ray

    assert not ray.is_initialized(), "cluster tests must not share the session's local Ray"
    temp = tempfile.mkdtemp(prefix="sdray-")  # short: Ray's unix sockets live under it
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--disable-usage-stats", "--num-cpus=1", f"--object-store-memory={OBJECT_STORE}",
              "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={temp}"]  # fmt: skip
    head_cmd = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                f"--dashboard-agent-listen-port={free_port()}", '--resources={"head_node": 1}', *common]  # fmt: skip
    worker_cmd = [RAY, "start", f"--address={address}", f"--dashboard-agent-listen-port={free_port()}",
                  '--resources={"worker_node": 1}', *common]  # fmt: skip
    logs = Path(temp)
    nodes: list[subprocess.Popen] = []

    def start_node(name: str, cmd: list[str]) -> subprocess.Popen:
        with (logs / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ray_env(),
                                    start_new_session=True)  # fmt: skip
        nodes.append(proc)
        return proc

    def node_ids() -> dict[str, str]:
        check = subprocess.run([PYTHON, "-c", NODES, address], capture_output=True, text=True, timeout=120,
                               env=ray_env())  # fmt: skip
        ids = json.loads(check.stdout.strip().splitlines()[-1]) if check.returncode == 0 else {}
        if set(ids) != {"head_node", "worker_node"}:
            starts = "\n".join(
                (logs / f"{n}.out").read_text(errors="replace")[-1500:] for n in ("head", "worker")
            )
            pytest.fail(f"the two Ray nodes did not come up: {ids} {check.stderr[-1500:]}\n{starts}")
        return ids

    try:
        wait_for_port(port, 60, start_node("head", head_cmd))
        start_node("worker", worker_cmd)
        cluster = {"address": address, "nodes": node_ids(), "temp": temp}

        def kill_worker() -> None:
            """The worker node dies at once: its ``ray start`` process group (raylet, workers) is killed."""
            kill_group(nodes[-1])

        def restart_worker() -> None:
            """A new worker node joins (fresh id), so later tests find two nodes again."""
            start_node("worker", worker_cmd)
            cluster["nodes"] = node_ids()

        cluster.update(kill_worker=kill_worker, restart_worker=restart_worker)
        yield cluster
    finally:
        for proc in reversed(nodes):
            kill_group(proc)
        kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


# -- the test ------------------------------------------------------------------------------------


def running_trials(engine, study: str = "cluster") -> int:
    """RUNNING trials of a study, read with plain SQL (0 before the first driver made the schema)."""
    return states(engine, study).count("RUNNING")


def states(engine, study: str) -> list[str]:
    """The states of a study's trials by number, read with plain SQL ([] while there is no schema)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    query = text(
        "SELECT t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE s.study_name = :name ORDER BY t.number"
    )
    try:
        with engine.connect() as conn:
            return [str(getattr(row[0], "name", row[0])) for row in conn.execute(query, {"name": study})]
    except SQLAlchemyError:
        return []


def heartbeats(engine, study: str) -> dict[int, object]:
    """number -> last heartbeat of a study's RUNNING trials (plain SQL; {} while there is no schema)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    query = text(
        "SELECT t.number, h.heartbeat FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE s.study_name = :name AND t.state = 'RUNNING'"
    )
    try:
        with engine.connect() as conn:
            return {int(n): beat for n, beat in conn.execute(query, {"name": study})}
    except SQLAlchemyError:
        return {}


def start_driver(tmp_path: Path, name: str, address: str, url: str, space: dict | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:  # fmt: skip
    """One driver process; its stdout goes to ``<name>.out`` and its stderr to ``<name>.err``."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / f"{name}.out"
    full_env = {**ray_env(), "SDSEARCH_TEST_STORAGE": url, **(env or {})}
    with out.open("wb") as f, out.with_suffix(".err").open("wb") as e:
        proc = subprocess.Popen([PYTHON, str(script), json.dumps(space or SPACE), address, *args], stdout=f,
                                stderr=e, env=full_env, cwd=tmp_path)  # fmt: skip
    return proc, out


def output(out: Path) -> str:
    """What a driver printed: stdout, then stderr."""
    return out.read_text() + out.with_suffix(".err").read_text()


def stop(drivers: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in drivers:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for(condition, proc: subprocess.Popen, out: Path, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the driver exited before {what}:\n{output(out)[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {seconds:g} s:\n{output(out)[-3000:]}"
        time.sleep(0.2)


def finished(url: str, study: str) -> dict[int, tuple[str, list[float] | None]]:
    """number -> (state, values) of a study's finished trials (the server must be up)."""
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    return {t.number: (t.state.name, t.values) for t in trials if t.state.is_finished()}


def test_two_drivers_share_one_study_on_two_nodes(postgres, ray_cluster, tmp_path):
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy import create_engine

    from sdsearch.store import attrs

    url, address = postgres["url"], ray_cluster["address"]
    engine = create_engine(url)
    drivers = []
    try:
        drivers.append(start_driver(tmp_path, "a", address, url))
        # The second driver joins while the first one's trials are RUNNING: it must leave them alone.
        deadline = time.monotonic() + 90
        while running_trials(engine) == 0:
            assert drivers[0][0].poll() is None, output(drivers[0][1])[-3000:]
            assert time.monotonic() < deadline, "the first driver never started a trial"
            time.sleep(0.2)
        drivers.append(start_driver(tmp_path, "b", address, url))
        for proc, out in drivers:
            proc.wait(150)
            assert proc.returncode == 0, output(out)[-3000:]
    finally:
        engine.dispose()
        stop(drivers)

    outputs = [output(out) for _, out in drivers]
    summaries = [json.loads(o.split("SUMMARY ", 1)[1].splitlines()[0]) for o in outputs]
    masked = url.replace(postgres["password"], "***")
    for printed, summary in zip(outputs, summaries):
        assert postgres["password"] not in printed
        assert summary["storage"] == masked and masked in printed
        assert "Traceback" not in printed  # e.g. a tell refused because the other driver failed the trial

    study = optuna.load_study(study_name="cluster", storage=url)
    trials = study.get_trials(deepcopy=False)
    stored = [t.state for t in trials]
    complete = [t for t in trials if attrs.outcome(t) is attrs.Outcome.COMPLETE]  # duplicates apart
    print(f"two drivers: {summaries}; states: {sorted(s.name for s in stored)}")
    assert TrialState.RUNNING not in stored and TrialState.WAITING not in stored
    # Nothing was failed or re-enqueued: neither driver took the other's live trials for orphans.
    assert not [t for t in trials if t.state == TrialState.FAIL], [t.user_attrs for t in trials]
    assert len(complete) >= TARGET
    # Together they may overshoot: each counts trained trials at its start and runs the missing ones.
    assert len(complete) == sum(TARGET - s["before"] for s in summaries)
    assert all(s["trained"] >= TARGET for s in summaries)
    nodes = {t.user_attrs[attrs.WORKER]["node"] for t in complete}
    assert nodes == set(ray_cluster["nodes"].values()), "trials should have run on both nodes"


# -- faults --------------------------------------------------------------------------------------


def fault_space(name: str, trials: int) -> dict:
    return {**SPACE, "name": name, "trials": trials}


def assert_one_line_error(err: str, password: str, *needles: str) -> str:
    """stderr ends with one error line holding every needle; no traceback, no password anywhere."""
    assert "Traceback" not in err and password not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    for needle in needles:
        assert needle in line, line
    return line


def stop_database_mid_study(postgres, engine, proc, out, study: str, *, complete: int) -> dict:
    """Wait for ``complete`` COMPLETE trials and two in flight, then stop the server; returns the
    finished trials as they stood (what must still be there afterwards)."""

    def ready() -> bool:
        now = states(engine, study)
        return now.count("COMPLETE") >= complete and now.count("RUNNING") >= 2

    wait_for(ready, proc, out, 120, f"{complete} trials complete and two in flight")
    engine.dispose()
    before = finished(postgres["url"], study)
    postgres["stop"]()
    return before


def assert_nothing_lost(url: str, engine, study: str, before: dict) -> dict:
    """Every trial finished before the fault is unchanged and none is left RUNNING; returns them all."""
    after = finished(url, study)
    assert all(after[n] == before[n] for n in before), (before, after)
    assert not running_trials(engine, study)
    return after


def test_database_restart_mid_study_is_ridden_out(postgres, ray_cluster, tmp_path):
    """The server stops for 15 s with two trials in flight: the driver waits for it, tells the trials
    that finished meanwhile once it is back, and reaches its target; nothing is lost or left RUNNING."""
    from sqlalchemy import create_engine

    from sdsearch.store import attrs

    url, address, study, target = postgres["url"], ray_cluster["address"], "restart", 6
    masked = url.replace(postgres["password"], "***")
    engine = create_engine(url, pool_pre_ping=True)
    drivers = [start_driver(tmp_path, "ride", address, url, fault_space(study, target))]
    proc, out = drivers[0]
    try:
        before = stop_database_mid_study(postgres, engine, proc, out, study, complete=2)
        time.sleep(15)
        postgres["start"]()
        proc.wait(180)
    finally:
        engine.dispose()
        stop(drivers)
    err = out.with_suffix(".err").read_text()
    print(f"database restart: rc {proc.returncode}; stderr:\n{err}")
    assert proc.returncode == 0, output(out)[-3000:]
    assert "Traceback" not in err and postgres["password"] not in output(out)
    assert f"{masked}: lost the study storage (OperationalError: " in err and "retrying for up to 60 s" in err
    assert f"{masked}: the study storage is back after" in err

    after = assert_nothing_lost(url, engine, study, before)
    assert [s for s, _ in after.values()].count("COMPLETE") == target == len(after), after
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.user_attrs.get(attrs.INTERRUPTED)]  # the in-flight ones were told
    print(f"database restart: {sorted(s for s, _ in after.values())}")


def test_database_that_stays_down_ends_the_driver_then_a_rerun_resumes(postgres, ray_cluster, tmp_path):
    """The server stops for good: the driver ends within its retry window plus a little, with one line
    naming the masked storage; once the server is back, a rerun fails and re-runs the trials that
    were in flight and reaches the target with every earlier trial intact."""
    import optuna
    from sqlalchemy import create_engine

    from sdsearch.store import attrs

    url, address, study, target = postgres["url"], ray_cluster["address"], "outage", 5
    masked = url.replace(postgres["password"], "***")
    engine = create_engine(url, pool_pre_ping=True)
    env = {"SDSEARCH_STORAGE_RETRY_SECONDS": "10"}
    drivers = [start_driver(tmp_path, "down", address, url, fault_space(study, target), env=env)]
    proc, out = drivers[0]
    started = False
    try:
        before = stop_database_mid_study(postgres, engine, proc, out, study, complete=1)
        stopped = time.monotonic()
        proc.wait(90)
        took = time.monotonic() - stopped
        postgres["start"]()
        started = True
        left_running = running_trials(engine, study)
        drivers.append(start_driver(tmp_path, "rerun", address, url, fault_space(study, target)))
        drivers[1][0].wait(180)
    finally:
        engine.dispose()
        if not started:
            postgres["start"]()
        stop(drivers)
    err = out.with_suffix(".err").read_text()
    print(
        f"database down: rc {proc.returncode} after {took:.1f} s, {left_running} left RUNNING; stderr:\n{err}"
    )
    assert proc.returncode == 1 and took < 10 + 40, (took, output(out)[-3000:])
    line = assert_one_line_error(err, postgres["password"], masked, "unreachable for",
                                 "run the same command to resume", "SDSEARCH_STORAGE_RETRY_SECONDS")  # fmt: skip
    assert line.startswith(masked), line
    assert left_running >= 1  # the store was gone: nothing could tell them

    rerun = drivers[1]
    assert rerun[0].returncode == 0, output(rerun[1])[-3000:]
    assert_nothing_lost(url, engine, study, before)
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    interrupted = [t for t in trials if t.user_attrs.get(attrs.INTERRUPTED)]
    assert len(interrupted) == left_running and all(t.state.name == "FAIL" for t in interrupted)
    for t in interrupted:  # failed at once by the rerun (same host, dead pid), not after 120 s of staleness
        retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == t.params
    assert sum(t.state.name == "COMPLETE" for t in trials) == target
    print(f"database down, then rerun: {sorted(t.state.name for t in trials)}")


def test_lost_worker_node_reruns_its_trial_on_the_head(postgres, ray_cluster, tmp_path):
    """The worker node dies with a trial on it: Ray re-runs that trial on the head, the store records
    the lost attempt naming the node, and the study reaches its target on the remaining node."""
    import optuna
    from sqlalchemy import create_engine

    from sdsearch.store import attrs

    url, address, study, target = postgres["url"], ray_cluster["address"], "nodeloss", 3
    head, worker = ray_cluster["nodes"]["head_node"], ray_cluster["nodes"]["worker_node"]
    engine = create_engine(url)
    # Trials train four epochs of 4 s. The searcher records a heartbeat for each result it gets, so
    # once both trials in flight (one per node: 1 CPU each) have beaten again since they started,
    # the worker's trial has reported an epoch (Tune hands results over up to an epoch late), and
    # still has at least one to go.
    env = {"SDSEARCH_TEST_EPOCH_SECONDS": "4"}
    space = {**fault_space(study, target), "train": {"epochs": 4}}
    drivers = [start_driver(tmp_path, "nodeloss", address, url, space, env=env)]
    proc, out = drivers[0]
    try:
        wait_for(lambda: len(heartbeats(engine, study)) >= 2, proc, out, 120, "two trials in flight")
        first = heartbeats(engine, study)
        wait_for(lambda: all(heartbeats(engine, study).get(n, first[n]) != first[n] for n in first),
                 proc, out, 60, "a result from both trials in flight")  # fmt: skip
        ray_cluster["kill_worker"]()
        proc.wait(240)
    finally:
        engine.dispose()
        stop(drivers)
        ray_cluster["restart_worker"]()
    print(f"lost node: rc {proc.returncode}; output:\n{output(out)[-2000:]}")
    assert proc.returncode == 0, output(out)[-3000:]
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    restarted = [t for t in trials if t.user_attrs.get(attrs.RESTARTS)]
    assert len(restarted) == 1, [t.user_attrs for t in trials]
    (lost,) = restarted[0].user_attrs[attrs.RESTARTS]
    print(f"lost node: trial {restarted[0].number} {restarted[0].state.name}, restarts {lost}")
    assert lost["node"] == worker and lost["epoch"] >= 1
    assert f"Ray node {worker[:12]}" in lost["reason"] and "was lost mid-trial" in lost["reason"]
    assert restarted[0].state.name == "COMPLETE" and restarted[0].user_attrs[attrs.WORKER]["node"] == head
    assert not running_trials(engine, study)
    assert sum(t.state.name == "COMPLETE" for t in trials) == target
