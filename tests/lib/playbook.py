"""Run the real render playbook (ansible-playbook playbooks/render.yml) for tests and benchmarks."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from playbook_server import same_import_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
_SERVER = None


def base_env(env=None):
    """The environment of a run: this process's, with the checkout's Ansible settings, then env."""
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".venv" / "collections"))
    full_env.update(env or {})
    return full_env


class PlaybookServer:
    """Client of tests/lib/playbook_server.py: one server process, one forked child per run."""

    def __init__(self):
        self.env = base_env()
        # Its own short folder: a Unix socket path has at most 107 characters.
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="llmserve-pb-"))
        self.socket = str(self.folder / "playbook.sock")
        self.process = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("playbook_server.py")), self.socket],
                                        cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the playbook server did not start (exit %s)" % self.process.poll())

    def run(self, cmd, env, timeout):
        """CompletedProcess of one run, like subprocess.run(cmd, env=env, cwd=ROOT) with stdout and stderr together."""
        fd, output = tempfile.mkstemp(prefix="run-", suffix=".log", dir=self.folder)
        os.close(fd)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket)
            conn.settimeout(timeout)
            conn.sendall(json.dumps({"argv": cmd, "env": env, "cwd": str(ROOT), "output": output}).encode() + b"\n")
            lines = _Lines(conn)
            pid = json.loads(lines.next())["pid"]
            try:
                answer = lines.next()
            except TimeoutError:
                _end_run(pid, conn)
                raise subprocess.TimeoutExpired(cmd, timeout) from None
        if not answer:
            raise RuntimeError("the playbook server's child %d ended without an answer: %s" % (pid, cmd))
        with open(output, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        os.unlink(output)
        answer = json.loads(answer)
        result = subprocess.CompletedProcess(cmd, answer["returncode"], stdout=text)
        result.cpu_s = answer.get("cpu_s")
        return result

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


class _Lines:
    """JSON lines from the server's child; "" once the run and every process that shares its socket have ended."""

    def __init__(self, conn):
        self.conn = conn
        self.buffer = b""

    def next(self):
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(65536)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _end_run(pid, conn):
    """SIGTERM, which ansible-playbook passes on to its task workers (each in its own session), then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
        conn.settimeout(10)
        while conn.recv(65536):
            pass
    except (OSError, TimeoutError):
        pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_server():
    """Send the runs whose import-time settings are the shared ones to a playbook server, until stop_server()."""
    global _SERVER  # pylint: disable=global-statement  # one server per test process
    _SERVER = PlaybookServer()
    return _SERVER


def stop_server():
    global _SERVER  # pylint: disable=global-statement
    if _SERVER is not None:
        _SERVER.close()
        _SERVER = None


def run_playbook(playbook, inventory, extra_vars=None, tags=None, check=False, extra_args=(), env=None, timeout=900):
    """ansible-playbook from this venv; returns CompletedProcess (stdout and stderr together in .stdout)."""
    cmd = [str(BIN / "ansible-playbook"), "-i", str(ROOT / inventory) if not os.path.isabs(str(inventory)) else str(inventory),
           str(ROOT / "playbooks" / playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", tags]
    if check:
        cmd.append("--check")
    cmd += list(extra_args)
    full_env = base_env(env)
    started = time.monotonic()
    if _SERVER is not None and same_import_env(full_env, _SERVER.env):
        result = _SERVER.run(cmd, full_env, timeout)
    else:
        result = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=timeout, check=False)
    _log_run(playbook, inventory, extra_vars, tags, check, extra_args, time.monotonic() - started, getattr(result, "cpu_s", None))
    return result


def _log_run(playbook, inventory, extra_vars, tags, check, extra_args, seconds, cpu_s):  # pylint: disable=too-many-arguments
    """One JSON line per run into $LLMSERVE_PLAYBOOK_LOG when set: how many runs a suite makes and what they cost
    (seconds of wall time; cpu_s, the run's CPU seconds, for a run the playbook server made, else null)."""
    log = os.environ.get("LLMSERVE_PLAYBOOK_LOG")
    if not log:
        return
    entry = {"playbook": str(playbook), "inventory": str(inventory), "extra_vars": extra_vars, "tags": tags,
             "check": check, "args": list(extra_args), "seconds": round(seconds, 1), "cpu_s": cpu_s, "ended": round(time.time(), 1),
             "test": os.environ.get("PYTEST_CURRENT_TEST", ""), "worker": os.environ.get("PYTEST_XDIST_WORKER", "")}
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def render(dest, inventory="inventories/workstation", extra_vars=None, tags=None, playbook="render.yml", **kwargs):
    """Render the bundle of an inventory into dest (render.yml, or plan.yml for the plan report); the CompletedProcess."""
    ev = {"llmserve_render_dir": str(dest)}
    ev.update(extra_vars or {})
    return run_playbook(playbook, inventory, extra_vars=ev, tags=tags, **kwargs)


def config_without_preload(folder):
    """A copy of the checkout's ansible.cfg in folder without the preload callback; returns its path."""
    lines = (ROOT / "ansible.cfg").read_text(encoding="utf-8").splitlines(True)
    plain = pathlib.Path(folder) / "ansible.cfg"
    plain.write_text("".join(line for line in lines if not line.startswith("callbacks_enabled")), encoding="utf-8")
    return plain


def recaps(output):
    """{host: {'ok': n, 'changed': n, 'failed': n, ...}} of the PLAY RECAP lines (a host's first)."""
    out = {}
    for line in output.splitlines():
        host, sep, counts = line.partition(":")
        if sep and len(host.split()) == 1 and counts.split()[:1] and counts.split()[0].startswith("ok="):
            out.setdefault(host.strip(), {k: int(v) for k, v in (p.split("=") for p in counts.split())})
    return out


def recap(output):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the PLAY RECAP line for localhost."""
    found = recaps(output).get("localhost")
    if found is None:
        raise AssertionError("no PLAY RECAP for localhost in:\n" + output[-3000:])
    return found
