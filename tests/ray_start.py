"""Starting Ray in a test fixture on a loaded machine: Ray gives a node 30 s to register (a
constant of Ray's), which a machine busy with other work can miss, so a fixture tries again, as
a study's own start does (``logah.study.runner``)."""

from typing import Callable, TypeVar

T = TypeVar("T")


def start_ray_retrying(start: Callable[[], T], undo: Callable[[], None], attempts: int = 3) -> T:
    """``start()``'s result; when it raises, ``undo()`` clears what it left and it runs again,
    ``attempts`` times in all (the last failure is raised). A failed try's processes go with
    this process."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception:   # Ray raises a bare Exception when its processes start too slowly
            undo()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
