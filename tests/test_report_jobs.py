"""kdlib.report_jobs: how many notebooks `kdlib report` runs at once (no kernel)."""

from __future__ import annotations

import os

import pytest

from kdlib.__main__ import build_parser, main
from kdlib.report_jobs import cpu_cores, kernel_thread_env, resolve_jobs


def test_auto_is_one_per_core_up_to_the_notebooks_and_one_at_paper_scale():
    assert resolve_jobs("auto", "default", 10, cores=2) == 2
    assert resolve_jobs("auto", "smoke", 10, cores=16) == 10
    assert resolve_jobs("auto", "smoke", 3, cores=2) == 2
    assert resolve_jobs("auto", "default", 1, cores=8) == 1
    assert resolve_jobs("auto", "paper", 10, cores=64) == 1
    assert resolve_jobs("auto", "paper", 10, cores=2, dry_run=True) == 2  # one thread each
    assert resolve_jobs(4, "paper", 10) == 4  # asked for: the user's choice
    assert resolve_jobs(4, "default", 3) == 3  # never more than the notebooks


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", "all", None])
def test_jobs_must_be_auto_or_a_positive_integer(bad):
    with pytest.raises(ValueError, match="jobs must be 'auto' or an integer >= 1"):
        resolve_jobs(bad, "default", 3)


def test_resolve_jobs_checks_scale_and_count():
    with pytest.raises(ValueError, match="scale must be one of"):
        resolve_jobs("auto", "huge", 3)
    with pytest.raises(ValueError, match="n_notebooks must be an integer >= 1"):
        resolve_jobs("auto", "smoke", 0)


def test_cpu_cores_reads_affinity_and_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert cpu_cores(str(tmp_path / "missing")) == affinity
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 cores of quota: 2 threads busy at most
    assert cpu_cores(str(quota)) == min(affinity, 2)
    quota.write_text("max 100000\n")
    assert cpu_cores(str(quota)) == affinity
    quota.write_text("50000 100000\n")
    assert cpu_cores(str(quota)) == 1


def test_kernel_threads_split_the_cores_unless_the_user_set_them():
    assert kernel_thread_env(1, cores=8, environ={}) == {}
    assert kernel_thread_env(2, cores=8, environ={}) == {"OMP_NUM_THREADS": "4",
                                                         "MKL_NUM_THREADS": "4"}
    assert kernel_thread_env(3, cores=2, environ={}) == {"OMP_NUM_THREADS": "1",
                                                         "MKL_NUM_THREADS": "1"}
    assert kernel_thread_env(2, cores=8, environ={"OMP_NUM_THREADS": "3"}) == {
        "MKL_NUM_THREADS": "4"}
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        kernel_thread_env(0)


def test_cli_jobs_option(capsys):
    parse = build_parser().parse_args
    assert parse(["report"]).jobs == "auto"
    assert parse(["report", "--jobs", "3"]).jobs == 3
    assert parse(["report", "-j", "AUTO"]).jobs == "auto"
    for bad, message in [("0", "must be >= 1 (or 'auto')"), ("two", "integer >= 1 or 'auto'")]:
        with pytest.raises(SystemExit) as exc:
            main(["report", "--jobs", bad])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'auto' (the default) is min(CPU cores, notebooks) at the smoke and default " \
           "scales" in text
    assert "1 at the paper scale" in text
