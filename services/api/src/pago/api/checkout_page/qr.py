"""QR codes (ISO/IEC 18004) for payment URIs, rendered as SVG: no image library, no JS.

Scope: byte mode, error correction level M (15 % of the symbol may be damaged, which survives
a phone camera at an angle), the smallest version that fits (a 42-byte TRON address is version
3, a 136-byte EIP-681 URI version 8), and the mask with the lowest penalty score.
"""

from __future__ import annotations

from collections.abc import Sequence

# Level M, indexed by version (index 0 unused). ISO/IEC 18004 Table 9.
_ECC_PER_BLOCK = (
    -1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
    26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
)  # fmt: skip
_BLOCKS = (
    -1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16,
    17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49,
)  # fmt: skip
_FORMAT_ECL_M = 0
"""The two format bits of level M (L=01, M=00, Q=11, H=10)."""
QUIET_ZONE = 4
"""Modules of white border the standard requires around the symbol."""


class QrError(ValueError):
    """The data does not fit in a version-40 symbol."""


def _raw_modules(version: int) -> int:
    """Modules available for data and error correction in a symbol of ``version``."""
    result = (16 * version + 128) * version + 64
    if version >= 2:
        aligns = version // 7 + 2
        result -= (25 * aligns - 10) * aligns - 55
        if version >= 7:
            result -= 36
    return result


def _data_codewords(version: int) -> int:
    return _raw_modules(version) // 8 - _ECC_PER_BLOCK[version] * _BLOCKS[version]


def _alignment_positions(version: int) -> list[int]:
    if version == 1:
        return []
    aligns = version // 7 + 2
    size = version * 4 + 17
    step = 26 if version == 32 else -(-(version * 4 + 4) // (aligns * 2 - 2)) * 2
    positions = [size - 7 - i * step for i in range(aligns - 1)]
    return [6, *reversed(positions)]


# --- Reed-Solomon over GF(2^8), polynomial x^8 + x^4 + x^3 + x^2 + 1 ------------------------


def _gf_multiply(x: int, y: int) -> int:
    z = 0
    for i in reversed(range(8)):
        z = (z << 1) ^ ((z >> 7) * 0x11D)
        z ^= ((y >> i) & 1) * x
    return z


def _rs_divisor(degree: int) -> list[int]:
    result = [0] * (degree - 1) + [1]
    root = 1
    for _ in range(degree):
        for j in range(degree):
            result[j] = _gf_multiply(result[j], root)
            if j + 1 < degree:
                result[j] ^= result[j + 1]
        root = _gf_multiply(root, 0x02)
    return result


def _rs_remainder(data: Sequence[int], divisor: Sequence[int]) -> list[int]:
    result = [0] * len(divisor)
    for byte in data:
        factor = byte ^ result.pop(0)
        result.append(0)
        for i, coefficient in enumerate(divisor):
            result[i] ^= _gf_multiply(coefficient, factor)
    return result


# --- encoding -------------------------------------------------------------------------------


def _bits(value: int, length: int) -> list[int]:
    """``value`` as ``length`` bits, most significant first."""
    return [(value >> i) & 1 for i in reversed(range(length))]


def _choose_version(size: int) -> int:
    for version in range(1, 41):
        count_bits = 8 if version <= 9 else 16
        if 4 + count_bits + size * 8 <= _data_codewords(version) * 8:
            return version
    raise QrError(f"{size} bytes do not fit in a QR code")


def _codewords(data: bytes, version: int) -> list[int]:
    """Data codewords (mode, count, bytes, terminator, padding), then error correction,
    split into blocks and interleaved as the standard lays them out."""
    capacity = _data_codewords(version) * 8
    bits = _bits(0b0100, 4) + _bits(len(data), 8 if version <= 9 else 16)
    for byte in data:
        bits += _bits(byte, 8)
    bits += [0] * min(4, capacity - len(bits))
    bits += [0] * (-len(bits) % 8)
    pad = 0xEC
    while len(bits) < capacity:
        bits += _bits(pad, 8)
        pad ^= 0xEC ^ 0x11
    words = [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8)]

    blocks_n = _BLOCKS[version]
    ecc_len = _ECC_PER_BLOCK[version]
    raw = _raw_modules(version) // 8
    short_blocks = blocks_n - raw % blocks_n
    short_len = raw // blocks_n
    divisor = _rs_divisor(ecc_len)
    blocks: list[list[int]] = []
    start = 0
    for i in range(blocks_n):
        length = short_len - ecc_len + (0 if i < short_blocks else 1)
        chunk = words[start : start + length]
        start += length
        blocks.append([*chunk, *_rs_remainder(chunk, divisor)])
    out: list[int] = []
    for i in range(short_len + 1):
        for j, block in enumerate(blocks):
            # Short blocks have one data codeword fewer; skip the position they lack.
            if i != short_len - ecc_len or j >= short_blocks:
                index = i if j >= short_blocks or i < short_len - ecc_len else i - 1
                if index < len(block):
                    out.append(block[index])
    return out


class _Symbol:
    def __init__(self, version: int) -> None:
        self.version = version
        self.size = version * 4 + 17
        self.dark = [[False] * self.size for _ in range(self.size)]
        self.function = [[False] * self.size for _ in range(self.size)]

    def set(self, x: int, y: int, dark: bool) -> None:
        self.dark[y][x] = dark
        self.function[y][x] = True

    def draw_function_patterns(self) -> None:
        size = self.size
        for i in range(size):
            self.set(6, i, i % 2 == 0)
            self.set(i, 6, i % 2 == 0)
        for cx, cy in ((3, 3), (size - 4, 3), (3, size - 4)):
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    x, y = cx + dx, cy + dy
                    if 0 <= x < size and 0 <= y < size:
                        distance = max(abs(dx), abs(dy))
                        self.set(x, y, distance not in (2, 4))
        positions = _alignment_positions(self.version)
        last = len(positions) - 1
        for i, cx in enumerate(positions):
            for j, cy in enumerate(positions):
                if (i, j) in ((0, 0), (0, last), (last, 0)):
                    continue  # these corners hold finder patterns
                for dy in range(-2, 3):
                    for dx in range(-2, 3):
                        self.set(cx + dx, cy + dy, max(abs(dx), abs(dy)) != 1)
        self.draw_format(0)  # reserves the area; redrawn with the chosen mask
        self.draw_version()

    def draw_format(self, mask: int) -> None:
        data = _FORMAT_ECL_M << 3 | mask
        remainder = data
        for _ in range(10):
            remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537)
        bits = (data << 10 | remainder) ^ 0x5412
        size = self.size

        def bit(i: int) -> bool:
            return (bits >> i) & 1 != 0

        for i in range(6):
            self.set(8, i, bit(i))
        self.set(8, 7, bit(6))
        self.set(8, 8, bit(7))
        self.set(7, 8, bit(8))
        for i in range(9, 15):
            self.set(14 - i, 8, bit(i))
        for i in range(8):
            self.set(size - 1 - i, 8, bit(i))
        for i in range(8, 15):
            self.set(8, size - 15 + i, bit(i))
        self.set(8, size - 8, True)  # the dark module

    def draw_version(self) -> None:
        if self.version < 7:
            return
        remainder = self.version
        for _ in range(12):
            remainder = (remainder << 1) ^ ((remainder >> 11) * 0x1F25)
        bits = self.version << 12 | remainder
        for i in range(18):
            dark = (bits >> i) & 1 != 0
            a, b = self.size - 11 + i % 3, i // 3
            self.set(a, b, dark)
            self.set(b, a, dark)

    def draw_codewords(self, words: Sequence[int]) -> None:
        size = self.size
        i = 0
        right = size - 1
        while right >= 1:
            if right == 6:
                right = 5  # the vertical timing pattern column is skipped
            for vertical in range(size):
                for j in range(2):
                    x = right - j
                    upward = (right + 1) & 2 == 0
                    y = size - 1 - vertical if upward else vertical
                    if not self.function[y][x] and i < len(words) * 8:
                        self.dark[y][x] = (words[i >> 3] >> (7 - (i & 7))) & 1 != 0
                        i += 1
            right -= 2

    def apply_mask(self, mask: int) -> None:
        for y in range(self.size):
            for x in range(self.size):
                if not self.function[y][x] and _MASKS[mask](x, y):
                    self.dark[y][x] = not self.dark[y][x]

    def penalty(self) -> int:
        """ISO/IEC 18004 §7.8.3: runs, 2×2 blocks, finder-like patterns, dark/light balance."""
        size = self.size
        score = 0
        lines = [row[:] for row in self.dark] + [
            [self.dark[y][x] for y in range(size)] for x in range(size)
        ]
        for line in lines:
            run, previous = 0, None
            for module in line:
                if module == previous:
                    run += 1
                else:
                    if run >= 5:
                        score += run - 2
                    run, previous = 1, module
            if run >= 5:
                score += run - 2
            padded = [False] * 4 + line + [False] * 4  # the quiet zone is light
            for start in range(len(padded) - 10):
                if padded[start : start + 11] in (_FINDER_LIKE, _FINDER_LIKE[::-1]):
                    score += 40
        for y in range(size - 1):
            for x in range(size - 1):
                colour = self.dark[y][x]
                if colour == self.dark[y][x + 1] == self.dark[y + 1][x] == self.dark[y + 1][x + 1]:
                    score += 3
        # Each 5 % the dark share strays from 50 % costs 10 (an odd total is never exactly 50 %).
        dark = sum(row.count(True) for row in self.dark)
        total = size * size
        score += (-(-abs(dark * 20 - total * 10) // total) - 1) * 10
        return score


_FINDER_LIKE = [True, False, True, True, True, False, True, False, False, False, False]
"""1:1:3:1:1 dark-light, then four light modules: what a scanner mistakes for a finder."""

_MASKS = (
    lambda x, y: (x + y) % 2 == 0,
    lambda x, y: y % 2 == 0,
    lambda x, y: x % 3 == 0,
    lambda x, y: (x + y) % 3 == 0,
    lambda x, y: (x // 3 + y // 2) % 2 == 0,
    lambda x, y: x * y % 2 + x * y % 3 == 0,
    lambda x, y: (x * y % 2 + x * y % 3) % 2 == 0,
    lambda x, y: ((x + y) % 2 + x * y % 3) % 2 == 0,
)


def encode(data: bytes) -> list[list[bool]]:
    """The modules of the QR code of ``data`` (``True`` = dark), without the quiet zone."""
    version = _choose_version(len(data))
    words = _codewords(data, version)
    candidates = []
    for mask in range(8):
        symbol = _Symbol(version)
        symbol.draw_function_patterns()
        symbol.draw_codewords(words)
        symbol.apply_mask(mask)
        symbol.draw_format(mask)
        candidates.append((symbol.penalty(), mask, symbol))
    return min(candidates, key=lambda c: (c[0], c[1]))[2].dark


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
