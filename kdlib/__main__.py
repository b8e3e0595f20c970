"""Command line: ``kdlib <command>`` or ``python -m kdlib <command>``.

Commands:
    report   execute the notebooks at a scale and write HTML reports + an index
    plan     list the runs a report would train, with GPU-hours (kdlib.commands)
    run      like report, with the sweep cells on a Dask cluster (--executor)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def _jobs(text: str):
    """'auto' or an integer >= 1."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1 or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), got {value}")
    return value


def _notebook_timeout(text: str):
    """Seconds (> 0), 'none' (no limit) or 'scale' (the scale's default)."""
    if text.strip().lower() in ("none", "scale"):
        return None if text.strip().lower() == "none" else "scale"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds, 'none' or 'scale', got {text!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds (or 'none'), got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _timeout_help() -> str:
    from kdlib.report import NOTEBOOK_TIMEOUT_S

    defaults = ", ".join(f"{s} {NOTEBOOK_TIMEOUT_S[s]:g} s" for s in SCALES)
    return (f"stop a notebook that runs longer than this, keeping its partial report; "
            f"'none': no limit (default: per scale: {defaults})")


RUN_DESCRIPTION = (
    "Execute notebooks like `kdlib report`, with every sweep cell sent to the Dask\n"
    "scheduler at --executor (KDLIB_EXECUTOR, see docs/sweeps.md), so the cells spread\n"
    "over its workers; the reports are rendered from the filled sweep stores.\n\n")


def _add_report_parser(sub, name: str = "report") -> None:
    p = sub.add_parser(
        name,
        help="execute notebooks and write HTML reports" if name == "report" else
             "execute notebooks with their sweep cells on a Dask cluster",
        description=(RUN_DESCRIPTION if name == "run" else "") + (
            "Execute notebooks (jupytext .py sources) with papermill in a fresh kernel of\n"
            "this interpreter, injecting SCALE and INTERACTIVE=False, and write\n"
            "<out>/<stem>.ipynb, <out>/<stem>.html, <out>/index.html and <out>/summary.json,\n"
            "plus <out>/<stem>.key.png (key figure) and <out>/<stem>.results/ (CSV/JSONL)\n"
            "when the notebook makes them. While a notebook runs, one line shows its cell\n"
            "(i of n) and its progress bars (plain lines when stderr is not a terminal).\n"
            "Every notebook and -p is checked before any runs. A report is replaced only\n"
            "by a complete new one; a failed, timed-out or stopped run's partial report is\n"
            "<out>/<stem>.failed.html beside it. A failing notebook does not stop the\n"
            "others; the exit code is 1 if any failed, 2 for a usage error, and 128+N\n"
            "after signal N (SIGINT, SIGTERM: every running kernel is shut down, its\n"
            "partial report kept and the index written).\n\n"
            "--jobs runs several notebooks at once, each in its own kernel, with one\n"
            "progress line per running notebook. 'auto' (the default) is min(CPU cores,\n"
            "notebooks) at the smoke and default scales, whose notebooks train on one\n"
            "torch thread each, and 1 at the paper scale, where a notebook uses the whole\n"
            "machine (all cores, the GPU). With N > 1 each kernel gets OMP_NUM_THREADS =\n"
            "MKL_NUM_THREADS = cores // N unless they are set."
        ),
        epilog=SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("notebooks", nargs="*" if name == "report" else "+", metavar="NOTEBOOK",
                   help="a .py path, a stem (00_calibration_explorer) or a number (00); "
                        "default: every NN_*.py in --notebooks-dir")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="preset scale injected as SCALE (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output folder, created if missing (default: reports, or "
                        "reports/<scale>-dry-run with --dry-run)")
    p.add_argument("--notebooks-dir", default="notebooks",
                   help="where to find notebooks by stem or number (default: %(default)s)")
    p.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter the notebook declares in its parameters cell; "
                        "VALUE is a Python literal, else a string (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="inject DRY_RUN=True: every table, pair and loss of the scale runs "
                        "with each training cut to a few steps (the notebook must declare "
                        "DRY_RUN)")
    p.add_argument("--select", default=None, metavar="TEXT",
                   help="inject SELECT=TEXT, e.g. 'table=6 pair=resnet56->resnet14 seed=0': "
                        "run only that part (the notebook must declare SELECT; one that "
                        "matches nothing fails naming what exists)")
    p.add_argument("--jobs", "-j", type=_jobs, default="auto", metavar="N",
                   help="notebooks to run at once, each in its own kernel: an integer >= 1 "
                        "or 'auto' = min(CPU cores, notebooks) at smoke/default scale, 1 at "
                        "paper scale (default: %(default)s)")
    p.add_argument("--cell-timeout", type=_positive_int, default=None, metavar="SECONDS",
                   help="fail a notebook whose cell runs longer than this (default: no limit)")
    p.add_argument("--notebook-timeout", type=_notebook_timeout, default="scale",
                   metavar="SECONDS", help=_timeout_help())
    if name == "run":
        p.add_argument("--executor", required=True, metavar="dask://HOST:PORT",
                       help="the Dask scheduler that runs the sweep cells")
        p.add_argument("--resources", default=None, metavar="NAME=N",
                       help="Dask worker resources each cell needs, e.g. GPU=1")
    p.set_defaults(func=_cmd_report, subparser=p)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="list the runs a report would train, with GPU-hours (trains nothing)",
        description="Print every run (teachers, assistants, students) the selected notebooks "
                    "need at a scale, how many are cached or shared, and GPU-hours estimated "
                    "from a throughput figure. Nothing is trained or loaded.",
        epilog=SCALE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="a stem or a number (default: every notebook)")
    p.add_argument("--scale", choices=SCALES, default="paper",
                   help="preset scale (default: %(default)s)")
    p.add_argument("--select", default="", metavar="TEXT",
                   help="the selection, as for kdlib report --select")
    p.add_argument("--dry-run", action="store_true", help="plan the dry run's runs")
    p.add_argument("--throughput", type=_positive_float, default=None, metavar="IMAGES_PER_S",
                   help="training images per second of one GPU (default: kdlib.plan's "
                        "stated estimate)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write every run as CSV")
    p.set_defaults(func=_cmd_plan, subparser=p)


def _cmd_plan(args, parser) -> int:
    from kdlib import commands

    try:
        text = commands.plan_command(args.notebooks, args.scale, args.select, args.dry_run,
                                     args.throughput, args.csv)
    except ValueError as err:
        parser.error(str(err))
    print(text)
    return 0


def default_out(scale: str, dry_run: bool) -> str:
    """The output folder when --out is not given: reports, or reports/<scale>-dry-run."""
    return f"reports/{scale}-dry-run" if dry_run else "reports"


def _cmd_report(args, parser) -> int:
    from kdlib import report

    try:
        parameters = dict(report.parse_parameter(t) for t in args.parameter)
        clash = [p for p in report.RUNNER_PARAMETERS if p in parameters]
        if clash:
            raise ValueError(f"-p {clash[0]}=... is not allowed: the runner sets "
                             f"{list(report.RUNNER_PARAMETERS)} (use --scale)")
        flagged = [p for p in report.FLAG_PARAMETERS if p in parameters]
        if flagged:
            raise ValueError(f"-p {flagged[0]}=... is not allowed: use "
                             f"{report.FLAG_PARAMETERS[flagged[0]]}")
        if args.select is not None:
            try:
                report.flag_parameters(select=args.select)
            except ValueError as err:
                raise ValueError(f"--select: {err}") from None
        if args.out is None:
            args.out = default_out(args.scale, args.dry_run)
        try:
            report.check_out_dir(args.out)
        except ValueError as err:
            raise ValueError(f"--out: {err}") from None
        sources = report.find_notebooks(args.notebooks, args.notebooks_dir)
        report.check_run(sources, args.out, args.scale, parameters, args.cell_timeout,
                         args.notebook_timeout, dry_run=args.dry_run, select=args.select)
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except ValueError as err:
        parser.error(str(err))
    except OSError as err:
        parser.error(f"--out: cannot create the folder {args.out!r}: "
                     f"{err.strerror or err}")
    env = {}
    if getattr(args, "executor", None) is not None:
        from kdlib import commands

        try:
            env = commands.executor_environment(args.executor, args.resources)
        except ValueError as err:
            parser.error(str(err))
    try:
        from kdlib.commands import with_environment

        results = with_environment(
            env, report.run_reports, sources, args.out, args.scale, parameters,
            args.cell_timeout, notebook_timeout=args.notebook_timeout, dry_run=args.dry_run,
            select=args.select, jobs=args.jobs)
    except report.StopRequested as stop:
        return 128 + stop.signum
    return 0 if all(r.status == "ok" for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kdlib",
        description="kdlib: knowledge distillation and calibration (Fan et al., ICML 2024).",
        epilog=SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", title="commands",
                                metavar="{report,plan,run}")
    sub.required = True
    _add_report_parser(sub)
    _add_plan_parser(sub)
    _add_report_parser(sub, "run")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``kdlib`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
