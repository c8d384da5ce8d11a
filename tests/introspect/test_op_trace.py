"""trace(): every op run forward and backward, with shapes, dtype and time."""

import threading

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.autograd import Record, trace
from tinygpt.autograd.function import get_tracer


def expression():
    a = tg.randn(2, 3, requires_grad=True)
    b = tg.randn(3, requires_grad=True)
    c = tg.randn(2, 1, requires_grad=True)
    return a, b, c


def test_records_match_the_ops_run_forward_then_backward():
    a, b, c = expression()
    with trace() as t:
        y = (a * b + c).tanh().sum()
        y.backward()
    ops = [(r.op, r.direction) for r in t.records]
    assert ops == [("mul", "forward"), ("add", "forward"), ("tanh", "forward"),
                   ("sum", "forward"), ("sum", "backward"), ("tanh", "backward"),
                   ("add", "backward"), ("mul", "backward")]
    assert all(isinstance(r, Record) for r in t.records)
    mul_forward, add_forward = t.records[0], t.records[1]
    assert mul_forward.shapes == ((2, 3), (3,))
    assert add_forward.shapes == ((2, 3), (2, 1))
    # A backward row carries its op's input shapes too, so it pairs with its forward row.
    assert t.records[-1].shapes == mul_forward.shapes
    assert all(r.dtype == tg.float32 for r in t.records)
    assert all(r.seconds >= 0 for r in t.records)


def test_tracing_changes_no_value_or_gradient():
    a, b, c = expression()
    y = (a * b + c).tanh().sum()
    y.backward()
    plain = y.item(), a.grad.numpy(), b.grad.numpy(), c.grad.numpy()
    for x in (a, b, c):
        x.grad = None
    with trace():
        y = (a * b + c).tanh().sum()
        y.backward()
    np.testing.assert_array_equal(plain[0], y.item())
    for before, x in zip(plain[1:], (a, b, c)):
        np.testing.assert_array_equal(before, x.grad.numpy())


def test_summary_and_table():
    x = tg.randn(4, 5, requires_grad=True)
    with trace() as t:
        for _ in range(3):
            (x.exp() * 2.0).sum().backward()
    summary = t.summary()
    assert summary[("exp", "forward")][0] == 3 and summary[("exp", "backward")][0] == 3
    assert sum(calls for calls, _ in summary.values()) == len(t.records)
    seconds = [s for _, s in summary.values()]
    assert seconds == sorted(seconds, reverse=True)
    assert sum(seconds) == pytest.approx(t.total_seconds)
    assert 0 < t.total_seconds <= t.wall_seconds

    text = str(t)
    lines = text.splitlines()
    assert lines[0].split() == ["op", "direction", "calls", "total", "ms", "us/call", "share"]
    rows = lines[1:-1]
    assert len(rows) == len(summary)
    for row, ((op, direction), (calls, _)) in zip(rows, summary.items()):
        fields = row.split()
        assert fields[:3] == [op, direction, str(calls)]
    shares = [float(row.split()[-1].rstrip("%")) for row in rows]
    assert sum(shares) == pytest.approx(100.0, abs=0.1 * len(rows))
    assert lines[-1].split()[:2] == ["total", str(len(t.records))]
    assert "more rows" in t.table(limit=1)


def test_no_grad_ops_are_traced_forward_only():
    x = tg.randn(3)
    with tg.no_grad(), trace() as t:
        x.exp().sum()
    assert [(r.op, r.direction) for r in t.records] == [("exp", "forward"), ("sum", "forward")]


def test_only_ops_inside_the_block_are_recorded():
    x = tg.randn(3, requires_grad=True)
    y = x.exp().sum()                           # forward before the trace
    with trace() as t:
        y.backward()
        z = x * 3.0
    z.sum().backward()                          # after the trace
    assert [(r.op, r.direction) for r in t.records] == [
        ("sum", "backward"), ("exp", "backward"), ("mul", "forward")]


def test_tracer_is_removed_on_exit_even_after_an_error():
    assert get_tracer() is None
    with pytest.raises(ValueError), trace() as t:
        assert get_tracer() is t
        raise ValueError("inside")
    assert get_tracer() is None


def test_nested_traces_pass_records_outward():
    x = tg.randn(3, requires_grad=True)
    with trace() as outer:
        x.exp()
        with trace() as inner:
            x.tanh()
        assert get_tracer() is outer
        x.relu()
    assert [r.op for r in inner.records] == ["tanh"]
    assert [r.op for r in outer.records] == ["exp", "tanh", "relu"]     # in time order


def test_trace_is_per_thread():
    x = tg.randn(3)
    done = []

    def other():
        x.exp()
        done.append(get_tracer())

    with trace() as t:
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        x.tanh()
    assert done == [None]
    assert [r.op for r in t.records] == ["tanh"]


def test_synchronize_option_runs_on_the_cpu():
    x = tg.randn(3, requires_grad=True)
    with trace(synchronize=True) as t:
        x.exp().sum().backward()
    assert len(t.records) == 4
    assert "4 op runs" in repr(t)
