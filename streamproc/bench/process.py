"""The benchmark's view of processes: children it starts, their CPU and memory, profiles.

``ChildProcess`` runs ``python -m <module>`` with its own YAML settings (like the
integration harness's ``WorkerProcess``). ``CpuSampler`` records the cumulative CPU
seconds of named processes and of the whole machine a few times a second, so any
window of a run can be charged afterwards (cores = CPU seconds / wall seconds).
Peak memory is the kernel's high-water mark (``VmHWM``), exact rather than sampled.
``Profile`` attaches py-spy to a running process when it is installed.
"""

from __future__ import annotations

import bisect
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

MB = 1024 * 1024
CODE_ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int | None = None) -> float:
    """Resident set size now, in MiB."""
    return psutil.Process(pid or os.getpid()).memory_info().rss / MB


def peak_rss_mb(pid: int | None = None) -> float | None:
    """The process's peak resident set size (``VmHWM``) in MiB; ``None`` when unreadable."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on a local TCP port (to charge Kafka and Redis CPU)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, OSError):
        return None
    return None


def machine_state() -> dict[str, Any]:
    """What else ran on the machine: load averages, cores, memory, the busiest processes."""
    busiest = []
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for proc in procs:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
    time.sleep(1.0)
    for proc in procs:
        try:
            share = proc.cpu_percent(None)
            if share >= 5.0:
                command = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
                busiest.append({"pid": proc.pid, "cpu_percent": round(share, 1), "command": command[:160]})
        except psutil.Error:
            continue
    memory = psutil.virtual_memory()
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "cpu_busy_percent_1s": round(sum(p["cpu_percent"] for p in busiest), 1),
        "busiest_processes": sorted(busiest, key=lambda p: -p["cpu_percent"])[:8],
        "memory_total_mb": round(memory.total / MB),
        "memory_available_mb": round(memory.available / MB),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class _Series:
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def at(self, t: float) -> float | None:
        """The cumulative value at ``t`` by linear interpolation (clamped to the samples)."""
        if not self.times:
            return None
        i = bisect.bisect_left(self.times, t)
        if i == 0:
            return self.values[0]
        if i >= len(self.times):
            return self.values[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


class CpuSampler:
    """Samples cumulative CPU seconds of named pids and of the machine (``machine``) every ``interval_s``.

    ``usage(t0, t1)`` gives cores per name over a window (``time.time`` seconds),
    plus ``other``: machine CPU not charged to any named process. A thread watched with
    ``watch_thread`` (a worker's event-loop thread) is a part of its process: reported,
    not charged a second time.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self._pids: dict[str, psutil.Process] = {}
        self._threads: dict[str, tuple[psutil.Process, int]] = {}
        self._parts: set[str] = set()  # names of thread series: never charged as processes
        self._families: set[str] = set()  # names charged with their children's CPU too
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def watch(self, name: str, pid: int | None, with_children: bool = False) -> None:
        """Charge ``pid``'s CPU to ``name`` from now on (``None``: forget ``name``); with
        ``with_children``, also its child processes' (a worker's model processes)."""
        with self._lock:
            if pid is None:
                self._pids.pop(name, None)
                self._families.discard(name)
                return
            try:
                self._pids[name] = psutil.Process(pid)
            except psutil.Error:
                return
            if with_children:
                self._families.add(name)
            self._series[name] = _Series()
        self.sample()

    def watch_thread(self, name: str, pid: int | None, tid: int | None = None) -> None:
        """Charge thread ``tid`` of ``pid`` (default: its main thread) to ``name`` (``None``: forget)."""
        with self._lock:
            if pid is None:
                self._threads.pop(name, None)
                return
            try:
                self._threads[name] = (psutil.Process(pid), tid or pid)
            except psutil.Error:
                return
            self._parts.add(name)
            self._series[name] = _Series()
        self.sample()

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        times = psutil.cpu_times()
        busy = times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
        with self._lock:
            self._append("machine", now, busy + getattr(times, "steal", 0.0))
            for name, proc in list(self._pids.items()):
                try:
                    cpu = proc.cpu_times()
                    total = cpu.user + cpu.system
                    if name in self._families:
                        total += cpu.children_user + cpu.children_system + _live_children_cpu(proc)
                    self._append(name, now, total)
                except psutil.Error:
                    del self._pids[name]
            for name, (proc, tid) in list(self._threads.items()):
                try:
                    thread = next((t for t in proc.threads() if t.id == tid), None)
                except psutil.Error:
                    thread = None
                if thread is None:
                    del self._threads[name]
                    continue
                self._append(name, now, thread.user_time + thread.system_time)

    def _append(self, name: str, now: float, value: float) -> None:
        series = self._series.setdefault(name, _Series())
        series.times.append(now)
        series.values.append(value)

    def usage(self, t0: float, t1: float, names: list[str] | None = None) -> dict[str, float]:
        """Cores used in ``[t0, t1]`` by each name (only names sampled across the window)."""
        self.sample()
        span = max(t1 - t0, 1e-6)
        out: dict[str, float] = {}
        with self._lock:
            for name, series in self._series.items():
                if names is not None and name not in names and name != "machine":
                    continue
                ended = name not in self._pids and name not in self._threads and name != "machine"
                # a process that exited within the window keeps its last reading (its CPU up to
                # then); one still watched must have been sampled to the window's end
                if not series.times or series.times[0] > t0 + self.interval_s:
                    continue
                if series.times[-1] < t1 - 1e-3 and not (ended and series.times[-1] > t0):
                    continue
                start, end = series.at(t0), series.at(t1)
                if start is not None and end is not None:
                    out[name] = round((end - start) / span, 3)
        if "machine" in out:
            charged = sum(v for k, v in out.items() if k != "machine" and k not in self._parts)
            out["other"] = round(max(0.0, out["machine"] - charged), 3)
        return out


def _live_children_cpu(proc: psutil.Process) -> float:
    """CPU seconds of ``proc``'s live descendants (reaped ones are in its ``children_*`` times)."""
    total = 0.0
    for child in proc.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class ProcessCensus:
    """CPU seconds of every process at one moment; two censuses tell who used the CPU between them.

    The sampler charges the processes the benchmark knows; a census names the rest (the
    ``other`` share), so a figure taken while something else ran says what it was.
    """

    def __init__(self) -> None:
        self.at = time.time()
        self.cpu: dict[int, tuple[str, float]] = {}
        for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            times = proc.info["cpu_times"]
            if times is None:
                continue
            command = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])[:120]
            self.cpu[proc.pid] = (command, times.user + times.system)

    def cores_since(self, earlier: ProcessCensus, exclude: set[int]) -> float:
        """Cores used between ``earlier`` and this census by every process not in ``exclude``
        (a process that ended in between is not counted: its CPU cannot be read any more)."""
        span = max(self.at - earlier.at, 1e-6)
        used = sum(
            cpu - earlier.cpu.get(pid, (command, 0.0))[1]
            for pid, (command, cpu) in self.cpu.items()
            if pid not in exclude
        )
        return round(max(0.0, used) / span, 3)

    def busiest_since(self, earlier: ProcessCensus, exclude: set[int], top: int = 3) -> list[dict[str, Any]]:
        """The ``top`` processes by cores used between ``earlier`` and this census."""
        span = max(self.at - earlier.at, 1e-6)
        used = []
        for pid, (command, cpu) in self.cpu.items():
            if pid in exclude:
                continue
            before = earlier.cpu.get(pid, (command, 0.0))[1]
            cores = (cpu - before) / span
            if cores >= 0.02:
                used.append({"pid": pid, "cores": round(cores, 3), "command": command})
        return sorted(used, key=lambda p: -p["cores"])[:top]


class ChildProcess:
    """``python -m <module>`` with a YAML settings file; stopped with SIGTERM like in production."""

    def __init__(self, module: str, settings: Mapping[str, Any], workdir: Path, name: str) -> None:
        self.module = module
        self.settings = settings
        self.workdir = workdir
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, args: list[str] | None = None) -> ChildProcess:
        self.config_path.write_text(yaml.safe_dump(dict(self.settings), sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
        env["STREAMPROC_CONFIG_FILE"] = str(self.config_path)
        # The child runs the same streamproc as the benchmark, wherever it is imported from;
        # its working directory is the run's folder (Faust leaves <app id>-data folders there).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *(args or [])],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Profile:
    """py-spy sampling of one process for a while (``py-spy record --format raw``), if installed.

    ``gil``: sample only the thread holding the GIL (``--gil``): where a GIL-bound
    process spends the interpreter, event loop and plugin threads together.
    """

    def __init__(self, pid: int, out: Path, duration_s: float, rate_hz: int = 97, gil: bool = False) -> None:
        self.out = out
        self.error: str | None = None
        tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.proc: subprocess.Popen[bytes] | None = None
        if not Path(tool).exists():
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        command = [
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration_s))),
            "--rate",
            str(rate_hz),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "--output",
            str(out),
            *(["--gil"] if gil else []),
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop sampling (if still running) and summarise the profile."""
        if self.proc is None:
            return {"error": self.error}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"}
        return {"raw": str(self.out), **summarize_collapsed(self.out)}


def summarize_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    """Where the samples went: by thread, by leaf function (self) and by function (inclusive).

    Reads py-spy's raw (collapsed stack) format: ``frame;frame;... count`` per line;
    recorded with ``--threads``, the first frame is ``thread (<tid>): <thread name>``.
    """
    threads: dict[str, int] = {}
    leaf: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        thread = frames[0].split("): ", 1)[-1] if frames else "?"
        threads[thread] = threads.get(thread, 0) + count
        functions = [_frame_name(f) for f in frames[1:]]
        if functions:
            leaf[functions[-1]] = leaf.get(functions[-1], 0) + count
        for name in set(functions):
            inclusive[name] = inclusive.get(name, 0) + count

    def share(table: dict[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [{"frame": k, "samples": v, "percent": round(100.0 * v / max(total, 1), 1)} for k, v in ranked]

    return {"samples": total, "threads": share(threads), "self": share(leaf), "inclusive": share(inclusive)}


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: lines differ, functions matter."""
    name, _, where = frame.partition(" (")
    source = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(source).name})" if source else name
