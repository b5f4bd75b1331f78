"""Training telemetry on process 0: tqdm bar, TensorBoard events, JSONL metrics.

Every log step writes one JSON line to `<workdir>/metrics.jsonl` with step,
loss, per-modality/season losses, lr, grad norm, step time and images/s, and
the same scalars to TensorBoard (`<workdir>/tensorboard`). Other processes
get a no-op instance, so the loop calls it unconditionally.
"""

from __future__ import annotations

import json
import math
import time
from typing import Mapping

import tqdm
from etils import epath
from tensorboardX import SummaryWriter

from seamo_jax.paths import PathLike, is_url, user_path


class JsonlSink:
    """Appends JSON lines to a local file or an object-store URL.

    Object stores cannot append, so for URLs the file is rewritten whole from
    an in-memory copy (started from what a resumed run already wrote) at each
    `flush`; metrics files are small (one line per log step).
    """

    def __init__(self, path: epath.Path):
        self.path = path
        self._remote = is_url(path)
        if self._remote:
            self._lines = path.read_text().splitlines(keepends=True) if path.exists() else []
            self._file = None
        else:
            self._file = open(path, "a", encoding="utf-8")  # local: a real append, line-buffered by flush

    def write(self, record: Mapping) -> None:
        line = json.dumps(record) + "\n"
        if self._remote:
            self._lines.append(line)
        else:
            self._file.write(line)

    def flush(self) -> None:
        if self._remote:
            self.path.write_text("".join(self._lines))
        else:
            self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


class Telemetry:
    """Progress + metrics sinks.

    Args:
      workdir: run directory.
      total_steps: last step of the run (for the bar and ETA).
      start_step: step training starts (or resumes) from.
      global_batch_size: images per step, for images/s.
      enabled: False on processes other than 0.
      progress_bar: show tqdm.
    """

    def __init__(self, workdir: PathLike, *, total_steps: int, start_step: int, global_batch_size: int,
                 enabled: bool = True, progress_bar: bool = True):
        self.enabled = enabled
        self.global_batch_size = global_batch_size
        self.workdir = user_path(workdir)
        self.tensorboard_dir = self.workdir / "tensorboard"
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._bar = None
        self._writer = None
        self._jsonl = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(str(self.tensorboard_dir))
        # Append: a resumed run continues the same file. TensorBoardX writes
        # gs:// (and s3://) event files itself.
        self._jsonl = JsonlSink(self.jsonl_path)
        if progress_bar:
            self._bar = tqdm.tqdm(total=total_steps, initial=start_step, desc="pretrain", unit="step",
                                  dynamic_ncols=True)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def log(self, step: int, metrics: Mapping[str, float], *, step_time_s: float) -> dict:
        """Writes one record; `step_time_s` = mean wall time per step since the last log."""
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        record["step_time_s"] = float(step_time_s)
        record["images_per_s"] = self.global_batch_size / step_time_s if step_time_s > 0 else math.nan
        record["time"] = time.time()
        if not self.enabled:
            return record
        self._jsonl.write(record)
        self._jsonl.flush()
        for key, value in record.items():
            if key not in ("step", "time") and math.isfinite(value):
                self._writer.add_scalar(key, value, global_step=step)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}", refresh=False)
        return record

    def message(self, text: str) -> None:
        """Prints without breaking the progress bar (process 0 only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
