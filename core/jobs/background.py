"""What every background job shares (batch generation, fine-tuning): its state files, written atomically
under runs_dir()/<run_id>/, and its process, detached in a new session so it outlives Streamlit reruns and
page reloads, and stopped as a process group."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from core import config


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The file's object, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start `cmd` detached (its own session: pgid == pid), stdout and stderr appended to `log_path`;
    returns its pid. Unbuffered output and slow tqdm keep the log readable while it runs."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "2", **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=config.PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=full_env)
    return proc.pid


def alive(pid: int | None) -> bool:
    """Whether the process runs (a zombie or no pid is not running)."""
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own finished child, else it lingers as a zombie
    except (ChildProcessError, OSError):
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie or a reused pid is not our run
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        pass
    return True


def signal_group(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Send `sig` to the job's process group (it is its session leader: pgid == pid). False if gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def log_tail(path: Path, max_chars: int) -> str:
    """The last `max_chars` of a log file, or '' when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
