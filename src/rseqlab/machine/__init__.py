"""Simulated machines that drive kernel personalities.

``bench``: one task and a scripted scheduler, for single scenarios and the
property tests of the kernel model.
"""
