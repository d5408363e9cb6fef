"""bin/supervise.py (the embedded runtime's supervisor) with dummy components, in a few seconds.

The real `bin/run` is covered by tests/e2e/test_run_entrypoint.py (SIGINT during a Spark run);
here SIGTERM, a component that ignores SIGTERM, a task-like grandchild in its own session
that ignores it too, a process orphaned below the supervisor, an engine owner whose engine runs
in a session of its own, an engine owner that exits (the platform goes on), an engine owner
killed after the grace period (its handle file goes with it), and processes that
are not the supervisor's descendants (another platform's, or a leftover carrying this
AIRFLOW_HOME's cluster workdir): those are not its to stop, and survive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.procs import kill_started_under

PY = sys.executable
IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

DRIVER = textwrap.dedent("""
    import importlib.util, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("supervise", sys.argv[1])
    mod = sys.modules["supervise"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    home, py = Path(sys.argv[2]), sys.executable
    comps = [mod.Component(name.removeprefix("engine:"), [py, str(home / f"{name.removeprefix('engine:')}.py")],
                           engine=name.startswith("engine:")) for name in sys.argv[3:]]
    sup = mod.Supervisor(home=home, components=comps, grace=2)
    sys.exit(sup.run())
""")

# "scheduler": starts a task process in its own session that ignores SIGTERM, and a "start
# task" that launches a detached process and exits (so that process is orphaned).
SCHEDULER = textwrap.dedent(f"""
    import os, subprocess, sys, time
    from pathlib import Path
    home = Path({{home!r}})
    task = subprocess.Popen([sys.executable, "-c", {IGNORE_TERM!r}], start_new_session=True)
    (home / "task.pid").write_text(str(task.pid))
    starter = (
        "import os, subprocess, sys; from pathlib import Path; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True, "
        "env=dict(os.environ, ETL_CLUSTER_WORKDIR=sys.argv[1])); Path(sys.argv[2]).write_text(str(p.pid))"
    )
    subprocess.run([sys.executable, "-c", starter, str(home / "logs" / "clusters" / "run1" / "dask"), str(home / "orphan.pid")], check=True)
    print("scheduler up", flush=True)
    time.sleep(600)
""")

# "owner": an engine's owner, whose engine runs in a session of its own (as the Dask scheduler
# and the Spark JVM do) and which stops it on SIGTERM, slowly.
OWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    from pathlib import Path
    home = Path({home!r})
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    (home / "engine.pid").write_text(str(engine.pid))

    def stop(*_):
        time.sleep(0.5)
        engine.terminate()
        engine.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("engine up", flush=True)
    time.sleep(600)
""")


# "stuck": an engine's owner that wrote its handle file and ignores SIGTERM (its engine's stop hangs).
STUCK = textwrap.dedent("""
    import json, os, signal, time
    from pathlib import Path
    root = Path(os.environ["ETL_RUNTIME_DIR"])
    (root / "stuck.json").write_text(json.dumps({"state": "ready", "owner": {"pid": os.getpid()}}))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stuck up", flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _pid(path: Path) -> int:
    assert _wait(lambda: path.exists() and path.read_text().strip(), 20), f"{path} was not written"
    return int(path.read_text())


@pytest.fixture
def home(tmp_path):
    (tmp_path / "scheduler.py").write_text(SCHEDULER.format(home=str(tmp_path)))
    (tmp_path / "owner.py").write_text(OWNER.format(home=str(tmp_path)))
    (tmp_path / "stubborn.py").write_text(IGNORE_TERM)
    (tmp_path / "stuck.py").write_text(STUCK)
    (tmp_path / "quick.py").write_text("import sys, time; time.sleep(1); sys.exit(3)")
    (tmp_path / "driver.py").write_text(DRIVER)
    return tmp_path


def _start(home: Path, *components: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, str(home / "driver.py"), str(ROOT / "bin" / "supervise.py"), str(home), *components],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)


def _detached(env_workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", "import time; time.sleep(600)"], start_new_session=True,
                            env=dict(os.environ, ETL_CLUSTER_WORKDIR=str(env_workdir)))


def test_sigterm_stops_components_tasks_and_engines_and_nothing_else(home, tmp_path_factory):
    other_home = tmp_path_factory.mktemp("other-home")
    stray = _detached(home / "logs" / "clusters" / "run2" / "spark")  # not below the supervisor: not its own
    decoy = _detached(other_home / "runtime" / "spark")  # another platform's engine
    sup = _start(home, "scheduler", "stubborn", "engine:owner")
    try:
        task, orphan, engine = _pid(home / "task.pid"), _pid(home / "orphan.pid"), _pid(home / "engine.pid")
        def stubborn_child():
            return next((c.pid for c in psutil.Process(sup.pid).children() if "stubborn.py" in " ".join(_cmdline(c))), None)

        assert _wait(stubborn_child, 20)
        stubborn = stubborn_child()
        procs = psutil.Process(sup.pid).children(recursive=True)
        assert orphan in [p.pid for p in procs], "the orphaned process is not re-parented to the supervisor"
        assert engine in [p.pid for p in procs], "the engine is not below the supervisor"
        everything = {p.pid for p in procs} | {task, orphan, engine}
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=30)
        elapsed = time.monotonic() - t0
        assert _wait(lambda: not [p for p in everything if _alive(p)], 5), [p for p in everything if _alive(p)]
        assert sup.returncode == 0, out
        assert elapsed < 10, f"{elapsed:.1f} s\n{out}"
        assert "received SIGTERM" in out and "platform stopped" in out, out
        assert "stopped owner (pid" in out and "exit code 0" in out, out  # the owner stopped its engine itself
        # the stubborn component and the task in its own session (both ignore SIGTERM) and the orphan
        # (in a session of its own, so no group signal reached it): SIGKILLed after the grace period
        assert "SIGKILLed 3 process(es)" in out, out
        assert f"{stubborn} (" in out and f"{task} (" in out and f"{orphan} (" in out, out
        assert "scheduler up" in out and "engine up" in out  # the components' output is passed through
        assert _alive(decoy.pid), "another platform's engine was killed"
        assert _alive(stray.pid), "a process that is not the supervisor's descendant was killed"
    finally:
        for proc in (sup, stray, decoy):
            proc.kill()
            proc.wait()
        for name in ("task.pid", "orphan.pid", "engine.pid"):
            if (home / name).exists():
                try:
                    os.kill(int((home / name).read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_the_handle_file_of_an_engine_owner_killed_after_the_grace_period_is_removed(home):
    root = home / "runtime"
    root.mkdir()
    (root / "owner.json").write_text('{"state": "ready", "owner": {"pid": 1}}')  # names another owner: kept
    sup = _start(home, "engine:stuck", "engine:owner", env=dict(os.environ, ETL_RUNTIME_DIR=str(root)))
    try:
        assert _wait(lambda: (root / "stuck.json").exists(), 20)
        engine = _pid(home / "engine.pid")
        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=30)
        assert "SIGKILLed 1 process(es)" in out and f"removed {root / 'stuck.json'}" in out, out
        assert not (root / "stuck.json").exists(), out
        assert (root / "owner.json").exists(), out
        assert _wait(lambda: not _alive(engine), 5)
    finally:
        sup.kill()
        sup.wait()


def test_an_engine_owner_that_exits_is_reported_and_the_platform_goes_on(home):
    sup = _start(home, "stubborn", "engine:quick")
    try:
        assert _wait(lambda: len(psutil.Process(sup.pid).children()) == 1, 20), "the engine's owner did not exit"
        time.sleep(1.5)
        assert sup.poll() is None, "the platform stopped with its engine"
        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=30)
        assert "WARNING: the quick engine's owner exited with code 3" in out, out
        assert "received SIGTERM" in out and "platform stopped" in out, out
    finally:
        sup.kill()
        sup.wait()


def test_a_component_that_exits_stops_the_platform(home):
    sup = _start(home, "quick", "stubborn")
    try:
        out, _ = sup.communicate(timeout=30)
        assert sup.returncode == 1, out
        assert "quick exited with code 3; stopping the platform" in out, out
        assert "platform stopped" in out, out
    finally:
        sup.kill()
        sup.wait()


def test_components_get_sigterm_when_the_supervisor_is_killed(home):
    sup = _start(home, "scheduler")
    try:
        _pid(home / "task.pid"), _pid(home / "orphan.pid")  # both started: nothing is spawned after the cleanup
        component = psutil.Process(sup.pid).children()[0]
        sup.kill()  # no shutdown at all: the kernel's parent-death signal still stops the component
        sup.wait()
        assert _wait(lambda: not _alive(component.pid), 10), "the component outlived a SIGKILLed supervisor"
    finally:
        sup.kill()
        # Without a supervisor nothing stops the task and its orphan.
        for name in ("task.pid", "orphan.pid"):
            if (home / name).exists():
                try:
                    os.kill(int((home / name).read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        kill_started_under(str(home))


def _load_supervise():
    import importlib.util

    spec = importlib.util.spec_from_file_location("supervise_under_test", ROOT / "bin" / "supervise.py")
    mod = sys.modules["supervise_under_test"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


def test_ready_only_after_the_execution_api_is_warm():
    """The banner waits for the api-server's first /execution request, made by the supervisor, not a task."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    release = threading.Event()

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            seen.append(self.path)
            if self.path == "/execution/health":
                release.wait(20)  # Cadwyn building its routes
            body = json.dumps({k: {"status": "healthy"} for k in
                               ("metadatabase", "scheduler", "triggerer", "dag_processor")}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = _load_supervise().ready_check(f"http://127.0.0.1:{server.server_address[1]}")
        assert check() is False, "ready before the execution API was warmed"
        assert _wait(lambda: "/execution/health" in seen, 10), seen
        assert check() is False, "ready while the execution API is still building"
        release.set()
        assert _wait(check, 10), "never ready once the execution API answered"
        assert seen.count("/execution/health") == 1, seen
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_not_ready_while_the_api_server_does_not_answer():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        _load_supervise().ready_check(f"http://127.0.0.1:{port}")()
