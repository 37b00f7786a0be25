"""The release -> personality map shared by `rseqlab kernels` and `validate`."""

from __future__ import annotations

import pytest

from rseqlab.errors import BadInput
from rseqlab.kernel import PERSONALITIES
from rseqlab.vm.releases import parse_release, personality_for_release, release_map, unmapped_reason


@pytest.mark.parametrize("release,personality", [
    ("6.19.10", "6.19"), ("6.19.6-cloud-amd64", "6.19"), ("6.19", "6.19"), ("6.19.14+deb13-cloud-amd64", "6.19"),
    ("7.1.8", "7.1"), ("7.1.3", "7.1"), ("7.2.6", "7.1"), ("7.3.4", "7.1"), ("8.0.1", "7.1"),
    ("6.18.44-fc-v657", "6.18"), ("5.10.0", "6.18"), ("4.18.0", "6.18"),
])
def test_releases_map_to_personalities(release, personality):
    assert personality_for_release(release) == personality
    assert unmapped_reason(release) is None


@pytest.mark.parametrize("release, personality", [
    ("7.0.4", "7.0"), ("7.0.6", "7.0"), ("7.0.7", "7.0.7"), ("7.0.9", "7.0.7"),
    ("7.0.10", "7.0.10"), ("7.0.13", "7.0.10"), ("7.1.8", "7.1"), ("6.19.14", "6.19"),
])
def test_7_0_y_maps_to_what_each_point_release_carries(release, personality):
    """7.0.7 took the unregistration fixes, 7.0.10 the rest of the series (measured by vm probe)."""
    assert personality_for_release(release) == personality


def test_a_slice_configured_kernel_is_its_slice_build():
    from rseqlab.vm.releases import personality_for

    assert personality_for("7.1.8", slice_configured=True) == "7.1+slice"
    assert personality_for("7.0.13", slice_configured=True) == "7.0.10+slice"
    assert personality_for("7.0.4", slice_configured=True) == "7.0+slice"
    assert personality_for("6.19.10", slice_configured=True) == "6.19"  # 6.19 cannot have it


def test_before_rseq_there_is_none():
    assert personality_for_release("4.17.19") is None
    assert "predates rseq()" in unmapped_reason("4.17.19")


def test_parse_release_and_bad_input():
    assert parse_release("6.19.10-cloud-amd64") == (6, 19, 10)
    assert parse_release("7.1") == (7, 1, 0)
    with pytest.raises(BadInput, match="not a kernel release"):
        parse_release("linux")


def test_release_map_lists_every_row():
    rows = release_map()
    assert [r["personality"] for r in rows] == ["6.18", "6.19", "7.0", "7.0.7", "7.0.10", "7.1"]
    assert rows[1]["releases"] == "6.19 to before 7.0" and rows[-1]["releases"] == "7.1 and later"
    assert rows[3]["releases"] == "7.0.7 to before 7.0.10"
    assert all(r["available"] for r in rows)
