"""``pago-migrate``: apply or roll back the schema (Alembic, migrations shipped in the package)."""

from __future__ import annotations

import argparse
import os
from importlib import resources

from alembic import command
from alembic.config import Config

from pago.common.db.engine import async_url
from pago.common.settings import exit_with

MIGRATION_LOCK_KEY = 0x7061676F
"""The Postgres advisory lock every upgrade and downgrade holds for its whole transaction
("pago" in ASCII): two ``pago-migrate`` runs at once (a re-run Job, two releases, an init
container per pod) serialise, and the second finds the schema at head and does nothing."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("pago.common.db") / "migrations"))
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pago-migrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="apply migrations up to a revision (default head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="roll back to a revision (e.g. -1 or base)")
    down.add_argument("revision")
    sub.add_parser("current", help="show the applied revision")
    rev = sub.add_parser("revision", help="autogenerate a migration from the schema")
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL") or os.environ.get("PAGO_DATABASE_URL")
    if not url:
        exit_with("pago-migrate", "missing required setting DATABASE_URL")
    config = alembic_config(url)
    if args.command == "upgrade":
        command.upgrade(config, args.revision)
    elif args.command == "downgrade":
        command.downgrade(config, args.revision)
    elif args.command == "current":
        command.current(config)
    else:
        config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
        command.revision(config, message=args.message, autogenerate=True)
