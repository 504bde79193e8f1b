"""The ``liqmon`` entry point. A command that needs neither Kafka, the replayer nor the
settings (``liqmon stress``) starts from its own module, without importing the whole
command line (pydantic-settings, rich, asyncio, the replayer: ≈ 0.3 s of a run that
must stay within a few times the parse of its input); every other command goes to
:func:`streams.cli.main`. Run as ``python -m streams.entry …``, the same as ``liqmon …``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from streams.errors import run_writing_outputs

__all__ = ["main"]

#: Sub-commands served by their own module's ``main(argv)``; their ``--help`` and errors
#: are that module's (the same parser as the sub-command's, named ``liqmon <command>``).
LIGHT_COMMANDS = {"stress": "streams.cmd.stress"}
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``liqmon`` with ``argv`` (default: the process's arguments); its exit code (an
    output that cannot be written: :func:`streams.errors.run_writing_outputs`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return run_writing_outputs(lambda: _run(args))


def _run(args: list[str]) -> int:
    module = LIGHT_COMMANDS.get(args[0]) if args else None
    if module is None:
        from streams.cli import main as full_main

        return full_main(args)
    try:
        code: int = importlib.import_module(module).main(args[1:])
    except KeyboardInterrupt:
        print("liqmon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
