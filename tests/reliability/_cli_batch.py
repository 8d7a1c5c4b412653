"""Run several `bebert` invocations in one interpreter (the reliability suite's batch driver).

stdin: {"name": [argv...], ...}; stdout (last line): {"name": {"code", "stdout", "stderr"}, ...}.
Each case goes through `bebert_cli.cli.main.main`, the console script's entry point, with its
stdout and stderr captured separately, exactly as a user would see them.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    from bebert_cli.cli.main import main as bebert_main

    cases = json.loads(sys.stdin.read())
    results = {}
    real_stdout = sys.stdout
    for name, argv in cases.items():
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                bebert_main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException as exc:  # a crash the CLI did not turn into an exit code
                code = f"crash: {type(exc).__name__}: {exc}"
        results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    real_stdout.write("\n" + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
