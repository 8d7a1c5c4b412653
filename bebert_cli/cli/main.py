"""The `bebert` root: registers one module per command and maps errors to exit codes (and, with --json, to
one JSON error object)."""

from __future__ import annotations

import json
import os
import sys
import traceback

import typer

from bebert_cli import __version__

app = typer.Typer(
    name="bebert",
    help="Turn fine-tuned BERT checkpoints into packed binary models.",
    epilog="Run `bebert COMMAND -h` for a command's options and examples; docs: README.md and docs/.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    context_settings={"help_option_names": ["-h", "--help"]},  # every command inherits -h
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        print(f"bebert {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """bebert: binarize, evaluate, ensemble, export and report on BERT-family classifiers."""


def _register() -> None:
    # One module per command; each exposes `register(app)`. Imports stay light (no torch).
    from bebert_cli.cli import binarize, ensemble, env, export, finetune, predict, report, upload
    from bebert_cli.cli import eval as eval_cmd

    for module in (finetune, binarize, ensemble, eval_cmd, export, report, upload, env, predict):
        module.register(app)


_register()


def _quiet_libraries() -> None:
    """Library chatter would break the one-line error contract and --json stdout."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _fail(message: str, code: int, error_type: str, json_mode: bool = False) -> None:
    if os.environ.get("BEBERT_DEBUG") == "1":
        traceback.print_exc()
    first = " ".join(str(message).split()) or "unexpected failure"
    print(f"Error: {first}", file=sys.stderr)
    from bebert_cli.cli import output

    # A result already out (exit 3) stays the one object; under torchrun only the first process prints.
    if json_mode and not output.result_printed and int(os.environ.get("RANK", "0")) == 0:
        from bebert_cli.schema import error_payload

        sys.stdout.write(json.dumps(error_payload(error_type, first, code), sort_keys=True) + "\n")
        sys.stdout.flush()
    sys.exit(code)


def _is_click(exc: BaseException, name: str) -> bool:
    """typer vendors its own copy of click, so click's exception classes are matched by name."""
    return any(c.__name__ == name and "click" in c.__module__ for c in type(exc).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one `Error:` line (and with --json one `bebert.error` object on
    stdout, docs/json.md) and a documented exit code.

    0 ok; 1 failure (bad data, model, checkpoint, training); 2 usage; 3 quality gate (--fail-under)
    not met; 130 interrupted (state saved, rerun with --resume).
    """
    from bebert_cli.cli import output
    from bebert_cli.errors import BebertError

    _quiet_libraries()
    args = sys.argv[1:] if argv is None else list(argv)
    # With --json a failure is also one JSON error object on stdout (docs/json.md), usage errors included.
    json_mode = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    output.result_printed = False
    try:
        result = app(args=args, prog_name="bebert", standalone_mode=False)
        if isinstance(result, int) and result:  # click returns some exit codes instead of raising
            sys.exit(result)
    except BebertError as exc:
        _fail(str(exc), exc.exit_code, type(exc).__name__, json_mode)
    except KeyboardInterrupt:
        _fail("interrupted", 130, "Interrupted", json_mode)
    except MemoryError:
        _fail("out of memory; lower --batch-size or --max-seq-length", 1, "MemoryError", json_mode)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", 1, type(exc).__name__, json_mode)
    except Exception as exc:
        if _is_click(exc, "Exit"):
            sys.exit(exc.exit_code)
        if _is_click(exc, "NoArgsIsHelpError"):  # bare `bebert`: the normal help, as `hf` prints it
            exc.show()
            sys.exit(exc.exit_code)
        if _is_click(exc, "Abort"):
            _fail("aborted", 130, "Interrupted", json_mode)
        if _is_click(exc, "ClickException"):  # bad or missing options
            _fail(exc.format_message(), 2, "UsageError", json_mode)
        # A bug: still one line, with the traceback behind BEBERT_DEBUG=1.
        _fail(f"unexpected {type(exc).__name__}: {exc} (set BEBERT_DEBUG=1 for the traceback)", 1, "InternalError",
              json_mode)
