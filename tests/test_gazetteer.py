from datetime import datetime

import numpy as np
import pytest

from geosleuth.gazetteer import city_radius_km, key_is_indexable, name_key
from geosleuth.geo import haversine_km
from geosleuth.schemas import LatLon


@pytest.mark.parametrize(
    "raw,key",
    [
        ("Königstraße", "konigstrasse"),
        ("Berlin-Mitte", "berlin mitte"),
        ("  São  Paulo ", "sao paulo"),
        ("NEW YORK", "new york"),
        ("東京都", "東京都"),
        ("しんじゅく駅", "しんじゅく駅"),  # kana keep their voicing marks
        ("ΑΘΗΝΑ", "αθηνα"),
        ("l'Aquila", "l aquila"),
    ],
)
def test_name_key(raw, key):
    assert name_key(raw) == key


def test_indexable_keys():
    assert not key_is_indexable("12345")
    assert not key_is_indexable("ab")
    assert key_is_indexable("ulm")
    assert key_is_indexable("東京")


def test_lookup_ranks_by_population_and_knows_other_scripts(gazetteer):
    paris = gazetteer.lookup("Paris")
    assert paris[0].country_code == "FR" and paris[0].population > 2_000_000
    assert any(p.country_code == "US" for p in paris)  # Paris, Texas is a homonym, ranked lower
    assert gazetteer.lookup("東京")[0].name == "Tokyo"
    assert gazetteer.lookup("Париж")[0].country_code == "FR"
    assert gazetteer.lookup("München")[0].country_code == "DE"
    assert gazetteer.lookup("Paris", country="US")[0].country_code == "US"
    assert gazetteer.lookup("Xqzzyville") == []


def test_reverse_geocoding_prefers_the_containing_city(gazetteer):
    eiffel, tokyo, ocean = (
        LatLon(lat=48.85837, lon=2.29448),
        LatLon(lat=35.69, lon=139.70),
        LatLon(lat=0, lon=-30),
    )
    places = gazetteer.reverse([eiffel, tokyo, ocean])
    assert places[0].name == "Paris" and places[0].country_code == "FR"
    assert places[0].admin1 == "Ile-de-France" and places[0].continent == "Europe"
    assert places[0].on_land is True
    assert places[1].name == "Tokyo" and places[1].continent_code == "AS"
    assert places[2].on_land is False and places[2].distance_km > 300
    # distance_km is measured to the place's centre
    assert places[0].distance_km == pytest.approx(
        float(haversine_km(48.85837, 2.29448, 48.85341, 2.3488)), abs=0.01
    )


def test_land_mask_matches_the_package(gazetteer):
    from global_land_mask import globe

    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-90, 90, 5000), rng.uniform(-180, 180, 5000)
    assert (gazetteer.on_land(lat, lon) == globe.is_land(lat, lon)).all()


def test_country_facts(gazetteer):
    fr, gb, jp = gazetteer.country("FR"), gazetteer.country("gb"), gazetteer.country("JP")
    assert fr.name == "France" and fr.continent == "Europe" and fr.phone == "33" and fr.tld == ".fr"
    assert fr.driving_side == "right" and gb.driving_side == "left" and jp.driving_side == "left"
    assert gazetteer.country("ZZ") is None
    centre = gazetteer.country_centre("FR")
    assert haversine_km(centre.point.lat, centre.point.lon, 48.86, 2.35) < 30  # Paris dominates France
    assert centre.r50_km < centre.r80_km < centre.r95_km


def test_language_script_and_currency_tables(gazetteer):
    fr = gazetteer.language_countries("fr")
    assert {"FR", "BE", "CH", "CA"} <= set(fr) and fr["FR"] > fr["CA"]
    assert "JP" not in fr
    assert set(gazetteer.script_countries({"Jpan", "Hira", "Kana"})) == {"JP"}
    assert {"RU", "UA", "BG"} <= set(gazetteer.script_countries({"Cyrl"}))
    cur = gazetteer.currency_symbols
    assert {"FR", "DE", "IT"} <= set(cur["€"]) and "GB" not in cur["€"]
    assert cur["zł"] == ["PL"] and "GB" in cur["£"]


def test_utc_offset_places(gazetteer):
    summer = gazetteer.where_offset(datetime(2024, 7, 14, 12, 0), 120)
    winter = gazetteer.where_offset(datetime(2024, 1, 14, 12, 0), 120)
    assert {"FR", "DE", "ES"} <= set(summer.countries)  # CEST
    assert "FR" not in winter.countries and {"GR", "FI"} <= set(winter.countries)  # EET in winter
    assert summer.west < 2.35 < summer.east
    tokyo = gazetteer.where_offset(datetime(2024, 7, 14, 12, 0), 540)
    assert {"JP", "KR"} <= set(tokyo.countries) and tokyo.west < 139.7 < tokyo.east
    assert gazetteer.where_offset(datetime(2024, 7, 14, 12, 0), 7) is None  # no zone uses +00:07
    assert gazetteer.timezone_at(LatLon(lat=60.17, lon=24.94)) == "Europe/Helsinki"


def test_city_radius_grows_with_population():
    assert float(city_radius_km(10_000)) == pytest.approx(1.5)
    assert float(city_radius_km(2_000_000)) == pytest.approx(21.2, abs=0.1)
    assert float(city_radius_km(10**9)) == 50.0
