"""Timelines for Perfetto and Chrome's trace viewer (issue 14): :mod:`.timeline` builds them,
:mod:`.writers` writes them."""

from .timeline import Timeline, recording_timeline
from .writers import write_chrome, write_perfetto

__all__ = ["Timeline", "recording_timeline", "write_chrome", "write_perfetto"]
