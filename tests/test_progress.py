"""Progress without a terminal: a compact line at most every interval, with ETA, and a last line."""

from bebert_cli.progress import LineProgress, NullProgress


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


def test_short_tasks_print_nothing():
    lines, clock = [], Clock()
    p = LineProgress(lines.append, interval=60, clock=clock)
    task = p.add_task("eval", total=10)
    for _ in range(10):
        clock.now += 0.1
        p.advance(task, 1)
    assert lines == []


def test_null_progress_takes_every_call_and_shows_nothing(capsys):
    p = NullProgress()
    task = p.add_task("train", total=3, completed=0, info="")
    p.update(task, completed=1, info="loss 0.5")
    p.advance(task, 1)
    p.remove_task(task)
    assert task == 0 and capsys.readouterr() == ("", "")
