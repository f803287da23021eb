"""QR codes (ISO/IEC 18004) for payment URIs, rendered as SVG: no image library, no JS.

segno encodes: byte mode, error correction level M (15 % of the symbol may be damaged, which
survives a phone camera at an angle) and never raised, the smallest version that fits (a
42-byte TRON address is version 3, a 136-byte EIP-681 URI version 8), and the mask with the
lowest penalty score. This module draws the symbol as one SVG path.
"""

from __future__ import annotations

import segno

QUIET_ZONE = 4
"""Modules of white border the standard requires around the symbol."""


class QrError(ValueError):
    """The data does not fit in a version-40 symbol."""


def encode(data: bytes) -> list[list[bool]]:
    """The modules of the QR code of ``data`` (``True`` = dark), without the quiet zone."""
    try:
        symbol = segno.make_qr(data, error="m", boost_error=False, mode="byte")
    except segno.DataOverflowError as exc:
        raise QrError(f"{len(data)} bytes do not fit in a QR code at level M") from exc
    return [[bool(dark) for dark in row] for row in symbol.matrix]


def svg(data: str, *, title: str) -> str:
    """A scalable SVG of the QR code of ``data`` (UTF-8), one path, crisp at any size."""
    modules = encode(data.encode())
    size = len(modules) + 2 * QUIET_ZONE
    path = "".join(
        f"M{x + QUIET_ZONE},{y + QUIET_ZONE}h1v1h-1z"
        for y, row in enumerate(modules)
        for x, dark in enumerate(row)
        if dark
    )
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
        f'shape-rendering="crispEdges" role="img"><title>{escaped}</title>'
        f'<rect width="{size}" height="{size}" fill="#fff"/>'
        f'<path fill="#000" d="{path}"/></svg>'
    )
