"""The CLI leaves without tearing the interpreter down (``cli.app.leave``):
faster after the last byte, and still everything an exit must do -- exit
code, output flushed, atexit handlers, temporary folders' finalizers and
non-daemon threads' work all happen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

WRAPPER = textwrap.dedent(
    """
    import atexit, sys, tempfile, threading, time
    from pathlib import Path
    out = Path(sys.argv[1])
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    kept = tempfile.TemporaryDirectory(dir=out)  # its finalizer removes it at exit
    (out / "tmpdir").write_text(kept.name)
    def late() -> None:
        time.sleep(0.3)
        (out / "thread").write_text("done")
    threading.Thread(target=late).start()
    sys.argv = ["backupctl", *sys.argv[2:]]
    from backupctl.cli.app import main
    main()
    """
)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exit_work_done(tmp_path: Path) -> None:
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"
    assert not Path((tmp_path / "tmpdir").read_text()).exists()


def test_success_exits_0_with_output_and_exit_work_done(tmp_path: Path) -> None:
    done = _run(tmp_path, "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backupctl ")
    _exit_work_done(tmp_path)


def test_a_usage_error_keeps_its_code_and_its_one_line(tmp_path: Path) -> None:
    done = _run(tmp_path, "run")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: Missing option '--to'. (see 'backupctl run --help')"
    ]
    _exit_work_done(tmp_path)
