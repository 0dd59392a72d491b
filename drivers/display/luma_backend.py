"""A Display on any luma.core device: SPI LCDs through luma.lcd, or a Linux framebuffer.

Owns turning the painter's image into what the device takes (its mode; on 1-bit devices
a set bit is a lit dot, so the ink is set) and the two factories the boards use. luma is
imported inside the factories, so this module loads where no LCD is attached.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageChops

from drivers.display import CELL_H, CELL_W, DisplayUnavailable
from drivers.display.painter import Painter
from firmware.ports import Frame

SPI_DRIVERS = ("st7735", "st7567", "ili9341")


class LumaDisplay:
    """firmware.ports.Display on a luma.core device (anything with display(image), size, mode).

    rows and cols default to as many 8x16 cells as the device holds; a board profile
    normally gives them (the grid is then scaled by a whole factor and centred).
    """

    def __init__(self, device: Any, rows: int | None = None, cols: int | None = None) -> None:
        width, height = device.size
        self.rows = rows if rows is not None else height // CELL_H
        self.cols = cols if cols is not None else width // CELL_W
        self._device = device
        self._painter = Painter(self.rows, self.cols, (width, height))
        self._closed = False

    def device_image(self, frame: Frame) -> Image.Image:
        """The frame as the device will get it: its size and mode."""
        image = self._painter.paint(frame)
        if self._device.mode == "1":
            # The painter's set bit is paper; on a 1-bit panel a set bit is a lit dot (dark on
            # an ST7567 LCD, bright on an OLED), which is the ink.
            return ImageChops.invert(image)
        return image.convert(self._device.mode)

    def show(self, frame: Frame) -> None:
        if self._closed:
            raise ValueError("this display is closed")
        self._device.display(self.device_image(frame))

    def set_contrast(self, level: int) -> None:
        """The settings' contrast 1..10 onto luma's 0..255 (devices without one ignore it)."""
        if not 1 <= level <= 10:
            raise ValueError(f"contrast {level} is outside 1..10")
        contrast = getattr(self._device, "contrast", None)
        if contrast is not None:
            contrast(round(level * 255 / 10))

    def close(self) -> None:
        """Switches the panel off through luma's cleanup, once."""
        if self._closed:
            return
        self._closed = True
        self._device.cleanup()
        # luma also registered a cleanup at exit as a closure we cannot unregister; make
        # it a no-op so the bus is not touched again after we released it.
        self._device.cleanup = lambda: None


def framebuffer(path: str = "/dev/fb0", rows: int | None = None, cols: int | None = None) -> LumaDisplay:
    """A Linux framebuffer (/dev/fbN) through luma.core.device.linux_framebuffer."""
    if not os.path.exists(path):
        raise DisplayUnavailable(f"no framebuffer device {path}: is the display driver loaded "
                                 "(dtoverlay) and the path right?")
    try:
        from luma.core.device import linux_framebuffer
        from luma.core.error import Error as LumaError
    except ImportError as exc:
        raise DisplayUnavailable(f"the framebuffer display needs the Python package luma.core: {exc}") \
            from None
    try:
        device = linux_framebuffer(device=path)
    except (LumaError, OSError, AssertionError, ValueError) as exc:
        raise DisplayUnavailable(f"cannot use framebuffer {path}: {exc}") from None
    return LumaDisplay(device, rows, cols)


def spi_lcd(driver: str = "st7735", port: int = 0, device: int = 0, gpio_DC: int = 24, gpio_RST: int = 25,
            width: int | None = None, height: int | None = None, rotate: int = 0,
            rows: int | None = None, cols: int | None = None) -> LumaDisplay:
    """An SPI LCD (ST7735, ST7567 or ILI9341) on /dev/spidev{port}.{device} via luma.lcd.

    Needs the packages spidev and RPi.GPIO (or a drop-in such as rpi-lgpio) on the board.
    width and height default to the driver's own (ST7567 is always 128x64).
    """
    if driver not in SPI_DRIVERS:
        raise ValueError(f"unknown SPI LCD driver {driver!r}; known: {', '.join(SPI_DRIVERS)}")
    spidev_path = f"/dev/spidev{port}.{device}"
    if not os.path.exists(spidev_path):
        raise DisplayUnavailable(f"no SPI device {spidev_path}: enable SPI (dtparam=spi=on) "
                                 f"and check the port and chip-select numbers")
    try:
        import luma.lcd.device as lcd_devices
        from luma.core.error import Error as LumaError
        from luma.core.interface.serial import spi
    except ImportError as exc:
        raise DisplayUnavailable(f"the SPI LCD needs the Python packages luma.core and luma.lcd: {exc}") \
            from None
    size = {k: v for k, v in (("width", width), ("height", height)) if v is not None}
    if driver == "st7567" and size:
        raise ValueError("the ST7567 is always 128x64; do not pass width or height")
    try:
        bus = spi(port=port, device=device, gpio_DC=gpio_DC, gpio_RST=gpio_RST)
        panel = getattr(lcd_devices, driver)(bus, rotate=rotate, **size)
    except ImportError as exc:
        raise DisplayUnavailable(f"the SPI LCD needs the packages spidev and RPi.GPIO on this board: "
                                 f"{exc}") from None
    except (LumaError, OSError, RuntimeError) as exc:
        raise DisplayUnavailable(f"cannot drive the {driver} on {spidev_path}: {exc}") from None
    return LumaDisplay(panel, rows, cols)
