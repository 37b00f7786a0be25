"""Simulated machines that drive kernel personalities.

``scripted``: one task and a scripted scheduler, for single scenarios and the property tests of
the kernel model. ``core``: the event-driven multi-CPU machine (``sim`` its event heap, ``mmcid``
each kernel's mm_cid allocation), user space only through hooks; ``machine``: that machine with
userprog's image and threads plugged in; ``interface``: the names both sides share.
"""
