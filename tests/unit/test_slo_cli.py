"""The `http-metrics` command line: where the output goes, how bad options are reported,
and that the console script and ``python -m asgi_metrics.slo`` run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asgi_metrics.slo.cli import main
from tests.support.paths import ROOT

RULES = ROOT / "example_apps" / "monitoring" / "rules.yml"


def test_output_goes_to_stdout_or_to_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "--availability", "99.9"]) == 0
    printed = capsys.readouterr().out
    target = tmp_path / "rules.yml"
    assert main(["rules", "--availability", "99.9", "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text(encoding="utf-8") == printed
    assert "HTTPErrorBudgetBurnFast" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rules", "--latency", "0.3:99"], "0.3s is not a bucket bound of the duration histogram;"
         " the bounds are 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5,"
         " 7.5, 10"),
        (["dashboard", "--latency", "0.3:99", "--buckets", "0.1,0.5"], "the bounds are 0.1, 0.5"),
        (["rules", "--latency", "0.25"], "expected SECONDS:PERCENT"),
        (
            ["rules", "--latency", "0.25:99", "--latency", "0.25:99.9"],
            "each threshold may be given once",
        ),
        (["rules", "--availability", "100"], "above 0 and below 100"),
        (["rules", "--route", "/x"], "--route needs an objective"),
        (
            ["rules", "--availability", "99", "--route", "/x", "--route", "/x"],
            "each route may be given once",
        ),
        (["rules", "--buckets", "1,x"], "--buckets: expected comma-separated numbers"),
        (["rules", "--buckets", "2,1"], "strictly increasing"),
        (["rules", "--namespace", "my-app"], "setting 'namespace'"),
        (["rules-test"], "rules-test needs an objective"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"http-metrics {args[0]}: error:" in err
    assert message in err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_python_m_and_the_console_script_run_it() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "asgi_metrics.slo", "rules"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )
    assert run.stdout == RULES.read_text(encoding="utf-8")
    script = Path(sys.executable).with_name("http-metrics")
    if not script.exists():
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    run = subprocess.run(
        [str(script), "rules"], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout == RULES.read_text(encoding="utf-8")
