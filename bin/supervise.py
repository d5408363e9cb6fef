"""The embedded runtime behind ``make run`` / ``bin/run``: Airflow's components under one supervisor.

Replaces ``airflow standalone`` so that

* nothing listens on all interfaces: the scheduler and the triggerer start with
  ``--skip-serve-logs`` (Airflow's log servers bind ``0.0.0.0``/``[::]`` with a hard-coded
  host; with LocalExecutor on one machine the UI reads the log files directly), and the
  api-server binds ``AIRFLOW__API__HOST`` (127.0.0.1 by default);
* stopping the platform stops its work: on SIGINT (Ctrl-C), SIGTERM or SIGHUP every
  component's process group gets SIGTERM, what is left after the grace period gets SIGKILL,
  every descendant (LocalExecutor workers, task processes, which run in process groups of
  their own) is killed, and so are the runtime's engines. A second signal skips the grace period.

**The runtime owns the local engines.** One component per engine of ``ETL_RUNTIME_ENGINES``
(default ``dask,spark``) runs :mod:`include.etl.clusters.runtime`: it starts the engine, writes
its handle to ``$ETL_RUNTIME_DIR/<backend>.json`` (runs attach through it), starts a new one if
it dies and stops it with the platform. Nothing else starts, finds or stops engine processes.

The supervisor is a child subreaper: processes orphaned below it (a task process whose
LocalExecutor worker died) are re-parented to it instead of to init, so they stay in its process
tree, are reaped by it and are stopped with it. If the supervisor itself is SIGKILLed, each
component gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``), and so does each engine process
when its owner dies.

Each component starts as ``bin/airflow <component>`` in its own session (so the terminal's
Ctrl-C reaches the supervisor only, which then stops everything in order). The first one is
started alone until ``bin/airflow`` has exec'd Airflow, so that a new AIRFLOW_HOME is migrated
once, not four times concurrently.

Environment: ``ETL_RUN_STOP_GRACE``: the most seconds the components and their tasks get between
SIGTERM and SIGKILL (default 10; they usually need 2-7 s).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.etl.clusters import die_with_parent, group_members  # noqa: E402
from include.etl.clusters.runtime import RUNTIME_DIR_VAR, engine_file  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36

COMPONENTS: list[tuple[str, list[str]]] = [
    ("api-server", ["api-server"]),
    ("scheduler", ["scheduler", "--skip-serve-logs"]),
    ("dag-processor", ["dag-processor"]),
    ("triggerer", ["triggerer", "--skip-serve-logs"]),
]


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in a forked child
except OSError:
    _LIBC = None


def _prctl(option: int, value: int) -> bool:
    try:
        return _LIBC is not None and _LIBC.prctl(option, value, 0, 0, 0) == 0
    except AttributeError:
        return False


def say(msg: str) -> None:
    print(f"{'run':13} | {time.strftime('%H:%M:%S')} {msg}", flush=True)


@dataclass
class Component:
    name: str
    args: list[str]
    proc: subprocess.Popen | None = None
    buf: bytes = b""
    exited: int | None = None
    engine: bool = False  # an engine's owner: its exit is reported, the platform goes on without it


@dataclass
class Supervisor:
    home: Path
    components: list[Component]
    grace: float = 9.0  # the most the components (and their tasks, engines) get to end after SIGTERM
    ready_check: object = None  # callable() -> bool, or None
    banner: str = ""
    _sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _signals: list[int] = field(default_factory=list)
    _seen: dict[int, str] = field(default_factory=dict)  # pid -> command line, of every descendant seen

    # ---- start -------------------------------------------------------------------------

    def start(self) -> None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        for index, comp in enumerate(self.components):
            comp.proc = subprocess.Popen(
                comp.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent, cwd=ROOT,
            )
            os.set_blocking(comp.proc.stdout.fileno(), False)
            self._sel.register(comp.proc.stdout, selectors.EVENT_READ, comp)
            say(f"started {comp.name} (pid {comp.proc.pid})")
            if index == 0 and len(self.components) > 1:
                self._wait_exec(comp)
            if self._signals:
                return

    def _wait_exec(self, comp: Component, timeout: float = 900) -> None:
        """Until the wrapper script (``bin/airflow``: bootstrap, migration) has exec'd its command."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._signals:
            self._pump(0.1)
            try:
                exe = os.path.basename(psutil.Process(comp.proc.pid).exe())
            except psutil.Error:
                return
            if comp.proc.poll() is not None or not exe.startswith(("bash", "sh", "dash")):
                return

    # ---- run ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._signals.append(signum)
            if len(self._signals) > 1:
                self.grace = 0  # a second Ctrl-C: no more waiting

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)

    def run(self) -> int:
        """Start the components, print their output, and stop everything on a signal or a component's exit."""
        self.install_signal_handlers()
        self.start()
        ready = self.ready_check is None
        next_probe = next_scan = 0.0
        failed: Component | None = None
        while not self._signals:
            self._pump(0.2)
            self._reap_orphans()
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + 1
                self._remember_descendants()
            for comp in self.components:
                if comp.proc is None or comp.proc.poll() is None or comp.exited is not None:
                    continue
                if comp.engine:
                    comp.exited = comp.proc.returncode
                    say(f"WARNING: the {comp.name} engine's owner exited with code {comp.exited} (see its output "
                        f"above): runs on {comp.name} fail until the platform is restarted")
                else:
                    failed = comp
            if failed:
                say(f"{failed.name} exited with code {failed.proc.returncode}; stopping the platform")
                break
            if not ready and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1
                try:
                    ready = bool(self.ready_check())
                except Exception:  # noqa: BLE001 - not up yet
                    ready = False
                if ready and self.banner:
                    print(self.banner, flush=True)
        if self._signals:
            say(f"received {signal.Signals(self._signals[0]).name}; stopping the platform")
        self.shutdown()
        return 1 if failed else 0

    def _pump(self, timeout: float) -> None:
        """Print the components' output lines, prefixed with their name."""
        for key, _ in self._sel.select(timeout):
            comp: Component = key.data
            try:
                chunk = os.read(key.fileobj.fileno(), 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._sel.unregister(key.fileobj)
                if comp.buf:
                    self._emit(comp, comp.buf)
                    comp.buf = b""
                continue
            *lines, comp.buf = (comp.buf + chunk).split(b"\n")
            for line in lines:
                self._emit(comp, line)

    @staticmethod
    def _emit(comp: Component, line: bytes) -> None:
        try:
            print(f"{comp.name:13} | {line.decode(errors='replace').rstrip()}", flush=True)
        except BrokenPipeError:
            pass

    def _reap_orphans(self) -> None:
        """Reap re-parented orphans that exited (as a subreaper we are their parent); never our own Popen children."""
        ours = {c.proc.pid for c in self.components if c.proc is not None}
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in ours:
                return  # nothing exited, or a component: Popen.poll() reaps it
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass

    def _remember_descendants(self) -> list[psutil.Process]:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return []
        for child in children:
            try:  # refreshed: a LocalExecutor worker or a task sets its process title after the fork
                self._seen[child.pid] = " ".join(child.cmdline())[:120] or child.name()
            except psutil.Error:
                self._seen.setdefault(child.pid, "?")
        return children

    # ---- stop --------------------------------------------------------------------------

    def engine_processes(self) -> set[int]:
        """The runtime's engines: their owners (components) and every process below them."""
        found: set[int] = set()
        for comp in self.components:
            if comp.engine and comp.proc is not None:
                found.add(comp.proc.pid)
                try:
                    found.update(p.pid for p in psutil.Process(comp.proc.pid).children(recursive=True))
                except psutil.Error:
                    pass
        return found

    def shutdown(self) -> None:
        """Stop the components, the processes below them and the runtime's engines; say what was stopped."""
        t0 = time.monotonic()
        deadline = t0 + self.grace  # then SIGKILL: Ctrl-C leaves nothing after grace (9 s) and the kill
        live = [c for c in self.components if c.proc is not None]
        self._remember_descendants()
        last = [c for c in live if c.name == "api-server" or c.engine]
        first = [c for c in live if c not in last]
        # 1. SIGTERM the process group of every Airflow component but the api-server. A running task's
        #    supervisor (in a LocalExecutor worker, the scheduler's group) forwards the SIGTERM to
        #    its task process (own group), whose on_kill cancels its job on the engine while the
        #    engine is still up. Nothing is signalled twice: a second SIGTERM makes Airflow's
        #    components skip their own clean-up.
        for comp in first:
            _killpg(comp.proc.pid, signal.SIGTERM)
        # The scheduler and the tasks below it (not the triggerer or dag-processor, which end meanwhile),
        # for 70 % of the grace period: Airflow's task supervisor SIGKILLs a task 5 s after its SIGTERM.
        scheduler = [c for c in first if c.name == "scheduler"]
        self._wait_for(scheduler, t0 + 0.7 * self.grace, descendants_too=True)
        # 2. The api-server (the tasks could report their end to its execution API until now) and the
        #    engines' owners, which stop their engines: no task is left to use them.
        for comp in last:
            _killpg(comp.proc.pid, signal.SIGTERM)
        self._wait_for(live, deadline)
        # 3. SIGKILL whatever of the tree is left.
        killed = self._kill_tree(live)
        if killed:
            say(f"SIGKILLed {len(killed)} process(es) still running after the grace period: "
                + ", ".join(f"{pid} ({cmd[:50]})" for pid, cmd in sorted(killed.items())))
        self._reap_orphans()
        self._forget_killed_engines(live)
        self._report(live, t0)

    def _forget_killed_engines(self, live: list[Component]) -> None:
        """Remove the handle file of an engine whose owner was killed before its own clean-up: the
        file names an engine that is gone (a file naming another owner is left alone)."""
        root = os.environ.get(RUNTIME_DIR_VAR)
        for comp in live if root else ():
            path = engine_file(Path(root), comp.name)
            try:
                if comp.engine and json.loads(path.read_text()).get("owner", {}).get("pid") == comp.proc.pid:
                    path.unlink()
                    say(f"removed {path}: its owner (pid {comp.proc.pid}) was killed before removing it")
            except (OSError, ValueError, AttributeError):
                continue

    def _kill_tree(self, live: list[Component]) -> dict[int, str]:
        """SIGKILL the components' process groups and every live descendant (workers, task processes
        and engine processes in groups of their own, orphans re-parented to us); reap the components."""
        killed: dict[int, str] = {}
        for _ in range(5):  # processes can fork while being killed
            leftovers = [p.pid for p in self._remember_descendants() if _alive(p.pid)]
            for comp in live:
                leftovers += group_members({comp.proc.pid})
                _killpg(comp.proc.pid, signal.SIGKILL)
            for pid in leftovers:
                if _kill(pid, signal.SIGKILL):
                    killed.setdefault(pid, self._seen.get(pid, "?"))
            if not leftovers:
                break
            time.sleep(0.1)
        for comp in live:
            try:
                comp.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            comp.exited = comp.proc.returncode
        self._pump(0)
        self._reap_orphans()
        return killed

    def _report(self, live: list[Component], t0: float) -> None:
        comp_pids = {c.proc.pid for c in live}
        for comp in live:
            say(f"stopped {comp.name} (pid {comp.proc.pid}, exit code {comp.exited})")
        others = {pid: cmd for pid, cmd in self._seen.items() if pid not in comp_pids}
        if others:
            say(f"stopped {len(others)} other process(es) below them:")
            for pid, cmd in sorted(others.items()):
                say(f"  {pid} {cmd}")
        left = [p for p in self._seen if _alive(p)]
        if left:
            say(f"WARNING: still running after the shutdown: {sorted(left)}")
        say(f"platform stopped in {time.monotonic() - t0:.1f} s")

    def _wait_for(self, comps: list[Component], deadline: float, descendants_too: bool = False) -> None:
        """Until ``comps``, their process groups (and, if asked, every other descendant but the
        remaining components and engines) have ended, or ``deadline``; printing their output meanwhile."""
        others = {c.proc.pid for c in self.components if c.proc is not None and c not in comps}
        engines = self.engine_processes() if descendants_too else set()
        while time.monotonic() < deadline:
            self._pump(0.1)
            self._reap_orphans()
            if any(c.proc.poll() is None or group_members({c.proc.pid}) for c in comps):
                continue
            if descendants_too and any(_alive(p.pid) for p in self._remember_descendants()
                                       if p.pid not in others and _pgid(p.pid) not in others and p.pid not in engines):
                continue
            return


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---- make run --------------------------------------------------------------------------


def _banner(home: Path) -> str:
    port = os.environ.get("AIRFLOW__API__PORT", "8080")
    host = os.environ.get("AIRFLOW__API__HOST", "127.0.0.1")
    pw_file = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(home / "simple_auth_manager_passwords.json"))
    try:
        password = json.loads(Path(pw_file).read_text())["admin"]
    except (OSError, ValueError, KeyError):
        password = f"(see {pw_file})"
    return f"""\
================================================================================
 Airflow UI:  http://localhost:{port}   (bound to {host}; nothing else listens)
 Login:       admin / {password}
              (generated on first start; stored in {pw_file}, mode 600)
 AIRFLOW_HOME {home}      lake: {os.environ.get("ETL_LAKE_ROOT", "")}
 Executor:    {os.environ.get("AIRFLOW__CORE__EXECUTOR", "")}, parallelism {os.environ.get("AIRFLOW__CORE__PARALLELISM", "32")}
 Engines:     {os.environ.get("ETL_RUNTIME_ENGINES", "dask,spark")} (runs attach; see {os.environ.get("ETL_RUNTIME_DIR", "")})
 Stop with Ctrl-C (stops the components, running tasks and the engines).
 Trigger 'olympics_etl' from the UI ("Trigger" -> form) or:
   bin/airflow dags trigger olympics_etl -c '{{"backend": "dask"}}'
================================================================================"""


def warm_execution_api(base: str) -> None:
    """Have the api-server build its execution API now, not during the first task.

    Cadwyn builds the versioned routes of the task execution API on the first request to
    ``/execution`` (2.4-2.7 s of CPU on this 2-core machine, during which the api-server's event
    loop serves nothing): without this, the first task after a start waits for it.
    """
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"{base}/execution/health", timeout=120) as resp:
            resp.read()
        say(f"execution API ready in {time.monotonic() - t0:.1f} s")
    except OSError as exc:
        say(f"could not warm up the execution API ({exc}); the first task will wait for it")


def ready_check(base: str):
    """``check() -> bool``: True once every component reports healthy and the execution API is warm.

    Raises until the api-server answers; its first answer starts :func:`warm_execution_api` in a thread.
    """
    warm: list[threading.Thread] = []

    def check() -> bool:
        with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2) as resp:
            health = json.load(resp)
        if not warm:
            warm.append(threading.Thread(target=warm_execution_api, args=(base,), name="warm-execution-api", daemon=True))
            warm[0].start()
        return not warm[0].is_alive() and all(health.get(k, {}).get("status") == "healthy"
                                              for k in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    return check


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=f"{'run':13} | %(asctime)s %(message)s", datefmt="%H:%M:%S")
    home = Path(os.environ["AIRFLOW_HOME"]).absolute()
    airflow = str(ROOT / "bin" / "airflow")
    from include.etl.settings import Settings

    engines = [Component(name, [sys.executable, "-m", "include.etl.clusters.runtime", name], engine=True)
               for name in Settings.from_env().runtime_engines]
    sup = Supervisor(
        home=home,
        components=[Component(name, [airflow, *args]) for name, args in COMPONENTS] + engines,
        grace=float(os.environ.get("ETL_RUN_STOP_GRACE", "9")),
        ready_check=ready_check(f"http://127.0.0.1:{os.environ.get('AIRFLOW__API__PORT', '8080')}"),
        banner=_banner(home),
    )
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
