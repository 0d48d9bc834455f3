"""The ``sftp`` connector (paramiko): poll a remote folder (source), upload files atomically (destination).

A package cut at its seams:

* :mod:`~hub.channels.sftp.connection` — the connection keys both sides share, host key checks, login, the one
  SSH connection kept per source/destination (opened again when it drops) and the remote-path helpers both use;
* :mod:`~hub.channels.sftp.source` — :class:`SftpSource`: per poll, the folder's lease, two listings ``settle``
  apart, streamed downloads, the accept (whole or in chunks) and the after-action (delete, move, rename; rejected
  files to the error folder); its :meth:`~SftpSource.peer_state` tells when a poll last reached the server;
* :mod:`~hub.channels.sftp.destination` — :class:`SftpDestination`: upload to a temporary name, then rename into
  place (``exists: unique | error | overwrite``).

Each module's docstring describes its behaviour in full. The names below are the package's interface (the
component registry names ``hub.channels.sftp:SftpSource`` and ``hub.channels.sftp:SftpDestination``).
"""

from __future__ import annotations

from hub.channels.sftp.connection import HostKeyRefused, SftpConnectionConfig, SftpError, connect
from hub.channels.sftp.destination import SftpDestination
from hub.channels.sftp.source import SftpSource, csv_chunks, file_lines, hl7_chunks, hl7_messages, parse_size

__all__ = [
    "SftpSource",
    "SftpDestination",
    "SftpConnectionConfig",
    "SftpError",
    "HostKeyRefused",
    "connect",
    "parse_size",
    "file_lines",
    "hl7_messages",
    "hl7_chunks",
    "csv_chunks",
]
