"""Reference input allocators, one a file; the C++ engine implements the same rules."""

from herald_tf.scheduler.allocators.greedy import GreedyAllocator
from herald_tf.scheduler.allocators.grouped import GroupedAllocator
from herald_tf.scheduler.allocators.none import NoAllocator
from herald_tf.scheduler.types import Allocation, Allocator


def make_allocator(kind: Allocation) -> Allocator:
    """The reference allocator of ``kind``."""
    return {
        Allocation.NONE: NoAllocator,
        Allocation.GREEDY: GreedyAllocator,
        Allocation.GROUPED: GroupedAllocator,
    }[Allocation(kind)]()


__all__ = ["GreedyAllocator", "GroupedAllocator", "NoAllocator", "make_allocator"]
