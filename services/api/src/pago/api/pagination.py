"""The query parameters every list endpoint pages with: ``?page=2&page_size=50``.

An endpoint declares ``page: Page = 1, page_size: PageSize = 20``; one whose items have a name
may say so in the description (``Annotated[PageSize, Query(description="Sessions per page.")]``)
and keeps the bounds declared here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number.")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")]
