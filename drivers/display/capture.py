"""A Display that keeps what it was shown: every Frame, the grid as text, PNG pictures.

Used by tests (assert on text() or on pixels) and to make the README's screen pictures;
the image is the painter's, so it is exactly what a pixel LCD of that size would show.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from drivers.display import fitted_text
from drivers.display.painter import Painter
from firmware.ports import Frame


class CaptureDisplay:
    """firmware.ports.Display in memory; with out_dir, one PNG per frame shown (frame-0001.png ...)."""

    def __init__(self, rows: int, cols: int, out_dir: Path | None = None) -> None:
        self.rows, self.cols = rows, cols
        self.out_dir = out_dir
        self.frames: list[Frame] = []
        self._painter = Painter(rows, cols)
        self._image: Image.Image | None = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def last_frame(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    @property
    def image(self) -> Image.Image:
        """The last frame as the painter drew it (mode "1", 255 = paper, 0 = ink)."""
        if self._image is None:
            raise LookupError("nothing has been shown on this display yet")
        return self._image

    def show(self, frame: Frame) -> None:
        image = self._painter.paint(frame)  # raises on a bad frame before anything is kept
        self.frames.append(frame)
        self._image = image
        if self.out_dir is not None:
            self.save_png(self.out_dir / f"frame-{len(self.frames):04d}.png")

    def text(self) -> str:
        """The last frame's grid as the LCD shows it: rows cut to the width, one per line."""
        frame = self.last_frame
        if frame is None:
            return ""
        return "\n".join(fitted_text(row, self.cols).rstrip() for row in frame.rows)

    def save_png(self, path: Path) -> Path:
        """Writes the last frame as a PNG of the display's pixel size."""
        self.image.save(path, format="PNG")
        return path

    def close(self) -> None:
        """Nothing to release; frames stay readable after close."""
