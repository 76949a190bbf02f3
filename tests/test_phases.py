"""The run's phase clocks (studio/train/phases.py) on a GPU, with torch.cuda's events and
synchronise stood in for: no step waits for the GPU, the per-step GPU phases are read from their
events a batch at a time, host work is the wall clock, and the rare phases wait at their edges."""
import time


class FakeEvent:
    """A CUDA event on a pretend GPU timeline: recorded at the wall time it is queued."""
    def __init__(self, enable_timing=False):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.at - self.at) * 1000


def test_steps_never_wait_for_the_gpu_and_every_phase_is_counted(monkeypatch):
    import torch

    from studio.train import phases as ph

    waits = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: waits.append(1))
    monkeypatch.setattr(ph, "RESOLVE_EVERY", 8)
    clocks = ph.Phases(cuda=True)
    for _ in range(10):                                     # ten micro-steps and their batches
        with clocks.clock("data"):
            time.sleep(0.001)
        with clocks.clock("forward_backward"):
            time.sleep(0.002)
        with clocks.clock("optimizer"):
            pass
    assert waits == [] and len(clocks.pending) == 20 - 16   # read twice, 8 events at a time
    with clocks.clock("evaluation"):                        # a rare phase waits at both edges
        with clocks.clock("forward_backward"):              # inside it: counted once, as evaluation
            time.sleep(0.002)
    assert len(waits) == 2
    spent = clocks.summary()
    assert clocks.pending == []
    s = clocks.seconds
    assert s["data"] >= 0.01 and s["forward_backward"] >= 0.02 and s["evaluation"] >= 0.002
    assert "forward and backward passes" in spent["line"]


def test_on_a_cpu_nothing_waits_and_no_event_is_made(monkeypatch):
    import torch

    from studio.train import phases as ph

    def no(*a, **k):
        raise AssertionError("a CPU run touched CUDA")
    monkeypatch.setattr(torch.cuda, "Event", no)
    monkeypatch.setattr(torch.cuda, "synchronize", no)
    clocks = ph.Phases(cuda=False)
    with clocks.clock("forward_backward"):
        time.sleep(0.002)
    with clocks.clock("evaluation"):
        pass
    clocks.summary()
    assert clocks.seconds["forward_backward"] >= 0.002
