"""An independent QR reader for tests (byte mode, level M, versions 1-10): it knows the layout
from the standard's tables, not from the encoder under test, and checks every Reed-Solomon
block by its syndromes, so a symbol it reads is one a phone reads."""

from __future__ import annotations

from collections.abc import Sequence

ALIGNMENT = {
    1: [], 2: [6, 18], 3: [6, 22], 4: [6, 26], 5: [6, 30], 6: [6, 34],
    7: [6, 22, 38], 8: [6, 24, 42], 9: [6, 26, 46], 10: [6, 28, 50],
}  # fmt: skip
"""ISO/IEC 18004 Annex E."""
BLOCKS_M = {
    1: [(26, 16)], 2: [(44, 28)], 3: [(70, 44)], 4: [(50, 32)] * 2, 5: [(67, 43)] * 2,
    6: [(43, 27)] * 4, 7: [(49, 31)] * 4, 8: [(60, 38)] * 2 + [(61, 39)] * 2,
    9: [(58, 36)] * 3 + [(59, 37)] * 2, 10: [(69, 43)] * 4 + [(70, 44)],
}  # fmt: skip
"""ISO/IEC 18004 Table 9, level M: (codewords, data codewords) per block."""
MASKS = [
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i * j) % 3 + (i + j) % 2) % 2 == 0,
]
"""Indexed (row i, column j), as the standard writes them."""

EXP = [0] * 512
LOG = [0] * 256
_x = 1
for _k in range(255):
    EXP[_k] = _x
    LOG[_x] = _k
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _k in range(255, 512):
    EXP[_k] = EXP[_k - 255]


def _bch_format(data: int) -> int:
    value = data << 10
    for bit in range(14, 9, -1):
        if value >> bit & 1:
            value ^= 0x537 << (bit - 10)
    return ((data << 10) | value) ^ 0x5412


FORMATS = {_bch_format(ecl << 3 | mask): (ecl, mask) for ecl in range(4) for mask in range(8)}


def function_modules(version: int) -> set[tuple[int, int]]:
    n = 17 + 4 * version
    cells: set[tuple[int, int]] = set()
    for r0, c0 in ((0, 0), (0, n - 8), (n - 8, 0)):  # finders with separators
        cells |= {(r, c) for r in range(r0, r0 + 8) for c in range(c0, c0 + 8)}
    cells |= {(6, k) for k in range(n)} | {(k, 6) for k in range(n)}
    cells |= {(8, k) for k in range(9)} | {(k, 8) for k in range(9)}  # format, first copy
    cells |= {(8, n - 1 - k) for k in range(8)} | {(n - 1 - k, 8) for k in range(8)}
    positions = ALIGNMENT[version]
    for r in positions:
        for c in positions:
            if (r, c) in ((6, 6), (6, positions[-1]), (positions[-1], 6)):
                continue
            cells |= {(r + dr, c + dc) for dr in range(-2, 3) for dc in range(-2, 3)}
    if version >= 7:
        cells |= {(r, c) for r in range(6) for c in range(n - 11, n - 8)}
        cells |= {(r, c) for r in range(n - 11, n - 8) for c in range(6)}
    return cells


def _syndromes_zero(block: Sequence[int], ecc: int) -> bool:
    for i in range(ecc):
        value = 0
        for byte in block:  # Horner's rule at alpha^i
            value = (EXP[LOG[value] + i] if value else 0) ^ byte
        if value:
            return False
    return True


def decode(matrix: Sequence[Sequence[bool]]) -> bytes:
    n = len(matrix)
    version = (n - 17) // 4
    assert 1 <= version <= 10, f"unsupported size {n}"
    first = [matrix[8][c] for c in (0, 1, 2, 3, 4, 5, 7, 8)] + [
        matrix[r][8] for r in (7, 5, 4, 3, 2, 1, 0)
    ]
    code = sum(int(bit) << (14 - k) for k, bit in enumerate(first))
    assert code in FORMATS, f"format bits {code:015b} are not a valid code word"
    ecl, mask = FORMATS[code]
    assert ecl == 0, "expected error correction level M"
    assert matrix[n - 8][8], "the dark module is missing"
    reserved = function_modules(version)
    bits: list[int] = []
    col = n - 1
    upward = True
    while col > 0:
        if col == 6:
            col -= 1
        rows = range(n - 1, -1, -1) if upward else range(n)
        for r in rows:
            for c in (col, col - 1):
                if (r, c) not in reserved:
                    bits.append(int(matrix[r][c]) ^ int(MASKS[mask](r, c)))
        upward = not upward
        col -= 2
    layout = BLOCKS_M[version]
    total = sum(size for size, _ in layout)
    words = [int("".join(map(str, bits[k : k + 8])), 2) for k in range(0, total * 8, 8)]
    blocks: list[list[int]] = [[] for _ in layout]
    position = 0
    for k in range(max(d for _, d in layout)):
        for b, (_, data) in enumerate(layout):
            if k < data:
                blocks[b].append(words[position])
                position += 1
    for k in range(max(size - data for size, data in layout)):
        for b, (size, data) in enumerate(layout):
            if k < size - data:
                blocks[b].append(words[position])
                position += 1
    for b, (size, data) in enumerate(layout):
        assert _syndromes_zero(blocks[b], size - data), f"block {b} fails its RS check"
    data_bits = "".join(f"{w:08b}" for b, (_, d) in enumerate(layout) for w in blocks[b][:d])
    assert data_bits[:4] == "0100", "expected byte mode"
    count_bits = 8 if version <= 9 else 16
    length = int(data_bits[4 : 4 + count_bits], 2)
    start = 4 + count_bits
    return bytes(int(data_bits[start + 8 * k : start + 8 * k + 8], 2) for k in range(length))


def matrix_from_svg(svg: str, quiet_zone: int = 4) -> list[list[bool]]:
    """The modules of an SVG drawn as ``M{x},{y}h1v1h-1z`` squares (what ``qr.svg`` emits)."""
    import re

    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1)) - 2 * quiet_zone  # type: ignore[union-attr]
    matrix = [[False] * size for _ in range(size)]
    for x, y in re.findall(r"M(\d+),(\d+)h1v1h-1z", svg):
        matrix[int(y) - quiet_zone][int(x) - quiet_zone] = True
    return matrix
