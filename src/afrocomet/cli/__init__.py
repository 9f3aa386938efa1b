"""The `afrocomet` command. Thin: resolves options, calls the Python API, prints.

Every `AfroCometError` becomes one line on stderr (`afrocomet: error: ...`) and exit code 2.
The commands live by job: run_cmd (run, distill, config), model_cmds (predict, evaluate, export,
bench), data_cmds (presets, data, train-tokenizer, trim-vocab, import-e5), doctor_cmd; options.py makes the
flags of run/distill from the config fields.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading


class Terminated(SystemExit):
    """SIGTERM: unwinds like Ctrl-C (temporary output is removed, nothing half-written), then
    `main` prints `afrocomet: terminated` and returns 143."""


def _swallows_exceptions(frame) -> bool:
    """Whether `frame` runs where Python ignores an exception ("Exception ignored in ..."): a `__del__`
    or a weakref callback such as the import system's module-lock `cb`."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "cb" and code.co_filename.startswith("<frozen importlib")):
            return True
        frame = frame.f_back
    return False


def _exit_on_sigterm(signum, frame) -> None:
    if _swallows_exceptions(frame):  # raised here it would be ignored and the run would go on: ask again soon
        threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        return
    raise Terminated(128 + signum)


def _exit_at_startup(signum, frame) -> None:
    """SIGTERM or Ctrl-C while the command is still importing: nothing is written yet, so say so in
    one line and stop at once (a KeyboardInterrupt here would be a traceback from inside an import)."""
    os.write(2, b"afrocomet: interrupted\n" if signum == signal.SIGINT else b"afrocomet: terminated\n")
    os._exit(128 + signum)


def _interrupted(exc: BaseException) -> bool:
    """A KeyboardInterrupt, or an error raised while one unwound (a library that wraps it, e.g.
    inside an import): either way the user pressed Ctrl-C."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _started_as_the_command() -> bool:
    """`afrocomet ...` or `python -m afrocomet ...` (not a library import, e.g. under pytest)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name in ("afrocomet", "afrocomet.exe") or sys.argv[0].endswith(os.path.join("afrocomet", "__main__.py"))


if _started_as_the_command() and threading.current_thread() is threading.main_thread():
    # from the first moment, before the heavy imports; SIGINT only if it is not ignored (a background job)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_at_startup)
    signal.signal(signal.SIGTERM, _exit_at_startup)

import click  # noqa: E402  (after the start-up SIGTERM handler on purpose)

from afrocomet.cli.data_cmds import data, import_e5, presets, train_tokenizer_cmd, trim_vocab_cmd
from afrocomet.cli.doctor_cmd import doctor
from afrocomet.cli.model_cmds import bench, evaluate, export, predict
from afrocomet.cli.run_cmd import _resolve_config, config_cmd, distill, run
from afrocomet.cli.serve_cmd import serve
from afrocomet import quiet
from afrocomet.environment import check_torch
from afrocomet.errors import AfroCometError
from afrocomet.io import as_os_error

__all__ = ["cli", "main", "run", "_resolve_config"]  # run and _resolve_config: the tests build configs with them


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afrocomet")
@click.option("--verbose", is_flag=True, help="Also show the warnings and log messages of the libraries underneath.")
def cli(verbose: bool) -> None:
    """Hybrid knowledge distillation of multilingual models for African languages (AfroXLMR-Comet)."""
    quiet.setup(verbose)


for _command in (presets, data, train_tokenizer_cmd, trim_vocab_cmd, import_e5, config_cmd, run, distill, predict,
                 evaluate, export, bench, serve, doctor):
    cli.add_command(_command)


_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
# File-system errors that the machine, not afrocomet, causes (disk full, read-only, permissions, ...):
# one line and exit 2 wherever they surface; any other OSError is a bug and keeps its traceback.
_MACHINE_ERRNOS = {getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EIO", "EFBIG", "ENAMETOOLONG", "EMFILE",
    "ENFILE", "ELOOP", "EXDEV") if hasattr(errno, name)}


def _machine_error(exc: BaseException) -> str | None:
    """The one line for a file-system error the machine caused, else None."""
    found = as_os_error(exc)
    if found is None or found.errno not in _MACHINE_ERRNOS:
        return None
    where = found.filename or getattr(exc, "filename", None)
    return f"{where}: {found.strerror}" if where else f"could not write: {found.strerror}"


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if signal.getsignal(signal.SIGINT) is _exit_at_startup:  # from now on Ctrl-C unwinds (cleans up)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    args = list(sys.argv[1:] if argv is None else argv)  # kept to start it again under `accelerate launch`
    try:
        with quiet.cli_output():  # warnings as one `afrocomet: warning:` line; library noise only with --verbose
            check_torch()  # below torch 2.6 transformers 5 turns PyTorch off: say so before any command starts
            cli.main(args=argv, prog_name="afrocomet", standalone_mode=False, obj={"argv": args})
    except AfroCometError as exc:
        click.echo(f"afrocomet: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    except _NO_ARGS_HELP as exc:  # `afrocomet` alone: the help text, as click shows it
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:  # a bad flag or value: one line too, naming the option
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "afrocomet"
        message = " ".join(exc.format_message().split())
        click.echo(f"afrocomet: error: {message} (see '{command} --help')", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    except Terminated as exc:
        click.echo("afrocomet: terminated", err=True)
        return exc.code
    except Exception as exc:  # last: every other error
        if _interrupted(exc):
            click.echo("afrocomet: interrupted", err=True)
            return 130
        line = _machine_error(exc)
        if line is None:
            raise
        click.echo(f"afrocomet: error: {line}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
