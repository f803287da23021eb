"""Import the official OFAC SDN list's digital currency addresses into sanctions list files.

OFAC publishes each address as an identifier of type ``Digital Currency Address - <ASSET>``:
in ``sdn.xml`` as ``<id><idType>…</idType><idNumber>address</idNumber></id>``, and in the CSV
files (``sdn.csv`` remarks, ``sdn_comments.csv``) as text ``Digital Currency Address - ETH
0x…;``. Both are read; the output is one file per asset, ``ofac_sdn_<ASSET>.txt``, one address
per line, sorted — the form :class:`~pago.matcher.aml.sanctions.SanctionsList` reads. Files are
replaced atomically (write, then rename), so a running matcher never reads half a file.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

_TYPE_PREFIX = "Digital Currency Address - "
_IN_TEXT = re.compile(r"Digital Currency Address - ([A-Za-z0-9]+)[\s:]+([A-Za-z0-9]+)")
_ASSET = re.compile(r"[A-Z0-9]+")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes) -> Iterator[tuple[str, str]]:
    # The file comes from the operator's own download of treasury.gov; CPython's expat
    # (>= 2.4.1) refuses entity-expansion bombs, and no external entities are resolved.
    root = ET.fromstring(data)  # noqa: S314
    for element in root.iter():
        if _local(element.tag) != "id":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in element}
        id_type = fields.get("idType", "")
        if id_type.startswith(_TYPE_PREFIX) and fields.get("idNumber"):
            yield id_type.removeprefix(_TYPE_PREFIX).strip(), fields["idNumber"]


def _parse_csv(text: str) -> Iterator[tuple[str, str]]:
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            for match in _IN_TEXT.finditer(cell):
                yield match.group(1), match.group(2)


def parse_sdn(data: bytes) -> dict[str, set[str]]:
    """Asset symbol (``ETH``, ``USDT``, ``TRX``…) → addresses, from an SDN XML or CSV file."""
    by_asset: dict[str, set[str]] = defaultdict(set)
    text = data.decode("utf-8-sig", errors="replace")
    pairs = _parse_xml(data) if text.lstrip().startswith("<") else _parse_csv(text)
    for asset, address in pairs:
        asset = asset.upper()
        if _ASSET.fullmatch(asset):
            by_asset[asset].add(address.strip())
    return dict(by_asset)


def write_lists(by_asset: dict[str, set[str]], out_dir: Path) -> list[Path]:
    """Write ``ofac_sdn_<ASSET>.txt`` per asset into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for asset, addresses in sorted(by_asset.items()):
        target = out_dir / f"ofac_sdn_{asset}.txt"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{address}\n" for address in sorted(addresses))
        os.replace(tmp, target)
        written.append(target)
    return written
