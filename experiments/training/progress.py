"""What a user watches while a Student trains: one progress display per Student, counted in training samples over
its warm-up and tutored epochs, and one line per epoch as the epoch ends."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

from experiments.records.student_run import EpochRecord
from tsrl_env import TrainingListener


class StudentProgress(TrainingListener):
    """The progress of one Student's training, ``done`` of ``total`` samples so far (a resumed run starts part way).

    On a terminal, a bar on ``stream`` (standard error); elsewhere (a log file, a pipe) a plain line there every
    ``interval_s`` seconds and when the Student is done. Each finished epoch's row goes to ``rows`` (standard
    output) as the epoch ends, above the bar.
    """

    def __init__(
        self,
        label: str,
        total: int,
        done: int = 0,
        epochs: int | None = None,
        stream: TextIO | None = None,
        rows: TextIO | None = None,
        interval_s: float = 30.0,
    ) -> None:
        self.label = label
        self.total = total
        self.done = done
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.rows = rows or sys.stdout
        self.interval_s = interval_s
        self.interactive = self.stream.isatty()
        self._started = time.monotonic()
        self._started_at = done
        self._last_line = self._started
        self._bar = tqdm(
            total=total, initial=done, desc=label, unit="sample", unit_scale=True, file=self.stream, disable=not self.interactive
        )

    def batch_trained(self, samples: int) -> None:
        self.done += samples
        self._bar.update(samples)
        if not self.interactive and time.monotonic() - self._last_line >= self.interval_s:
            self._print_line()

    def epoch_finished(self, record: EpochRecord) -> None:
        """Print ``record``'s row: the epoch, its phase, the validation AUC and, tutored, the weights and rewards."""
        of = f"/{self.epochs}" if self.epochs else ""
        fields = [f"{self.label}: epoch {record.epoch}{of} ({record.phase})", f"val AUC {record.val_auc:.3f}"]
        if record.phase == "tutored":
            fields.append(f"mean weight {record.mean_weight:.3f}")
            if not math.isnan(record.mean_reward):  # NaN: a tutor that does not learn, its rewards not computed
                fields.append(f"mean reward {record.mean_reward:+.4f}")
            fields += [f"loss {record.student_loss:.4f}"]
            if not math.isnan(record.noise_auroc):
                fields.append(f"noise AUROC {record.noise_auroc:.3f}")
        line = "  ".join(fields)
        if self.interactive:
            self._bar.write(line, file=self.rows)
        else:
            print(line, file=self.rows, flush=True)

    def close(self) -> None:
        """End the bar, or print the last plain line."""
        self._bar.close()
        if not self.interactive:
            self._print_line()

    def _print_line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        elapsed = now - self._started
        rate = (self.done - self._started_at) / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.done) / rate if rate > 0 and self.done < self.total else None
        left = "" if remaining is None else f", about {tqdm.format_interval(remaining)} left"
        percent = 100 * self.done / self.total if self.total else 100.0
        print(
            f"{self.label}: {self.done:,}/{self.total:,} samples ({percent:.0f}%), {tqdm.format_interval(elapsed)} so far{left}",
            file=self.stream,
            flush=True,
        )
