"""The one subprocess helper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tasks.shell import CommandError, run_command


def test_streams_output_into_log_and_returns_result(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step" / "key.log"
    seen: list[str] = []
    result = run_command(
        [sys.executable, "-c", "import sys; print('hello'); print('err', file=sys.stderr)"],
        log_path=log,
        cwd=tmp_path,
        on_line=seen.append,
    )
    assert result.returncode == 0
    assert sorted(seen) == ["err", "hello"]
    text = log.read_text()
    assert "hello" in text and "err" in text
    assert "rc=0" in text
    assert result.peak_rss_mb >= 0


def test_failure_raises_with_tail_and_log_path(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(CommandError) as info:
        run_command(
            [sys.executable, "-c", "print('Out of memory'); raise SystemExit(3)"], log_path=log
        )
    assert info.value.result.returncode == 3
    assert "Out of memory" in str(info.value)
    assert str(log) in str(info.value)


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    log = tmp_path / "x.log"
    with pytest.raises(CommandError) as info:
        run_command(
            [sys.executable, "-c", f"print('token={secret}'); raise SystemExit(1)", secret],
            log_path=log,
            secrets=[secret],
        )
    assert secret not in log.read_text()
    assert secret not in str(info.value)
    assert secret not in " ".join(info.value.result.args)


def test_extra_path_is_prepended(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool.py"
    tool.write_text(f"#!{sys.executable}\nprint('from the shim')\n")
    tool.chmod(0o755)
    result = run_command(["mytool.py"], log_path=tmp_path / "t.log", extra_path=[bindir])
    assert "from the shim" in result.log_tail


def test_missing_program_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        run_command(["no-such-program"], log_path=tmp_path / "t.log")


def test_timeout_kills(tmp_path: Path) -> None:
    result = run_command(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        log_path=tmp_path / "t.log",
        timeout_s=0.5,
        check=False,
    )
    assert result.returncode != 0
    assert result.duration_s < 30


def test_peak_rss_is_measured_for_the_command_not_this_process(tmp_path: Path) -> None:
    # 300 MB touched and held for a while (the sampler sees it; above this process's own
    # high-water mark the kernel's figure counts too); a bare interpreter reports far less,
    # not this test process's RSS, which exec carries over into the child's rusage.
    code = (
        "import time\nb = bytearray(300 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\n"
        "time.sleep(1.5)\nprint('done')"
    )
    result = run_command([sys.executable, "-c", code], log_path=tmp_path / "x.log")
    small = run_command([sys.executable, "-c", "print('done')"], log_path=tmp_path / "y.log")
    assert result.peak_rss_mb > 290, result.peak_rss_mb
    assert small.peak_rss_mb < 100, small.peak_rss_mb
    assert f"peak_rss={result.peak_rss_mb:.1f}MB" in (tmp_path / "x.log").read_text()
