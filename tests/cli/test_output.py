"""Progress without a terminal: a compact line at most every interval, with ETA, and a last line."""

from bebert_cli.cli.output import LineProgress, Output


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_every_interval_with_eta_and_a_last_line():
    lines, clock = [], Clock()
    p = LineProgress(lines.append, interval=60, clock=clock)
    task = p.add_task("binarize", total=100, completed=0, info="")
    for step in range(1, 101):
        clock.now += 1.5  # 1.5 s a step: a line every 40 steps
        p.update(task, completed=step, info=f"loss {1 / step:.4f} 21.3 samples/s")
    assert len(lines) == 3, lines
    assert lines[0] == "binarize: 40/100 (40%) loss 0.0250 21.3 samples/s elapsed 1:00 ETA 1:30"
    assert lines[-1].startswith("binarize: 100/100 (100%)") and "ETA" not in lines[-1]


def test_short_tasks_print_nothing_and_quiet_prints_nothing(capsys):
    lines, clock = [], Clock()
    p = LineProgress(lines.append, interval=60, clock=clock)
    task = p.add_task("eval", total=10)
    for _ in range(10):
        clock.now += 0.1
        p.advance(task, 1)
    assert lines == []
    with Output(quiet=True).progress() as progress:
        assert not isinstance(progress, LineProgress)
    with Output().progress() as progress:  # stderr is not a terminal under pytest
        assert isinstance(progress, LineProgress)
