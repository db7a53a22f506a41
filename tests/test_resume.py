"""Resume after a real SIGKILL: TensorBoard shows every step once, with the values of an uninterrupted run.

The test runs this file as a script, once per run: ``--kill-at S`` kills its own process (SIGKILL) after optimizer
step S, ``--resume`` continues from ``last.ckpt`` into the same logger directory and version.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
from helpers import Model, event_log, make_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from test_reliability import ResumableLoader
from torch.utils.tensorboard import SummaryWriter

from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor
from lightning_radam.callbacks._common import _purge_from

MAX_STEPS = 12
EVERY = 4  # checkpoint every 4 optimizer steps
KILL_AT = 6  # between the checkpoints at steps 4 and 8: steps 4 and 5 were logged, then lost with the process


class KillAfter(Callback):
    """SIGKILL this process at the end of optimizer step ``step``, once the events logged so far are on disk."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.logger.experiment.flush()  # what a long run's writer has done by then (it flushes every 120 s)
            os.kill(os.getpid(), signal.SIGKILL)


def fit(out, name, kill_at=None, resume=False):
    L.seed_everything(0)
    model = Model(net="norms", lr=1e-2, lr_schedule="linear")
    checkpoints = ModelCheckpoint(dirpath=out / name / "checkpoints", every_n_train_steps=EVERY, save_last=True)
    callbacks = [RectificationMonitor(layers="weight"), GradientHistogramMonitor(layers="weight"), checkpoints]
    if kill_at is not None:
        callbacks.append(KillAfter(kill_at))
    logger = TensorBoardLogger(out, name=name, version=0)
    trainer = make_trainer(out, callbacks, max_steps=MAX_STEPS, logger=logger, enable_checkpointing=True)
    trainer.fit(model, ResumableLoader(), ckpt_path=out / name / "checkpoints" / "last.ckpt" if resume else None)


def run(out, *args):
    result = subprocess.run(
        [sys.executable, __file__, "--out", str(out), *map(str, args)],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr[-3000:]


def restarts(path):
    """The steps of the SessionLog.START events in one event file."""
    events = EventFileLoader(str(path)).Load()
    return [e.step for e in events if e.HasField("session_log") and e.session_log.status == SessionLog.START]


def test_resume_after_sigkill_shows_each_step_once_with_the_uninterrupted_values(tmp_path):
    rc, err = run(tmp_path, "--name", "full")
    assert rc == 0, err
    rc, err = run(tmp_path, "--name", "killed", "--kill-at", KILL_AT)
    assert rc == -signal.SIGKILL, err
    assert {p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()} == {"epoch=0-step=4.ckpt", "last.ckpt"}, (
        err
    )
    time.sleep(1.0)  # TensorBoard reads a run's event files in name order, and names start with the second
    rc, err = run(tmp_path, "--name", "killed", "--resume")
    assert rc == 0, err
    killed, resumed_file = sorted((tmp_path / "killed" / "version_0").glob("events.out.tfevents.*"))
    assert restarts(killed) == []
    assert restarts(resumed_file) == [4]  # one marker, at the step of last.ckpt, though both monitors are there
    full, resumed = event_log(tmp_path / "full" / "version_0"), event_log(tmp_path / "killed" / "version_0")
    assert {"loss", "epoch"} <= full["scalars"].keys()  # Lightning's own metrics (self.log), next to ours
    assert any(tag.startswith("radam/") for tag in full["scalars"])
    assert full["histograms"]
    for kind in ("scalars", "histograms"):
        assert resumed[kind].keys() == full[kind].keys()
        for tag, points in full[kind].items():
            if tag == "hp_metric":  # Lightning's placeholder (-1), written at step 0 by every fit, resumed or not
                assert [step for step, _ in resumed[kind][tag]] == [0, 0]
                continue
            steps = [step for step, _ in resumed[kind][tag]]
            assert steps == sorted(set(steps)), (tag, steps)  # each step once
            assert resumed[kind][tag] == points, tag  # the steps and values of the uninterrupted run


def test_resume_with_a_closed_writer_marks_the_file_it_opens_next(tmp_path):
    writer = SummaryWriter(tmp_path / "run")
    writer.add_scalar("x", 1.0, 5)
    writer.close()  # as TensorBoardLogger.finalize leaves it after a fit
    time.sleep(1.0)  # the next file sorts after the first one (names start with the second)
    _purge_from(writer, 3)
    writer.add_scalar("x", 2.0, 3)
    writer.close()
    assert event_log(tmp_path / "run")["scalars"]["x"] == [(3, 2.0)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--resume", action="store_true")
    options = parser.parse_args()
    fit(options.out, options.name, options.kill_at, options.resume)
