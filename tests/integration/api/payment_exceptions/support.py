"""Helpers of the tests in this folder."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient


Worker = Callable[[], AbstractAsyncContextManager[None]]
