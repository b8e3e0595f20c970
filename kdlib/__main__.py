"""Command line: ``kdlib <command>`` or ``python -m kdlib <command>``.

Commands:
    report   execute the notebooks at a scale and write HTML reports + an index
"""

from __future__ import annotations

import argparse
import sys

from kdlib.presets import SCALES

SCALE_HELP = """\
scales (every notebook reads its settings from kdlib.presets at the chosen scale):
  smoke    seconds per notebook: tiny data and few epochs; checks that every notebook
           runs end to end (make test). Its numbers mean nothing.
  default  minutes per notebook on a laptop CPU: large enough to show the paper's
           trends qualitatively (make report).
  paper    the paper's settings (models, epochs, seeds): GPU hours.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer number of seconds, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 second, got {value}")
    return value


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="execute notebooks and write HTML reports",
        description=(
            "Execute notebooks (jupytext .py sources) with papermill in a fresh kernel of\n"
            "this interpreter, injecting SCALE and INTERACTIVE=False, and write\n"
            "<out>/<stem>.ipynb, <out>/<stem>.html, <out>/index.html and <out>/summary.json.\n"
            "A failing notebook does not stop the others; the exit code is 1 if any failed."
        ),
        epilog=SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="a .py path, a stem (00_calibration_explorer) or a number (00); "
                        "default: every NN_*.py in --notebooks-dir")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="preset scale injected as SCALE (default: %(default)s)")
    p.add_argument("--out", default="reports", help="output folder (default: %(default)s)")
    p.add_argument("--notebooks-dir", default="notebooks",
                   help="where to find notebooks by stem or number (default: %(default)s)")
    p.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter the notebook declares in its parameters cell; "
                        "VALUE is a Python literal, else a string (repeatable)")
    p.add_argument("--cell-timeout", type=_positive_int, default=None, metavar="SECONDS",
                   help="fail a notebook whose cell runs longer than this (default: no limit)")
    p.set_defaults(func=_cmd_report, subparser=p)


def _cmd_report(args, parser) -> int:
    from kdlib import report

    try:
        parameters = dict(report.parse_parameter(t) for t in args.parameter)
        clash = [p for p in report.RUNNER_PARAMETERS if p in parameters]
        if clash:
            raise ValueError(f"-p {clash[0]}=... is not allowed: the runner sets "
                             f"{list(report.RUNNER_PARAMETERS)} (use --scale)")
        sources = report.find_notebooks(args.notebooks, args.notebooks_dir)
    except ValueError as err:
        parser.error(str(err))
    results = report.run_reports(sources, args.out, args.scale, parameters, args.cell_timeout)
    return 0 if all(r.status == "ok" for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdlib",
        description="kdlib: knowledge distillation and calibration (Fan et al., ICML 2024).",
        epilog=SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", title="commands")
    sub.required = True
    _add_report_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``kdlib`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
