"""Read a QR symbol back with zxing-cpp, the reader many phone apps are built on, independent of
the encoder under test: a symbol it reads at level M is one a phone reads."""

from __future__ import annotations

import re

import zxingcpp

_PIXELS_PER_MODULE = 4
_QUIET_ZONE = 4


def decode(modules: list[list[bool]]) -> bytes:
    """The bytes of the QR symbol ``modules`` (``True`` = dark, no quiet zone), at level M."""
    size = len(modules) + 2 * _QUIET_ZONE
    side = size * _PIXELS_PER_MODULE
    pixels = bytearray(b"\xff" * side * side)
    for y, row in enumerate(modules):
        for x, dark in enumerate(row):
            if not dark:
                continue
            for dy in range(_PIXELS_PER_MODULE):
                top = ((y + _QUIET_ZONE) * _PIXELS_PER_MODULE + dy) * side
                left = (x + _QUIET_ZONE) * _PIXELS_PER_MODULE
                pixels[top + left : top + left + _PIXELS_PER_MODULE] = bytes(_PIXELS_PER_MODULE)
    image = memoryview(bytes(pixels)).cast("B", (side, side))
    # return_errors: zxing-cpp calls a symbol with no content invalid and drops it otherwise;
    # it is read all the same, its format and Reed-Solomon blocks checked (error is None).
    found = zxingcpp.read_barcodes(
        image,
        formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode),
        is_pure=True,
        return_errors=True,
    )
    assert len(found) == 1, f"{len(found)} QR symbols read"
    (symbol,) = found
    assert symbol.error is None, symbol.error
    assert symbol.valid or not symbol.bytes
    extra = symbol.extra
    assert isinstance(extra, dict)
    assert extra["ECLevel"] == "M", f"error correction level {extra['ECLevel']}"
    return symbol.bytes


def matrix_from_svg(svg: str, quiet_zone: int = 4) -> list[list[bool]]:
    """The modules of an SVG drawn as ``M{x},{y}h1v1h-1z`` squares (what ``qr.svg`` emits)."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1)) - 2 * quiet_zone  # type: ignore[union-attr]
    matrix = [[False] * size for _ in range(size)]
    for x, y in re.findall(r"M(\d+),(\d+)h1v1h-1z", svg):
        matrix[int(y) - quiet_zone][int(x) - quiet_zone] = True
    return matrix
