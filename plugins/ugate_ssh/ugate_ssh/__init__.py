"""ugate-ssh: the SSH server (listener ``ssh``) and dialers (``ssh``, ``ssh-reverse``)."""

from __future__ import annotations

__all__: list[str] = []
