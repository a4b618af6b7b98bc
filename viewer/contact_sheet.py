"""A contact sheet: a grid of received frames as one PNG, so a reader can see the avatar without a player."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from viewer.mp4 import i420_to_frame


def contact_sheet(stills: Sequence[tuple[bytes, int, int]], path: Path, *, columns: int = 4, tile_width: int = 320
                  ) -> None:
    """Write the I420 stills (data, width, height) as a PNG grid of `columns` tiles per row."""
    if not stills:
        raise ValueError("no frames for a contact sheet")
    _, w0, h0 = stills[0]
    tile_h = round(tile_width * h0 / w0 / 2) * 2
    rows = -(-len(stills) // columns)
    gap = 4
    sheet = np.full((rows * (tile_h + gap) + gap, columns * (tile_width + gap) + gap, 3), 24, dtype=np.uint8)
    for i, (data, w, h) in enumerate(stills):
        rgb = i420_to_frame(data, w, h).reformat(width=tile_width, height=tile_h, format="rgb24").to_ndarray()
        r, c = divmod(i, columns)
        y, x = gap + r * (tile_h + gap), gap + c * (tile_width + gap)
        sheet[y : y + tile_h, x : x + tile_width] = rgb
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = sheet.shape[1], sheet.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(sheet, format="rgb24")
    path.write_bytes(b"".join(bytes(p) for p in codec.encode(frame)))
