"""Postgres: the async engine factory, the schema and its migrations."""
