"""Interruptions of a run (floor 6): Ctrl-C and SIGTERM, the two stages of stopping, and
what is saved after a fault. Imports: train.parallel (WorkerError), the standard library.

Ctrl-C (SIGINT) or SIGTERM lets the current iteration finish, writes a checkpoint at the
next one and raises `Interrupted`; a second one stops at once, and the state before the
unfinished step is saved. A data-parallel worker that dies or stops answering ends the run
the same way, with that state saved and a WorkerError naming the worker. In a group of
ranks every rank stops at the same iteration (the step's status exchange tells them).
"""

import contextlib
import os
import signal
import threading

from .parallel import WorkerError


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal; the message says what was saved and how to go on.
    `signum` is the signal (SIGINT for Ctrl-C)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class Interrupts:
    """The signals a run receives and what they make it do.

    requested:     the signal that asked the run to stop (None: none did).
    interruptible: True while a second signal may stop at once (in a step's forward and
                   backward, in an evaluation: never in the parameter update).
    consistent:    False while the optimizer updates the parameters: a fault then keeps
                   the last checkpoint instead of saving half-updated weights.
    """

    def __init__(self, group):
        self.group = group
        self.requested = None
        self.interruptible = False
        self.consistent = True

    def signals(self):
        """Ctrl-C and SIGTERM ask the loop to stop (see `_on_signal`) while it runs; outside
        the main thread, where Python cannot catch signals, they keep their handlers."""
        return signal_handlers((signal.SIGINT, signal.SIGTERM), self._on_signal)

    def _on_signal(self, signum, frame):
        if self.requested is None:
            self.requested = signum
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            # os.write: a signal handler may run in the middle of another print.
            if self.group.is_main:
                os.write(2, f"\n{name}: stopping after this iteration and saving a checkpoint "
                            f"({name} again stops at once)\n".encode())
        elif self.interruptible and self.group.world_size == 1:
            # (Ranks stop together, after the same iteration: a rank that left mid-step
            # would leave the others waiting. A second Ctrl-C to mpiexec ends them all.)
            raise KeyboardInterrupt

    def stopping(self, parallel):
        """Whether to stop at this iteration: a signal asked this process to, or, in a
        group, the last step's status exchange (of `parallel`) found that one asked a rank
        to (so every rank stops at the same iteration)."""
        if self.group.world_size == 1:
            return self.requested is not None
        return bool(parallel is not None and parallel.stopping)

    @contextlib.contextmanager
    def faults(self, trainer):
        """Around the loop: the signals caught, and a stop at once (a second signal) or a
        lost worker turned into Interrupted or WorkerError after `save_after_fault`."""
        try:
            with self.signals():
                yield
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted(self.save_after_fault(trainer, "stopped at once"),
                              self.requested or signal.SIGINT) from None
        except WorkerError as e:
            raise WorkerError(
                f"{e}; {self.save_after_fault(trainer, 'training stopped')}") from None

    def stop_now(self, trainer):
        """Save at the current iteration (the state before its step) and raise Interrupted."""
        saving = trainer.saving
        if trainer.config.save_checkpoints:
            if saving.saved_at != trainer.iter_num:
                trainer.save()
            what = (f"saved {saving.path} at iteration {trainer.iter_num}; "
                    f"{resume_hint(trainer)}")
        else:
            what = f"nothing saved (save_checkpoints is false) at iteration {trainer.iter_num}"
        interrupted = Interrupted(f"interrupted: {what}", self.requested or signal.SIGINT)
        interrupted.collective = self.group.world_size > 1     # every rank raises it here
        raise interrupted

    def save_after_fault(self, trainer, what):
        """After an interruption or a lost worker: save the state before the unfinished
        step, unless the parameters were caught mid-update; returns what happened, in words."""
        saving, it = trainer.saving, trainer.iter_num
        if not trainer.config.save_checkpoints:
            return f"{what} at iteration {it}; nothing saved (save_checkpoints is false)"
        if self.group.world_size > 1:     # this rank left the others: none can join a save
            return (f"{what} at iteration {it} on rank {self.group.rank} alone; "
                    f"the last checkpoint (iteration {saving.saved_at}) was kept")
        if not self.consistent:
            return (f"{what} during the parameter update of iteration {it}; the "
                    f"last checkpoint (iteration {saving.saved_at}) was kept")
        if saving.saved_at != it:
            trainer.save()
        return f"{what}; saved {saving.path} at iteration {it}; {resume_hint(trainer)}"


def resume_hint(trainer):
    """The command that continues the run: under MPI launched as this run was (mpiexec -n
    N; the settings come from the checkpoint)."""
    group = trainer.group
    launch = (f"mpiexec -n {group.world_size} "
              if group.world_size > 1 and getattr(group, "backend", None) == "mpi" else "")
    return (f"continue with: {launch}python -m tinygpt train --out_dir {trainer.out_dir} "
            "--resume")


@contextlib.contextmanager
def signal_handlers(signums, handler):
    """Context manager: `handler` for the signals `signums` inside the block, their
    previous handlers again after it. Outside the main thread, where Python cannot catch
    signals, they keep their handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
