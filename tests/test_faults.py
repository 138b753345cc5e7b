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
from sdsearch.errors import StudyError
from sdsearch.search import attrs
from sdsearch.search.runner import run
from sdsearch.search.storage import mask_url, open_storage
from sdsearch.space import parse_space
from sdsearch.testing import FakeFit

DRIVER = """
import json, sys
from sdsearch.search.runner import run
from sdsearch.space import parse_space
from sdsearch.testing import FakeFit
doc, address = json.loads(sys.argv[1]), sys.argv[2]
run(parse_space(doc, source="faults.yaml"), address=address, fit_fn=FakeFit(epoch_seconds=float(sys.argv[3])), progress=False)
"""
EPOCH_SECONDS = 0.8  # the stopped driver's trials run 3 epochs of this (2.4 s in all)


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


def wait_for_mid_trial(storage, proc, concurrent=2, left=0.8, timeout=90):
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


# -- a full disk -------------------------------------------------------------------------------------


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
    from sdsearch.errors import DiskFullError
    from sdsearch.paths import write_atomic

    write_atomic(small_disk / "metrics.json", "old")
    fill(small_disk)
    with pytest.raises(DiskFullError) as info:
        write_atomic(small_disk / "metrics.json", "x" * 100_000)
    assert str(info.value).startswith(f"{small_disk}/metrics.json: no space left on device; ")
    assert (small_disk / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics.json"]


def test_train_onto_a_full_disk_stops_with_one_line(small_disk, tmp_path, capsys):
    from sdsearch.config import BackboneConfig, BranchesConfig, ModelConfig, TrainConfig, TrialConfig
    from sdsearch.space import config_to_document

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
