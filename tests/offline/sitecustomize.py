"""Block network access for tests (loaded through PYTHONPATH by `make test`).

When ``DLBOOK_BLOCK_NETWORK=1``, every process started by the tests (pytest itself and the
Jupyter kernels nbval starts) refuses to connect to anything but loopback, so a hidden
download fails loudly instead of passing on a machine that happens to be online.
"""

import os

if os.environ.get("DLBOOK_BLOCK_NETWORK") == "1":
    import ipaddress
    import socket

    class NetworkBlocked(OSError):
        """A connection to a non-loopback address was attempted during the tests."""

    def _is_local(address) -> bool:
        if not isinstance(address, tuple):  # AF_UNIX paths and the like
            return True
        host = address[0]
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def _guard(method):
        def guarded(self, address, *args, **kwargs):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
                raise NetworkBlocked(f"network access blocked during tests: connect to {address!r}")
            return method(self, address, *args, **kwargs)

        return guarded

    socket.socket.connect = _guard(socket.socket.connect)
    socket.socket.connect_ex = _guard(socket.socket.connect_ex)

    _getaddrinfo = socket.getaddrinfo

    def _local_getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost") and not _is_local((host,)):
            raise NetworkBlocked(f"network access blocked during tests: name lookup of {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = _local_getaddrinfo
