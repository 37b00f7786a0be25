"""Build variants: 7.0 and 7.1 with ``CONFIG_RSEQ_SLICE_EXTENSION=y``.

Names are ``RELEASE+slice`` (configured, static key on: what ``make
defconfig`` plus the option gives) and ``RELEASE+slice-off`` (configured,
booted with ``rseq_slice_ext=0``: the static key off). Each class is the
personality with :class:`~.slice_ext.SliceExtension` in front, its task state
with ``struct rseq_slice`` added, and the one rule that differs between the
releases: which status bits registration advertises in ``rseq->flags``.

* 7.0 (d6200245c75e): AVAILABLE whenever the option is configured, even if
  the static key is off; ENABLED with the key on and
  ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON``; for every registration size.
* 7.1 (010b7723c0a3 and 99428157dcf3): only for a v2 registration (longer than
  32 bytes), and AVAILABLE only with the key on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import ORIG_RSEQ_SIZE, RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE, RSEQ_CS_FLAG_SLICE_EXT_ENABLED, RSEQ_FLAG_SLICE_EXT_DEFAULT_ON
from .slice_ext import SliceExtension
from .v6_19 import RseqData
from .v7_0 import Linux70
from .v7_1 import Linux71, RseqData71


@dataclass(slots=True)
class RseqData70Slice(RseqData):
    """7.0's ``struct rseq_data`` with ``struct rseq_slice`` (flat: fork copies it whole)."""

    slice_enabled: bool = False  # state.enabled
    slice_granted: bool = False  # state.granted
    slice_expires: int = 0
    slice_yielded: int = 0


@dataclass(slots=True)
class RseqData71Slice(RseqData71):
    """7.1's ``struct rseq_data`` with ``struct rseq_slice``."""

    slice_enabled: bool = False
    slice_granted: bool = False
    slice_expires: int = 0
    slice_yielded: int = 0


class Linux70Slice(SliceExtension, Linux70):
    variant = "slice"
    summary = ("7.0 with CONFIG_RSEQ_SLICE_EXTENSION=y: grants, hrtimer, rseq_slice_yield; "
               "slice_ctrl = 0 on every fast path and ID write, any size")

    @property
    def name(self) -> str:
        return f"{self.release}+{self.variant}"

    def new_rseq_state(self) -> RseqData70Slice:
        return RseqData70Slice()

    def rseq_slice_register_flags(self, flags: int, rseq_len: int) -> int:
        rseqfl = RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
        if self.slice_key and flags & RSEQ_FLAG_SLICE_EXT_DEFAULT_ON:
            rseqfl |= RSEQ_CS_FLAG_SLICE_EXT_ENABLED
        return rseqfl


class Linux70SliceOff(Linux70Slice):
    variant = "slice-off"
    summary = "7.0+slice booted with rseq_slice_ext=0: no grants, but flags still say AVAILABLE"
    slice_boot_enabled = False


class Linux71Slice(SliceExtension, Linux71):
    variant = "slice"
    summary = "7.1 with CONFIG_RSEQ_SLICE_EXTENSION=y: the extension for v2 (> 32-byte) registrations only"
    slice_v2_only = True

    @property
    def name(self) -> str:
        return f"{self.release}+{self.variant}"

    def new_rseq_state(self) -> RseqData71Slice:
        return RseqData71Slice()

    def rseq_slice_register_flags(self, flags: int, rseq_len: int) -> int:
        if rseq_len <= ORIG_RSEQ_SIZE or not self.slice_key:
            return 0
        rseqfl = RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
        if flags & RSEQ_FLAG_SLICE_EXT_DEFAULT_ON:
            rseqfl |= RSEQ_CS_FLAG_SLICE_EXT_ENABLED
        return rseqfl


class Linux71SliceOff(Linux71Slice):
    variant = "slice-off"
    summary = "7.1+slice booted with rseq_slice_ext=0: no grants, nothing advertised"
    slice_boot_enabled = False


#: The build variants by name (``7.0+slice`` ...), in ``--list-kernels`` order.
BUILDS: dict[str, type] = {
    f"{cls.release}+{cls.variant}": cls
    for cls in (Linux70Slice, Linux70SliceOff, Linux71Slice, Linux71SliceOff)
}
