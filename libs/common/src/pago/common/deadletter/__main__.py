"""``pago-dlq`` (``python -m pago.common.deadletter``): list, show and replay dead letters.

    pago-dlq list [--topic chain.transfers] [--reason invalid] [--all-copies]
    pago-dlq show 42
    pago-dlq replay --offset 42 [--offset 43]
    pago-dlq replay --all [--topic chain.transfers] [--reason unsupported_version] [--dry-run]

Offsets are the letters' offsets in ``pago.deadletter`` (the first column of ``list``). The
broker comes from ``KAFKA_BOOTSTRAP_SERVERS`` (or ``--bootstrap-servers``). ``replay --all``
replays each original record once however often it was dead-lettered. Replay is safe: every
consumer is idempotent, and a record still bad is dead-lettered again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from pago.common.deadletter import Reason
from pago.common.deadletter.replay import Letter, distinct, read_letters, replay, select
from pago.common.topics import DEADLETTER


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def _line(letter: Letter) -> str:
    detail = letter.detail if len(letter.detail) <= 80 else letter.detail[:77] + "..."
    return (
        f"{letter.offset}\t{_when(letter.at_ms)}\t{letter.topic}[{letter.partition}]@"
        f"{letter.origin_offset}\t{letter.reason}\t{letter.consumer}\t{detail}"
    )


def _describe(letter: Letter) -> str:
    return json.dumps(
        {
            "offset": letter.offset,
            "topic": letter.topic,
            "partition": letter.partition,
            "origin_offset": letter.origin_offset,
            "reason": letter.reason,
            "detail": letter.detail,
            "consumer": letter.consumer,
            "dead_lettered_at": _when(letter.at_ms),
            "key": _text(letter.key),
            "headers": {k: _text(v) for k, v in letter.headers},
            "value": _text(letter.value),
        },
        indent=2,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pago-dlq", description="Pago's dead-letter topic")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        or os.environ.get("PAGO_KAFKA_BOOTSTRAP_SERVERS"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--dlq-topic", default=DEADLETTER, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="one line per dead letter")
    listing.add_argument("--topic", help="only letters from this original topic")
    listing.add_argument("--reason", choices=[r.value for r in Reason])
    listing.add_argument(
        "--all-copies", action="store_true", help="also repeated letters of one original record"
    )

    show = commands.add_parser("show", help="one letter in full: headers, key, value")
    show.add_argument("offset", type=int)

    again = commands.add_parser("replay", help="publish letters back to their original topic")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--offset", type=int, action="append", dest="offsets")
    which.add_argument("--all", action="store_true")
    again.add_argument("--topic", help="only letters from this original topic")
    again.add_argument("--reason", choices=[r.value for r in Reason])
    again.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    return parser


async def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    async with asyncio.timeout(60):
        letters = await read_letters(args.bootstrap_servers, topic=args.dlq_topic)
    if args.command == "list":
        chosen = select(letters, topic=args.topic, reason=args.reason)
        for letter in chosen if args.all_copies else distinct(chosen):
            out.write(_line(letter) + "\n")
        return 0
    if args.command == "show":
        found = select(letters, offsets=[args.offset])
        if not found:
            sys.stderr.write(f"pago-dlq: no dead letter at offset {args.offset}\n")
            return 1
        out.write(_describe(found[0]) + "\n")
        return 0
    chosen = select(letters, offsets=args.offsets or (), topic=args.topic, reason=args.reason)
    missing = set(args.offsets or ()) - {letter.offset for letter in chosen}
    if missing:
        sys.stderr.write(
            f"pago-dlq: no dead letter at offset {', '.join(map(str, sorted(missing)))}\n"
        )
        return 1
    chosen = distinct(chosen)
    if args.dry_run:
        for letter in chosen:
            out.write("would replay " + _line(letter) + "\n")
        return 0
    for done in await replay(args.bootstrap_servers, chosen):
        letter = done.letter
        out.write(f"replayed {letter.offset} -> {letter.topic}[{done.partition}]@{done.offset}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if not args.bootstrap_servers:
        sys.stderr.write("pago-dlq: missing required setting KAFKA_BOOTSTRAP_SERVERS\n")
        raise SystemExit(2)
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
