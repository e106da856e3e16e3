"""Several workers without PROMETHEUS_MULTIPROC_DIR warn loudly, under real gunicorn,
uvicorn, granian and hypercorn (counted from the command line, the environment, a config
file or the worker children); one worker does not warn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import Server, granian, gunicorn, hypercorn, uvicorn, uvicorn_worker


@pytest.mark.parametrize("argv", [
    gunicorn("tests.support.apps.multiprocess_asgi:app", "-w", "2",
             "-k", uvicorn_worker()),
    uvicorn("tests.support.apps.multiprocess_asgi:app", "--workers", "2"),
], ids=["gunicorn", "uvicorn"])
def test_several_workers_without_directory_warn_loudly(argv: list[str]) -> None:
    argv = [arg for arg in argv
            if arg not in ("--config", "python:tests.support.apps.gunicorn_conf")]
    with Server(argv) as server:
        server.metrics()
        output = server.output()
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in output, output
    assert "worker processes" in output


def _outputs_of(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """A server's (stderr, stdout) once it answers /metrics, so once at least one worker
    has built the middleware."""
    with Server(argv, env=env, separate_stderr=True) as server:
        server.metrics()
        return server.stderr(), server.output()


@pytest.mark.parametrize("argv", [
    granian("tests.support.apps.multiprocess_asgi:app", "--workers", "2"),
    hypercorn("tests.support.apps.multiprocess_asgi:app", "-w", "2"),
], ids=["granian", "hypercorn"])
def test_granian_and_hypercorn_workers_without_directory_warn_loudly(argv: list[str]) -> None:
    stderr, stdout = _outputs_of(argv)
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in stderr, stderr + stdout
    assert "seems to run in 2 worker processes" in stderr


def test_granian_workers_from_the_environment_warn_loudly() -> None:
    stderr, _ = _outputs_of(granian("tests.support.apps.multiprocess_asgi:app"),
                            {"GRANIAN_WORKERS": "2"})
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in stderr, stderr
    assert "GRANIAN_WORKERS=2" in stderr


def test_hypercorn_workers_from_a_config_file_warn_loudly(tmp_path: Path) -> None:
    # No worker count on the command line: seen through the parent's two worker children
    # (its third child, multiprocessing's resource tracker, is not a worker).
    config = tmp_path / "hypercorn.toml"
    config.write_text("workers = 2\n")
    stderr, _ = _outputs_of(
        hypercorn("tests.support.apps.multiprocess_asgi:app", "--config", str(config)))
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in stderr, stderr
    assert "2 worker children" in stderr


@pytest.mark.parametrize("argv", [
    granian("tests.support.apps.multiprocess_asgi:app", "--workers", "1"),
    granian("tests.support.apps.multiprocess_asgi:app"),
    hypercorn("tests.support.apps.multiprocess_asgi:app", "-w", "1"),
    hypercorn("tests.support.apps.multiprocess_asgi:app"),
], ids=["granian-1", "granian-default", "hypercorn-1", "hypercorn-default"])
def test_one_worker_does_not_warn(argv: list[str]) -> None:
    stderr, stdout = _outputs_of(argv)
    assert "PROMETHEUS_MULTIPROC_DIR is not set" not in stderr + stdout, stderr + stdout
