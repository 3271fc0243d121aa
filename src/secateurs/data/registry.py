"""The task registry: ``@register_task("name")`` on a function ``(seed=0, **kw) -> Task``."""

from __future__ import annotations

from .._registry import Registry

TASKS: Registry = Registry("task")
register_task = TASKS.register


def list_tasks(*, pattern: str = "*") -> list[str]:
    """Names of the registered tasks, filtered by ``pattern`` (shell-style: ``"*mnist*"``)."""
    return TASKS.names(pattern)
