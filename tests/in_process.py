"""Running a command line's `main` in the test process."""

from __future__ import annotations


def run_cli(main, args, capsys) -> tuple[int, str, str]:
    """`main(args)` in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
