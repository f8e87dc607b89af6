"""Small structured-concurrency helpers shared by server and client."""

from __future__ import annotations

from typing import Awaitable, Callable

import anyio


async def race(*tasks: Callable[[], Awaitable[None]]) -> None:
    """Run ``tasks`` together until the first one ends, then cancel the rest.

    The first exception is re-raised as itself, not inside an ExceptionGroup,
    so callers can classify it with plain ``except`` clauses.
    """
    errors: list[Exception] = []

    async def run(task: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        try:
            await task()
        except Exception as exc:
            errors.append(exc)
        finally:
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for task in tasks:
            tg.start_soon(run, task, tg.cancel_scope)
    if errors:
        raise errors[0]


def first_leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
