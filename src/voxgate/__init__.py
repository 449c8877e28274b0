"""voxgate: a self-hosted realtime voice-agent gateway speaking the OpenAI Realtime protocol."""

__version__ = "0.1.0"
