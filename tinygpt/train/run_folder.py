"""A run's folder, out_dir (floor 6): its lock, the refusal to replace another run, the
stale temporary files a killed run left, and the JSON-lines log. Imports: files, the
standard library.

A run holds an exclusive lock on its out_dir from start to end (`FolderLock`): a second
run there fails at once, naming the process that holds it. An existing run is never
replaced or its log shortened unless resumed or overwritten. Ranks other than 0 never
write the folder: their lock does nothing and their log goes to os.devnull.
"""

import json
import os

from ..files import FolderLock, atomic_write_text, remove_stale_temp_files

CHECKPOINT = "ckpt.npz"
ADAPTER = "adapter"         # out_dir/adapter: a LoRA run's adapters in PEFT's layout
BOTTLENECK = "bottleneck"   # out_dir/bottleneck: a run's bottleneck adapters alone
LOG = "log.jsonl"


class RunFolder:
    """out_dir of one process of a run; `main`: whether this process writes it (rank 0).

    path, ckpt_path, log_path, adapter_path: the folder and what a run writes there.
    lock: the folder's FolderLock (a no-op on other ranks), held from `acquire()` to
          `release()`.
    """

    def __init__(self, path, main=True):
        self.path = path
        self.main = main
        self.ckpt_path = os.path.join(path, CHECKPOINT)
        self.log_path = os.path.join(path, LOG)
        self.adapter_path = os.path.join(path, ADAPTER)
        self.bottleneck_path = os.path.join(path, BOTTLENECK)
        self.lock = FolderLock(path, hint=(
            "two runs writing one folder would overwrite each other's checkpoints and logs; "
            "wait for that run to end, or choose another --out_dir")) if main else _NoLock()

    def check(self):
        """Raise when a run in progress holds the folder (named at once, before any work)."""
        self.lock.check()

    def acquire(self):
        """Take the folder (again after a `release()`: a process may run twice)."""
        self.lock.acquire()

    def remove_stale_files(self):
        """Remove the temporary files a killed run left (once the folder is taken)."""
        if self.main:
            remove_stale_temp_files(self.path)

    def release(self):
        self.lock.release()

    def refuse_existing_run(self, overwrite):
        """A new run never replaces another's checkpoint or log unless told to. A log
        without a checkpoint that records nothing past iteration 0 is not a run: its run
        stopped before its first checkpoint (killed in the first evaluation, or failed at
        its start), there is nothing to resume, and a new run starts there."""
        if overwrite:
            return
        if os.path.exists(self.ckpt_path):
            raise FileExistsError(
                f"{self.path} already holds a run ({CHECKPOINT}): pass --resume to "
                "continue it, or choose another --out_dir (or --overwrite to replace it)")
        if os.path.exists(self.log_path) and _logged_past_start(self.log_path):
            raise FileExistsError(
                f"{self.path} already holds the log of a run that saved no checkpoint "
                f"({LOG}; nothing to resume): pass --overwrite to replace it, or choose "
                "another --out_dir")

    def open_log(self, resume, iter_num):
        """The JSON-lines loss log, for appending. On resume, lines past the resumed
        iteration `iter_num` are dropped (the file is rewritten atomically); a new run
        starts it afresh (an existing run's log is only replaced with --overwrite, see
        `refuse_existing_run`)."""
        if not self.main:
            return open(os.devnull, "w", encoding="utf-8")
        if not resume:
            return open(self.log_path, "w", encoding="utf-8")
        if os.path.exists(self.log_path):
            kept, dropped = [], 0
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        keep = record.get("iter", 0) < iter_num
                    except (json.JSONDecodeError, RecursionError, AttributeError, TypeError):
                        keep = False        # a line cut short by a kill, or not a record
                    if keep:
                        kept.append(line if line.endswith("\n") else line + "\n")
                    else:
                        dropped += 1
            if dropped:
                atomic_write_text(self.log_path, "".join(kept))
        return open(self.log_path, "a", encoding="utf-8")


def _logged_past_start(path):
    """Whether the log at `path` holds a record of an iteration past 0."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                if json.loads(line).get("iter", 0) > 0:
                    return True
            except (json.JSONDecodeError, RecursionError, AttributeError, TypeError):
                continue        # a line cut short by a kill, or not a record
    return False


class _NoLock:
    """The lock of ranks other than 0, which never write out_dir."""

    def check(self):
        pass

    def acquire(self):
        pass

    def release(self):
        pass
