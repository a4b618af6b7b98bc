"""A viewer participant: joins a LiveKit room with the real SDK, receives the avatar's tracks as a user would,
measures what it sees and hears (first frame, A/V offset from the pixels, dropped frames) and can record an MP4."""
