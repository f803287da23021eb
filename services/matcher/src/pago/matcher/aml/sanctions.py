"""AML level 1: a local sanctions list, read from a directory of text files.

Each ``*.txt`` file holds one address per line (``#`` starts a comment), in the form
``pago-matcher aml import-ofac`` writes from the official OFAC SDN list: one file per asset,
``ofac_sdn_<ASSET>.txt``. An asset's file may mix chains (OFAC lists USDT addresses on Ethereum
and TRON together), so every entry is sorted into its chain family by its own shape and
compared by that family's spelling rule. Entries of chains Pago does not serve (Bitcoin) are
skipped.

The list reloads without a restart: ``maybe_reload`` compares the files' names, sizes and
mtimes at most once per ``reload_interval``, and ``request_reload`` (SIGHUP) forces the next
check. A reload that fails keeps the list that was loaded before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pago.common.enums import ChainFamily
from pago.common.errors import ConfigError
from pago.matcher import metrics
from pago.matcher.aml.addresses import family_of, normalize

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
"""(file name, size, mtime in ns) of every list file: a change means reload."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    entries: dict[ChainFamily, dict[str, str]]
    """family → normalized address → the list (file stem) that names it."""
    signature: Signature


class SanctionsList:
    """Addresses that must never pay a session, per chain family."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        reload_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = Path(path) if path else None
        self._reload_interval = reload_interval
        self._clock = clock
        self._checked_at = clock()
        self._forced = False
        self._loaded = _Loaded({family: {} for family in ChainFamily}, ())
        if self._path is None:
            log.warning(
                "PAGO_AML_LIST_PATH is not set: AML level 1 (local sanctions list) is off; "
                "senders are screened by the risk provider only, if one is configured"
            )
            return
        if not self._path.is_dir():
            raise ConfigError(f"PAGO_AML_LIST_PATH: {self._path} is not a directory")
        self._loaded = self._read(self._signature())

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def size(self, family: ChainFamily) -> int:
        return len(self._loaded.entries[family])

    def lookup(self, family: ChainFamily, address: str) -> str | None:
        """The list naming ``address`` (e.g. ``ofac_sdn_ETH``), or ``None`` when it is clear."""
        return self._loaded.entries[family].get(normalize(family, address))

    def request_reload(self) -> None:
        """Check the files at the next ``maybe_reload`` whatever the interval (SIGHUP)."""
        self._forced = True

    def maybe_reload(self) -> bool:
        """Reload when the files changed and a check is due; return whether it reloaded."""
        if self._path is None:
            return False
        now = self._clock()
        if not self._forced and now - self._checked_at < self._reload_interval:
            return False
        self._forced = False
        self._checked_at = now
        try:
            signature = self._signature()
            if signature == self._loaded.signature:
                return False
            self._loaded = self._read(signature)
        except OSError:
            metrics.AML_LIST_RELOADS.labels("error").inc()
            log.exception("could not reload the sanctions list; keeping the previous one")
            return False
        return True

    def _directory(self) -> Path:
        if self._path is None:
            raise ConfigError("PAGO_AML_LIST_PATH is not set")
        return self._path

    def _signature(self) -> Signature:
        files = sorted(self._directory().glob("*.txt"))
        return tuple((f.name, (st := f.stat()).st_size, st.st_mtime_ns) for f in files)

    def _read(self, signature: Signature) -> _Loaded:
        directory = self._directory()
        entries: dict[ChainFamily, dict[str, str]] = {family: {} for family in ChainFamily}
        skipped = 0
        for name, _, _ in signature:
            source = name.removesuffix(".txt")
            for line in (directory / name).read_text().splitlines():
                address = line.split("#", 1)[0].strip()
                if not address:
                    continue
                family = family_of(address)
                if family is None:
                    skipped += 1
                    continue
                entries[family].setdefault(normalize(family, address), source)
        if not signature:
            log.warning("the sanctions list directory %s has no *.txt files", directory)
        for family, addresses in entries.items():
            metrics.AML_LIST_ADDRESSES.labels(family.value).set(len(addresses))
        metrics.AML_LIST_RELOADS.labels("ok").inc()
        log.info(
            "sanctions list loaded",
            extra={
                "path": str(directory),
                "files": len(signature),
                **{f"{family.value}_addresses": len(a) for family, a in entries.items()},
                "other_chains_skipped": skipped,
            },
        )
        return _Loaded(entries, signature)
