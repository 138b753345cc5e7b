"""Fault tolerance: a killed or interrupted driver, broken storages, masked passwords."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import optuna
import pytest
from optuna.trial import TrialState

from sdsearch.cli import main
from sdsearch.core.errors import StudyError
from sdsearch.search.runner import run
from sdsearch.search.testing import FakeFit
from sdsearch.space.space import parse_space
from sdsearch.store import attrs
from sdsearch.store.storage import open_storage
from sdsearch.store.urls import mask_url

DRIVER = """
import json, sys
from sdsearch.search.runner import run
from sdsearch.space.space import parse_space
from sdsearch.search.testing import FakeFit
doc, address = json.loads(sys.argv[1]), sys.argv[2]
run(parse_space(doc, source="faults.yaml"), address=address, fit_fn=FakeFit(epoch_seconds=float(sys.argv[3])), progress=False)
"""
EPOCH_SECONDS = 2.0  # the stopped driver's trials run 3 epochs of this (6 s): slack on a busy machine


def space_doc(tmp_path, trials=6):
    return {
        "name": "faults",
        "storage": f"sqlite:///{tmp_path}/faults.db",
        "trials": trials,
        "sampler": "random",
        "resources": {"cpu": 1, "concurrent": 2},
        "train": {"epochs": 3},
        "space": {
            "backbone": {"arch": "mobilenetv2", "width": 0.125, "depth": 1},
            "train": {"lr": {"float": [0.01, 0.1], "log": True}},
        },
    }


def start_driver(doc, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(doc), address, str(EPOCH_SECONDS)],
        env=env,
        # A shell runs background jobs with SIGINT ignored, and children inherit that: a suite started
        # with `&` would then test a driver that cannot be interrupted. The driver gets the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_complete(storage, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"driver exited early:\n{proc.stdout.read()}")
        try:  # read-only sqlite: never race the driver's schema creation
            with sqlite3.connect(f"file:{storage[len('sqlite:///') :]}?mode=ro", uri=True) as conn:
                (done,) = conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()
            if done >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.3)
    pytest.fail("no progress from the driver")


def wait_for_mid_trial(storage, proc, concurrent=2, left=2.0, timeout=90):
    """Numbers of the RUNNING trials, at a moment when a stop lands in the middle of all of them.

    That is: all ``concurrent`` slots are taken (so the searcher is not asked for another trial),
    every trial was handed to Ray (its ``cost``, the searcher's last write, is stored) and has at
    least ``left`` seconds of its epochs to go (so none is being told). Elsewhere, inside the
    searcher's ``suggest`` or ``on_trial_complete``, a ctrl-c can leave a trial RUNNING.
    """
    query = (
        "SELECT t.number, t.datetime_start, EXISTS (SELECT 1 FROM trial_user_attributes a "
        "WHERE a.trial_id = t.trial_id AND a.key = ?) FROM trials t WHERE t.state = 'RUNNING'"
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"driver exited early:\n{proc.stdout.read()}")
        try:  # read-only, as in wait_for_complete; Optuna stores datetime.now() (local, naive)
            with sqlite3.connect(f"file:{storage[len('sqlite:///') :]}?mode=ro", uri=True) as conn:
                rows = conn.execute(query, (attrs.COST,)).fetchall()
        except sqlite3.Error:
            rows = []
        now = datetime.now()
        ages = [(now - datetime.fromisoformat(start)).total_seconds() for _, start, _ in rows]
        if (
            len(rows) == concurrent
            and all(handed for _, _, handed in rows)
            and max(ages) < 3 * EPOCH_SECONDS - left  # Ray starts a trial after it is asked
        ):
            time.sleep(0.1)  # suggest() ends microseconds after storing the cost
            return [n for n, _, _ in rows]
        time.sleep(0.05)
    pytest.fail("never two trials in mid-run")


def snapshot(storage):
    study = optuna.load_study(study_name="faults", storage=storage)
    return {
        t.number: (t.state, t.values, dict(t.params), bool(t.user_attrs.get(attrs.INTERRUPTED)))
        for t in study.trials
    }


@pytest.mark.ray
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_stopped_driver_loses_nothing_and_resumes(tmp_path, ray_session, how):
    doc = space_doc(tmp_path)
    storage = doc["storage"]
    proc = start_driver(doc, ray_session)
    wait_for_complete(storage, 2, proc)
    running = wait_for_mid_trial(storage, proc)  # stop mid-trial: the re-enqueue path must run
    proc.send_signal(how)
    proc.wait(timeout=60)
    before = snapshot(storage)
    done_before = {n: v for n, v in before.items() if v[0] == TrialState.COMPLETE}
    if how == signal.SIGINT:  # a clean stop tells its own trials FAIL (interrupted): none left RUNNING
        assert all(v[0] != TrialState.RUNNING for v in before.values())
        assert all(before[n][0] == TrialState.FAIL and before[n][3] for n in running), (running, before)
    else:  # kill -9 tells nothing: the next run must find its trials still RUNNING
        assert all(before[n][0] == TrialState.RUNNING for n in running), (running, before)

    run(parse_space(doc, source="faults.yaml"), fit_fn=FakeFit(), progress=False)

    study = optuna.load_study(study_name="faults", storage=storage)
    after = {t.number: t for t in study.trials}
    for number, (state, values, _, _) in done_before.items():  # no COMPLETE trial lost or retrained
        assert after[number].state == state and after[number].values == values
    interrupted = [t for t in study.trials if t.user_attrs.get(attrs.INTERRUPTED)]
    assert interrupted and set(running) <= {t.number for t in interrupted}, (running, interrupted)
    for t in interrupted:
        assert t.state == TrialState.FAIL
        retries = [r for r in study.trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retries) == 1 and retries[0].params == t.params and retries[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == doc["trials"]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path, capsys):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    before = db.read_bytes()
    with pytest.raises(StudyError, match="something else"):
        open_storage(f"sqlite:///{db}", create=True)
    assert main(["studies", str(db)]) == 1
    assert "refusing to touch it" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_corrupted_file_is_refused_and_untouched(tmp_path):
    db = tmp_path / "broken.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    before = db.read_bytes()
    with pytest.raises(StudyError, match=r"corrupted|not an SQLite|something else"):
        open_storage(f"sqlite:///{db}", create=True)
    assert db.read_bytes() == before
    text = tmp_path / "notes.db"
    text.write_text("hello")
    with pytest.raises(StudyError, match="not an SQLite database"):
        open_storage(f"sqlite:///{text}", create=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_studies_directory(tmp_path):  # pragma: no cover - CI runs as root
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(StudyError, match="not writable"):
        open_storage(f"sqlite:///{folder}/x.db", create=True)


def test_unwritable_studies_directory_as_file(tmp_path):
    blocker = tmp_path / "studies"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(StudyError, match="cannot create"):
        open_storage(f"sqlite:///{blocker}/x.db", create=True)


def test_reading_never_creates_a_database(tmp_path, capsys):
    assert main(["show", str(tmp_path / "none.db")]) == 1
    assert "no study storage" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_passwords_are_masked():
    url = "postgresql+psycopg2://sd:s3cret@db.local:5432/studies"
    assert mask_url(url) == "postgresql+psycopg2://sd:***@db.local:5432/studies"
    assert mask_url("sqlite:///studies/x.db") == "sqlite:///studies/x.db"


def test_unreachable_server_error_is_masked(capsys):
    code = main(["studies", "postgresql+psycopg2://sd:s3cret@127.0.0.1:9/none"])
    err = capsys.readouterr().err
    assert code == 1 and "s3cret" not in err and "***" in err


# -- a database that goes away: the storage's guard, without a server -----------------------------


#: What psycopg2 raises (its own OperationalError); psycopg2 itself is only in the cluster extra.
DriverOperationalError = type("OperationalError", (Exception,), {})


def lost(message="server closed the connection unexpectedly"):
    """The error RDBStorage raises when its server went away mid-commit (Optuna's misleading wrapper)."""
    from sqlalchemy.exc import OperationalError

    try:
        raise OperationalError("COMMIT", {}, DriverOperationalError(message))
    except OperationalError as exc:
        try:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to invalid data"
            ) from exc
        except optuna.exceptions.StorageInternalError as wrapped:
            return wrapped


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    """An SDRDBStorage that retries (SQLite here; the server is faked by failing methods), a study in
    it, the sleeps it takes (not slept) and a clock the test moves."""
    from sdsearch.store import rdb

    storage = rdb.SDRDBStorage(f"sqlite:///{tmp_path}/g.db", retry_seconds=20)
    study = optuna.create_study(study_name="g", storage=storage, directions=["maximize"])
    clock = {"now": 1000.0}
    sleeps: list[float] = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock["now"] += seconds

    monkeypatch.setattr(rdb.time, "sleep", sleep)
    monkeypatch.setattr(rdb.time, "monotonic", lambda: clock["now"])
    return storage, study, sleeps


def failing(monkeypatch, name, times, error=lost):
    """Make ``RDBStorage.<name>`` fail ``times`` times, then work; returns the call counter."""
    from optuna.storages import RDBStorage

    real = getattr(RDBStorage, name)
    calls = {"n": 0}

    def method(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise error()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, name, method)
    return calls


def test_a_restarting_database_is_ridden_out_with_backoff_and_two_notices(guarded, monkeypatch, caplog):
    _, study, sleeps = guarded
    trial = study.ask()
    calls = failing(monkeypatch, "set_trial_user_attr", 3)
    with caplog.at_level("WARNING", logger="sdsearch.store.rdb"):
        trial.set_user_attr("k", 1)
    assert calls["n"] == 4 and sleeps == [0.5, 1.0, 2.0]
    assert study.trials[0].user_attrs == {"k": 1}
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 2, notices
    assert (
        "lost the study storage (OperationalError: server closed the connection unexpectedly)" in notices[0]
    )
    assert "retrying for up to 20 s" in notices[0] and "is back after 4 s" in notices[1]


def test_optunas_cache_calls_are_guarded_too(guarded, monkeypatch):
    """A Study puts its cache in front of the storage; the cache calls private RDBStorage methods."""
    _, study, sleeps = guarded
    failing(monkeypatch, "_create_new_trial", 1)
    failing(monkeypatch, "_get_trials", 1)
    trial = study.ask()
    study.tell(trial, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] and len(sleeps) == 2


def test_an_outage_longer_than_the_window_ends_every_caller_with_one_line(guarded, monkeypatch):
    from sdsearch.core.errors import StorageUnavailableError

    storage, study, sleeps = guarded
    trial = study.ask()
    storage.url = "postgresql+psycopg2://sd:s3cret@db.local:5432/studies"  # what the message shows
    failing(monkeypatch, "set_trial_user_attr", 10**6, error=lambda: lost("Connection refused"))
    with pytest.raises(StorageUnavailableError) as info:
        trial.set_user_attr("k", 1)
    message = str(info.value)
    assert message.startswith(
        "postgresql+psycopg2://sd:***@db.local:5432/studies: the study storage has been "
    )
    assert "unreachable for 20 s (OperationalError: Connection refused)" in message
    assert "run the same command to resume" in message and "SDSEARCH_STORAGE_RETRY_SECONDS" in message
    assert "s3cret" not in message and "\n" not in message and info.value.exit_code == 1
    assert sum(sleeps) == pytest.approx(20)
    n = len(sleeps)  # the window belongs to the outage: the next caller (e.g. the exit path) fails at once
    with pytest.raises(StorageUnavailableError):
        storage.set_trial_user_attr(trial._trial_id, "k", 2)
    assert len(sleeps) == n


def test_a_final_state_that_committed_before_the_connection_broke_counts_as_told(guarded, monkeypatch):
    from optuna.storages import RDBStorage

    _, study, _ = guarded
    trial = study.ask()
    real = RDBStorage.set_trial_state_values
    calls = {"n": 0}

    def commits_then_breaks(self, *args, **kwargs):
        calls["n"] += 1
        done = real(self, *args, **kwargs)
        if calls["n"] == 1:
            raise lost()
        return done

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", commits_then_breaks)
    study.tell(trial, 0.75)  # the retry finds it COMPLETE already: no UpdateFinishedTrialError
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].values == [0.75]
    assert calls["n"] == 2


def test_bad_data_and_sqlite_files_are_never_retried(guarded, monkeypatch, tmp_path):
    from sdsearch.store.rdb import SDRDBStorage

    storage, _, sleeps = guarded
    failing(monkeypatch, "get_study_user_attrs", 1, error=lambda: ValueError("not a connection problem"))
    with pytest.raises(ValueError):
        storage.get_study_user_attrs(storage.get_study_id_from_name("g"))
    failing(monkeypatch, "get_all_studies", 1)
    with pytest.raises(optuna.exceptions.StorageInternalError):  # retry_seconds=0: as Optuna raises it
        SDRDBStorage(f"sqlite:///{tmp_path}/plain.db").get_all_studies()
    assert sleeps == []


def test_the_guarded_storage_pickles_with_its_window(guarded):
    """Tune pickles the searcher, and the searcher holds the storage."""
    import pickle

    storage, _, _ = guarded
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.retry_seconds == 20 and copy.get_study_id_from_name("g") == storage.get_study_id_from_name(
        "g"
    )


def test_the_retry_window_comes_from_the_environment(monkeypatch):
    from sdsearch.core.errors import ConfigError
    from sdsearch.store.faults import DEFAULT_RETRY_SECONDS, RETRY_SECONDS_ENV, retry_seconds

    monkeypatch.delenv(RETRY_SECONDS_ENV, raising=False)
    assert retry_seconds() == DEFAULT_RETRY_SECONDS == 60
    monkeypatch.setenv(RETRY_SECONDS_ENV, "7.5")
    assert retry_seconds() == 7.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(RETRY_SECONDS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{RETRY_SECONDS_ENV}: must be a number of seconds"):
            retry_seconds()


def test_tunes_wrapped_error_is_unwrapped_to_ours():
    from ray.tune.error import TuneError

    from sdsearch.core.errors import StorageUnavailableError
    from sdsearch.search.runner import _our_error

    ours = StorageUnavailableError("db: the study storage has been unreachable for 60 s")
    try:
        try:
            raise ours
        except StorageUnavailableError:
            raise TuneError("Traceback (most recent call last): ...") from None
    except TuneError as wrapped:
        assert _our_error(wrapped) is ours
    assert _our_error(TuneError("a trial failed")) is None


# -- a full disk -------------------------------------------------------------------------------------


def test_disk_full_is_recognised_however_it_is_wrapped():
    import errno

    from sqlalchemy.exc import OperationalError

    from sdsearch.core.files import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    sqlite_full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    try:
        raise optuna.exceptions.StorageInternalError(
            "An exception is raised during the commit."
        ) from sqlite_full
    except optuna.exceptions.StorageInternalError as exc:
        assert is_disk_full(exc)

    class PgDiskFull(Exception):
        pgcode = "53100"

    assert is_disk_full(OperationalError("INSERT", {}, PgDiskFull("could not extend file")))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
    assert not is_disk_full(lost())


def test_sqlite_disk_full_names_the_store(guarded, monkeypatch, tmp_path):
    from sqlalchemy.exc import OperationalError

    from sdsearch.core.errors import DiskFullError

    _, study, sleeps = guarded
    trial = study.ask()
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    failing(monkeypatch, "set_trial_user_attr", 1, error=lambda: full)
    with pytest.raises(DiskFullError) as info:
        trial.set_user_attr("k", 1)
    assert str(info.value).startswith(
        f"{tmp_path}/g.db: no space left on device; the disk holding {tmp_path}/"
    )
    assert "run the same command to resume" in str(info.value) and info.value.exit_code == 1 and not sleeps


@pytest.fixture
def small_disk(tmp_path):
    """A 4-MiB tmpfs of the test's own (root only), unmounted afterwards; ``fill`` fills it up."""
    if os.geteuid() != 0:
        pytest.skip("making a small filesystem (a tmpfs mount) needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:  # lazily when busy: this process may still hold the store open in a connection pool
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder):
    """Fill the filesystem of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing is left to fail at close
        for chunk in (65536, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * chunk):
                    pass
    return filler


def test_write_atomic_on_a_full_disk_leaves_nothing_half_written(small_disk):
    from sdsearch.core.errors import DiskFullError
    from sdsearch.core.files import write_atomic

    write_atomic(small_disk / "metrics.json", "old")
    fill(small_disk)
    with pytest.raises(DiskFullError) as info:
        write_atomic(small_disk / "metrics.json", "x" * 100_000)
    assert str(info.value).startswith(f"{small_disk}/metrics.json: no space left on device; ")
    assert (small_disk / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics.json"]


def test_train_onto_a_full_disk_stops_with_one_line(small_disk, tmp_path, capsys):
    from sdsearch.core.config import BackboneConfig, BranchesConfig, ModelConfig, TrainConfig, TrialConfig
    from sdsearch.space.document import config_to_document

    cfg = TrialConfig(
        model=ModelConfig(
            backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(3,))
        ),
        train=TrainConfig(epochs=1, batch_size=64),
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(config_to_document(cfg, name="tiny")))
    fill(small_disk)
    out = small_disk / "run"
    assert main(["train", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    print(err)
    assert "\n" not in err and err.startswith(f"{out}/checkpoint.pt: no space left on device; ")
    assert list(out.iterdir()) == []  # no truncated checkpoint, no temporary file


@pytest.mark.ray
def test_disk_fills_up_under_the_sqlite_store_mid_run(small_disk, tmp_path, ray_session, capfd):
    """The store's disk fills while trials run: the run stops with one line naming the store, which
    still opens with every trial told before; `sdsearch run` on the full disk says so too; once space
    is freed, the same command resumes, re-running the trials that were in flight."""
    import threading

    from sdsearch.core.errors import DiskFullError

    doc = {**space_doc(small_disk, trials=6), "storage": f"sqlite:///{small_disk}/faults.db"}
    storage = doc["storage"]
    db = small_disk / "faults.db"
    seen: dict = {}

    def fill_after_two():
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    rows = conn.execute("SELECT number FROM trials WHERE state = 'COMPLETE'").fetchall()
            except sqlite3.Error:
                rows = []
            if len(rows) >= 2:
                seen["complete"] = {n for (n,) in rows}
                seen["filler"] = fill(small_disk)
                return
            time.sleep(0.05)

    filler = threading.Thread(target=fill_after_two, daemon=True)
    filler.start()
    with pytest.raises(DiskFullError) as info:
        run(parse_space(doc, source="faults.yaml"), fit_fn=FakeFit(epoch_seconds=0.3), progress=False)
    filler.join()
    message = str(info.value)
    assert message.startswith(f"{db}: no space left on device; the disk holding {small_disk}/ filled up")
    before = snapshot(storage)
    assert {n for n, v in before.items() if v[0] == TrialState.COMPLETE} >= seen["complete"]

    space_file = tmp_path / "faults.yaml"
    space_file.write_text(json.dumps(doc))
    assert "Traceback" not in capfd.readouterr().err  # nor Tune's, of a searcher call that failed
    assert main(["run", str(space_file)]) == 1  # the CLI on the full disk: one line, exit 1
    err = capfd.readouterr().err.strip()
    print(f"{message}\n{err}\nstates: {sorted(v[0].name for v in before.values())}")
    assert "\n" not in err and err.startswith(f"{db}: no space left on device; ")
    assert snapshot(storage) == before

    seen["filler"].unlink()
    run(parse_space(doc, source="faults.yaml"), fit_fn=FakeFit(), progress=False)
    after = snapshot(storage)
    for number, (state, values, _, _) in before.items():
        if state == TrialState.COMPLETE:
            assert after[number][:2] == (state, values)
    assert sum(v[0] == TrialState.COMPLETE for v in after.values()) == doc["trials"]
    assert not [v for v in after.values() if v[0] == TrialState.RUNNING]
    running_then = [n for n, v in before.items() if v[0] == TrialState.RUNNING]
    assert all(after[n][0] == TrialState.FAIL and after[n][3] for n in running_then)


# -- a dataset no classifier can learn --------------------------------------------------------------


def test_an_unlearnable_dataset_is_refused_before_any_study_or_training(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "one.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.zeros(40, np.int64),
             x_test=rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), y_test=np.zeros(8, np.int64))  # fmt: skip
    doc = {**space_doc(tmp_path), "data": {"dataset": "npz", "path": str(path)}}
    space_file = tmp_path / "one.yaml"
    space_file.write_text(json.dumps(doc))
    assert main(["run", str(space_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"data.path: {path}: the training split has 40 images of 1 class (0); "
        "a classifier needs images of at least 2 classes"
    )
    assert not (tmp_path / "faults.db").exists()  # no study was created

    config = tmp_path / "one_config.yaml"
    fixed = {k: v for k, v in doc.items() if k not in ("space", "trials", "sampler", "storage")}
    config.write_text(json.dumps(fixed))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == err
    assert not (tmp_path / "run").exists()


def test_server_timeouts_bound_an_attempt_but_the_url_keeps_its_own():
    """libpq timeouts are added for a PostgreSQL server; one the URL sets is not overridden (SQLAlchemy
    lets connect_args win over the URL's query), and SQLite gets none of them."""
    from sdsearch.store.storage import server_engine_kwargs

    for url in ("postgresql+psycopg2://u:p@db/study", "postgresql://u:p@db/study"):  # psycopg2, psycopg 3
        plain = server_engine_kwargs(url)
        assert plain["pool_pre_ping"] and plain["connect_args"]["connect_timeout"] == 10
        assert plain["connect_args"]["keepalives"] == 1
    own = server_engine_kwargs("postgresql+psycopg2://u:p@db/study?connect_timeout=30")
    assert "connect_timeout" not in own["connect_args"] and own["connect_args"]["keepalives"] == 1
    assert "connect_args" not in server_engine_kwargs("mysql+pymysql://u:p@db/study")


def test_causes_walks_cause_context_and_the_drivers_error_once_each():
    from sdsearch.core.errors import causes

    driver = OSError(28, "No space left on device")
    wrapper = RuntimeError("(sqlite3.OperationalError) ...")
    wrapper.orig = driver  # how SQLAlchemy keeps the driver's error
    try:
        try:
            raise wrapper
        except RuntimeError as exc:
            raise ValueError("storage failed") from exc
    except ValueError as exc:
        top = exc
    top.__context__.__context__ = top  # a cycle must not loop
    assert list(causes(top)) == [top, wrapper, driver]
