"""What a feature store's images hold besides their image embedding and patch tokens, and what an update adds (no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from functools import reduce

# Part -> (HDF5 group and FeatureBatch field, what the part is called, the config key that asks for it).
PART_NAMES = {
    "window_sizes": ("windows", "window sizes", "the backbone's window_sizes (or the dataset's extra_window_sizes)"),
    "layers": ("layers", "layers", "the backbone's layers"),
    "vv_layers": ("vv_layers", "V-V layers", "the backbone's vv_layers"),
    "mid_layers": ("mid_layers", "mid-block states", "memory_blocks of the scorer (PromptAD's visual memory)"),
}


@dataclass(frozen=True)
class Parts:
    """What an image holds besides its image embedding and patch tokens: sorted window sizes and block indices."""

    window_sizes: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()
    vv_layers: tuple[int, ...] = ()
    mid_layers: tuple[int, ...] = ()

    @classmethod
    def of(
        cls, window_sizes: Collection[int] = (), layers: Collection[int] = (), vv_layers: Collection[int] = (), mid_layers: Collection[int] = ()
    ) -> Parts:
        return cls(*(tuple(sorted({int(k) for k in part})) for part in (window_sizes, layers, vv_layers, mid_layers)))

    def _combine(self, other: Parts, op: Callable[[set[int], set[int]], set[int]]) -> Parts:
        return Parts.of(*(op(set(getattr(self, f.name)), set(getattr(other, f.name))) for f in fields(self)))

    def __or__(self, other: Parts) -> Parts:
        return self._combine(other, set.union)

    def __sub__(self, other: Parts) -> Parts:
        return self._combine(other, set.difference)

    def __and__(self, other: Parts) -> Parts:
        return self._combine(other, set.intersection)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, list[int]]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}


@dataclass
class UpdatePlan:
    """What an update encodes.

    Attributes:
        new_ids: images not in the store, encoded with ``new_parts`` (what every stored image holds, plus
            what is asked), so they hold as much as the others.
        extensions: missing parts -> the stored images that lack exactly those.
        every_image: what every image holds after the update (the root attributes).
    """

    new_ids: list[str]
    new_parts: Parts
    extensions: dict[Parts, list[str]]
    every_image: Parts


def plan_update(holdings: dict[str, Parts], image_ids: list[str], wanted: Parts) -> UpdatePlan:
    """Plan an update that gives every image of ``image_ids`` the parts ``wanted``.

    Stored images are checked one by one (not against the root attributes), so an image left out of an
    earlier update that added parts is completed when it is asked for again.
    """
    common = reduce(Parts.__and__, holdings.values()) if holdings else Parts()
    new_ids = sorted(set(image_ids) - set(holdings))
    extensions: dict[Parts, list[str]] = {}
    for image_id in sorted(set(image_ids) & set(holdings)):
        if missing := wanted - holdings[image_id]:
            extensions.setdefault(missing, []).append(image_id)
    after = holdings | {i: common | wanted for i in new_ids}
    after |= {i: after[i] | missing for missing, ids in extensions.items() for i in ids}
    return UpdatePlan(new_ids, common | wanted, extensions, reduce(Parts.__and__, after.values()))
