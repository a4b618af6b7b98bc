"""Local fakes of the third-party services the gateway talks to, for tests and local development.

``fakes.simli``: a fake Simli server (HTTP + WebSocket + WebRTC) that the real ``simli-ai`` client connects to.
"""
