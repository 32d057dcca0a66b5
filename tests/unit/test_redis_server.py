"""tests/lib/redis_server.py: when the test Redis counts as ready. A Redis with persistence answers LOADING to every
command while it reads its append-only file back after a restart; that is "not yet", not a failure, while any other
error reply still fails at once."""

from __future__ import annotations

import socket
import threading

import pytest

from redis_server import RedisServer


def _scripted_redis(replies):
    """A listening socket that answers AUTH with +OK and each other command with the next of `replies`, one
    connection per command pair, as RedisServer.command_reply opens them. Returns (port, the commands it got)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        for reply in replies:
            conn, dummy = listener.accept()
            with conn:
                stream = conn.makefile("rb")
                for answer in (b"+OK\r\n", reply):
                    count = int(stream.readline()[1:])
                    seen.append([stream.read(int(stream.readline()[1:]) + 2)[:-2].decode() for dummy in range(count)])
                    conn.sendall(answer)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], seen


def test_a_redis_loading_its_data_is_not_ready_yet_then_ready_on_pong(tmp_path):
    port, seen = _scripted_redis([b"-LOADING Redis is loading the dataset in memory\r\n", b"+PONG\r\n"])
    server = RedisServer(tmp_path, port=port)
    assert server.ready() is False
    assert server.ready() is True
    assert seen == [["AUTH", server.password], ["PING"]] * 2


def test_another_error_reply_is_not_taken_for_loading(tmp_path):
    port, dummy = _scripted_redis([b"-WRONGPASS invalid username-password pair\r\n"])
    with pytest.raises(RuntimeError, match="WRONGPASS"):
        RedisServer(tmp_path, port=port).ready()
