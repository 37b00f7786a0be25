"""The simulated machine with userprog's user space plugged in: what workloads, the selftests and
the checker run on.

:class:`~rseqlab.machine.core.BaseMachine` is the machine proper (CPUs, scheduler, tick, signals,
processes) and knows user space only through two hooks; :class:`Machine` answers them with
:class:`~rseqlab.userprog.image.Image` and :class:`~rseqlab.userprog.api.Thread`. This is the one
module of ``machine/`` that imports ``userprog`` (which imports only :mod:`.interface` of it).
"""

from __future__ import annotations

from typing import Any

from ..usermem import AddressSpace
from ..userprog.api import Thread
from ..userprog.image import Image
from .core import BaseMachine, MachineConfig, SimTask
from .interface import State


class Machine(BaseMachine):
    """N CPUs running simulated processes on one kernel personality."""

    def new_image(self, mm: AddressSpace) -> Image:
        return Image(mm)

    def new_thread(self, st: SimTask) -> Thread:
        return Thread(self, st)


def make_machine(release: str, *, cpus: int = 2, nodes: int = 1, hz: int = 250, seed: int = 0,
                 **config: Any) -> Machine:
    return Machine(release, MachineConfig(cpus=cpus, nodes=nodes, hz=hz, **config), seed=seed)


# MachineConfig and State: check/explore.py imports them from here with Machine.
__all__ = ["Machine", "MachineConfig", "State", "make_machine"]
