import math

import pytest
from pydantic import ValidationError

from geosleuth.schemas import BoxRegion, Evidence, EvidenceKind, LatLon


@pytest.mark.parametrize(
    "lat,lon", [(91, 0), (-90.01, 0), (0, 180.5), (0, -181), (math.nan, 0), (0, math.inf)]
)
def test_latlon_rejects_invalid(lat, lon):
    with pytest.raises(ValidationError):
        LatLon(lat=lat, lon=lon)


def test_latlon_dms_and_str():
    p = LatLon(lat=48.858370, lon=2.294481)
    assert str(p) == "48.85837, 2.29448"
    assert p.dms() == "48°51'30.1\"N 2°17'40.1\"E"
    assert LatLon(lat=-22.951916, lon=-43.210487).dms() == "22°57'06.9\"S 43°12'37.8\"W"
    # Seconds that round to 60 carry into the minutes.
    assert LatLon(lat=10.999999, lon=0).dms().startswith("11°00'00.0\"N")


def test_latlon_is_frozen_and_round_trips():
    p = LatLon(lat=1.5, lon=-2.5)
    with pytest.raises(ValidationError):
        p.lat = 3  # type: ignore[misc]
    assert LatLon.model_validate_json(p.model_dump_json()) == p


def test_evidence_validates_country_likelihoods():
    with pytest.raises(ValidationError, match="alpha-2"):
        Evidence(id="x", tool="t", kind=EvidenceKind.TEXT, value="v", weight=0.5, countries={"fra": 1.0})
    with pytest.raises(ValidationError, match=r"\(0, 1\]"):
        Evidence(id="x", tool="t", kind=EvidenceKind.TEXT, value="v", weight=0.5, countries={"FR": 0.0})
    with pytest.raises(ValidationError):
        Evidence(id="x", tool="t", kind=EvidenceKind.TEXT, value="v", weight=1.5)
    e = Evidence(
        id="x", tool="t", kind=EvidenceKind.TEXT, value="v", weight=0.5, countries={"FR": 1.0, "BE": 0.4}
    )
    assert e.top_countries(1) == ["FR"]


def test_box_region_across_antimeridian():
    box = BoxRegion(south=-90, north=90, west=170, east=-170)
    assert box.contains(LatLon(lat=0, lon=175))
    assert box.contains(LatLon(lat=0, lon=-175))
    assert not box.contains(LatLon(lat=0, lon=0))
