"""The test environment itself must be offline: these fail if `make test` forgot to block the network."""

import os
import socket

import pytest


def test_hub_is_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_non_loopback_connections_are_blocked():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("93.184.215.14", 80), timeout=2)
    with pytest.raises(OSError, match="blocked"):
        socket.getaddrinfo("pypi.org", 443)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    with socket.create_connection(server.getsockname(), timeout=2):
        pass
    server.close()
