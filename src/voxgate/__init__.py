"""voxgate: a self-hosted realtime voice-agent gateway speaking the OpenAI Realtime protocol."""

from voxgate import compiled

__version__ = "0.1.0"

compiled.guard()  # before any media module is imported: a stale compiled build never runs
