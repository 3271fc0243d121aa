"""Progress bars over long calls: drawn where a person reads, silent elsewhere."""

from __future__ import annotations

import io

import torch
from rich.console import Console

import secateurs as sc
from secateurs import _progress
from secateurs._progress import Steps
from secateurs.search.candidate import SerialBackend, map_jobs


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_steps_draw_on_a_console_and_nowhere_when_no_one_reads():
    console, out = _console()
    with Steps("counting", 3, console=console) as bar:
        for _ in range(3):
            bar.advance(status="going")
    text = out.getvalue()
    assert "counting" in text and "3/3" in text and "going" in text
    with Steps("silent", 3) as bar:  # pytest captures output: not interactive
        bar.advance()
    assert bar._progress is None and not bar.enabled
    console, out = _console()
    with Steps("off", 3, enabled=False, console=console) as bar:
        bar.advance()
    assert out.getvalue() == ""


class _Counter:
    def __init__(self):
        self.calls = []

    def advance(self, steps=1, status=""):
        self.calls.append(steps)


class _PlainBackend:  # a user's backend: map(fn, jobs) and nothing more
    def map(self, fn, jobs):
        return [fn(**j) for j in jobs]


def _square(v):
    return v * v


def test_map_jobs_advances_per_job_where_the_backend_reports_it():
    jobs = [{"v": i} for i in range(4)]
    counter = _Counter()
    assert map_jobs(SerialBackend(), _square, jobs, counter) == [0, 1, 4, 9]
    assert counter.calls == [1, 1, 1, 1]
    counter = _Counter()
    assert map_jobs(_PlainBackend(), _square, jobs, counter) == [0, 1, 4, 9]
    assert counter.calls == [4]
    assert map_jobs(SerialBackend(), _square, jobs) == [0, 1, 4, 9]


def test_a_search_and_verify_c_show_their_bars_where_a_person_reads(
    digits, monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(_progress, "interactive", lambda: True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    sc.search.greedy_sensitivity(
        model, digits, sc.search.Budget(macs=0.6), finetune_epochs=1, levels=(0.5,)
    )
    text = "".join(capsys.readouterr())
    assert "sensitivity: one group cut at a time" in text and "fine-tuning" in text
    q = sc.quant.quantize(model, digits)
    sc.deploy.export_c(q, tmp_path / "c")
    sc.deploy.verify_c(q, tmp_path / "c", digits.test.tensors[0][:4])
    assert "verify_c: compile, then run on the host" in "".join(capsys.readouterr())
    sc.search.greedy_sensitivity(
        model, digits, sc.search.Budget(macs=0.9), finetune_epochs=0, levels=(0.5,), progress=False
    )
    assert "sensitivity" not in "".join(capsys.readouterr())
