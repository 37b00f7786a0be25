"""What-if kernels: a personality with exactly one behaviour changed.

A kernel developer asks "what breaks if the exit path did X?"; each variant
here overrides one hook of a real personality and nothing else, so the
difference between ``6.19`` and ``6.19:no-cs-check`` is that one method.
Names are ``RELEASE:VARIANT``; :data:`WHATIF` lists them with one line each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..abi import StructRseq
from ._ftrace import models
from ._task import Task
from .v6_18 import LegacyRseqState, Linux618
from .v6_19 import Linux619

_RSEQ_CS = StructRseq.RSEQ_CS
_LEGACY_FIELDS = [f.name for f in fields(LegacyRseqState)]


@dataclass(slots=True)
class _LegacyWithCache(LegacyRseqState):
    """6.18's rseq state plus the IDs last written (for ``6.18:no-ids-rewrite``)."""

    last_ids: tuple[int, int, int] | None = None


class Linux619NoCsCheck(Linux619):
    """6.19 whose exit fast path never checks the critical section (IDs still written)."""

    variant = "no-cs-check"
    summary = "6.19 with the critical-section check removed from the exit fast path"

    @models("rseq_exit_user_update", "what-if: the critical-section check removed")
    def rseq_exit_user_update(self, t: Task) -> bool:
        if not t.rseq.ids_changed:
            return self.get_rseq_field(t, _RSEQ_CS) is not None
        ok, _ = self.rseq_set_ids_get_csaddr(t, t.cpu, t.mm_cid, self.cpu_to_node(t.cpu), want_cs=True)
        return ok


class Linux619AlwaysRewriteIds(Linux619):
    """6.19 that treats every switch-in as an ID change: the legacy rewrite TCMalloc relied on."""

    variant = "always-rewrite-ids"
    summary = "6.19 rewriting the IDs after every context switch, changed or not"

    def mm_cid_switch_in(self, t: Task, mm_cid: int, raw_changed: bool | None = None) -> None:
        super().mm_cid_switch_in(t, mm_cid, raw_changed)
        t.rseq.ids_changed = True


class Linux618NoIdsRewrite(Linux618):
    """6.18 whose handler writes the IDs only when they differ from the last values written."""

    variant = "no-ids-rewrite"
    summary = "6.18 skipping the ID write when CPU, node and mm_cid are unchanged"

    def rseq_update_cpu_node_id(self, t: Task) -> int:
        now = (t.cpu, self.cpu_to_node(t.cpu), t.mm_cid)
        if getattr(t.rseq, "last_ids", None) == now:
            return 0
        ret = super().rseq_update_cpu_node_id(t)
        if ret == 0:
            t.rseq.last_ids = now
        return ret

    def new_rseq_state(self):
        return _LegacyWithCache()

    def rseq_fork(self, child: Task, parent: Task, clone_flags: int) -> None:
        super().rseq_fork(child, parent, clone_flags)
        cached = _LegacyWithCache(**{f: getattr(child.rseq, f) for f in _LEGACY_FIELDS})
        cached.last_ids = getattr(parent.rseq, "last_ids", None) if child.rseq.usrptr else None
        child.rseq = cached

    def rseq_execve(self, t: Task) -> None:
        t.rseq = _LegacyWithCache()


WHATIF: dict[str, type] = {
    f"{cls.release}:{cls.variant}": cls
    for cls in (Linux619NoCsCheck, Linux619AlwaysRewriteIds, Linux618NoIdsRewrite)
}
