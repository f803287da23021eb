"""Operator commands of the matcher: ``pago-matcher-admin import-ofac`` (also reachable as
``pago-matcher aml import-ofac``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

from pago.common.settings import exit_with
from pago.matcher.aml.addresses import family_of
from pago.matcher.aml.ofac import parse_sdn, write_lists

SERVICE = "pago-matcher aml import-ofac"


def _read(source: str) -> bytes:
    if source.startswith(("https://", "http://")):
        try:
            response = httpx.get(source, timeout=120, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            exit_with(SERVICE, f"could not download {source}: {exc}")
        return response.content
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        exit_with(SERVICE, f"could not read {source}: {exc.strerror}")


def import_ofac(source: str, out: Path | None) -> None:
    """Write the SDN list's digital currency addresses as sanctions list files."""
    target = out or (Path(p) if (p := os.environ.get("PAGO_AML_LIST_PATH")) else None)
    if target is None:
        exit_with(SERVICE, "give --out or set PAGO_AML_LIST_PATH")
    by_asset = parse_sdn(_read(source))
    if not by_asset:
        exit_with(SERVICE, f"no 'Digital Currency Address' entries found in {source}")
    written = write_lists(by_asset, target)
    total = sum(len(a) for a in by_asset.values())
    usable = sum(1 for a in by_asset.values() for x in a if family_of(x) is not None)
    print(f"wrote {len(written)} files to {target}: {total} addresses, {usable} on our chains")
    for path in written:
        print(f"  {path.name}")
    print("a running matcher reloads them within PAGO_AML_LIST_RELOAD seconds (or on SIGHUP)")


def add_import_ofac(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ofac = commands.add_parser(
        "import-ofac",
        help="write ofac_sdn_<ASSET>.txt files from the OFAC SDN list (sdn.xml or sdn.csv)",
    )
    ofac.add_argument(
        "source",
        help="path or https URL of sdn.xml / sdn.csv "
        "(e.g. https://www.treasury.gov/ofac/downloads/sdn.xml)",
    )
    ofac.add_argument("--out", type=Path, help="directory to write (default: $PAGO_AML_LIST_PATH)")


def main(argv: list[str] | None = None) -> None:
    """``pago-matcher-admin``."""
    parser = argparse.ArgumentParser(prog="pago-matcher-admin", description=__doc__)
    add_import_ofac(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    import_ofac(args.source, args.out)
