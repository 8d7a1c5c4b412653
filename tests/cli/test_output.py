"""The output sink's progress: none when quiet, lines (`progress.LineProgress`) when stderr is not a terminal."""

from bebert_cli.cli.output import Output
from bebert_cli.progress import LineProgress


def test_quiet_gets_no_progress_lines_and_a_log_gets_lines():
    with Output(quiet=True).progress() as progress:
        assert not isinstance(progress, LineProgress)
    with Output().progress() as progress:  # stderr is not a terminal under pytest
        assert isinstance(progress, LineProgress)
