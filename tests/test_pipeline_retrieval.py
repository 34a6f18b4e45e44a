"""`geosleuth locate` with retrieval configured: it uses the gallery and the neighbours, and says so."""

import pytest

pytest.importorskip("faiss")

from conftest import fixture
from geosleuth.agents.pipeline import Locator, build_deps
from geosleuth.geo import geodesic_km
from geosleuth.retrieval.index import build_index
from geosleuth.retrieval.sources import open_source
from geosleuth.schemas import CandidateSource, EvidenceKind, StageStatus
from geosleuth.testing import PixelEncoder

PLACES = {
    "sign_fr_paris.jpg": (48.8566, 2.3522),
    "sign_de_berlin.jpg": (52.5200, 13.4050),
    "sign_ja_tokyo.jpg": (35.6895, 139.6917),
    "shop_es_phone.jpg": (40.4168, -3.7038),
    "sign_en_generic.jpg": (-33.8688, 151.2093),
}


@pytest.fixture(scope="module")
def pixel_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("px")
    rows = ["image,lat,lon"] + [f"{fixture(n)},{lat},{lon}" for n, (lat, lon) in PLACES.items()]
    (root / "photos.csv").write_text("\n".join(rows) + "\n")
    build_index(open_source(root / "photos.csv"), PixelEncoder(), root / "idx", progress=False)
    return root / "idx"


def locator_with(settings, gazetteer, **retrieval):
    s = settings.with_overrides(retrieval=retrieval, ocr={"engine": "none"})
    return Locator(deps=build_deps(s, gazetteer=gazetteer))


def test_neighbours_place_an_image_without_text_or_metadata(settings, gazetteer, pixel_index):
    loc = locator_with(settings, gazetteer, image_encoder="pixel", index_dir=str(pixel_index), neighbours_k=3)
    pred = loc.locate(fixture("sign_en_generic.jpg"))  # the Sydney photo of the index, no clue of its own
    stage = pred.stage("retrieval")
    assert (
        stage.status == StageStatus.RAN and "3 similar" in stage.detail and "no GPS gallery" in stage.detail
    )
    assert any(e.kind == EvidenceKind.NEIGHBOURS for e in pred.evidence)
    neighbour = [c for c in pred.candidates if c.source == CandidateSource.NEIGHBOUR]
    assert neighbour and neighbour[0].place.country_code == "AU"
    assert float(geodesic_km(neighbour[0].point.lat, neighbour[0].point.lon, -33.8688, 151.2093)) < 1
    assert pred.provenance.models["image_encoder"].startswith("pixel")


def test_geoclip_gallery_and_an_index_of_its_backbone(settings, gazetteer, tiny_clip_dir, tmp_path):
    pytest.importorskip("geoclip")
    from geosleuth.retrieval.hf_clip import HFImageEncoder

    build_index(
        open_source(fixture("sign_fr_paris.jpg").parent),
        HFImageEncoder(str(tiny_clip_dir)),
        tmp_path / "idx",
        progress=False,
    )
    loc = locator_with(
        settings,
        gazetteer,
        image_encoder=f"geoclip:{tiny_clip_dir}",
        index_dir=str(tmp_path / "idx"),
        gallery_top_k=5,
    )
    pred = loc.locate(fixture("blank.jpg"))
    stage = pred.stage("retrieval")
    assert stage.status == StageStatus.RAN and stage.engine == "geoclip"
    assert (
        "gallery candidates" in stage.detail and "geoclip-100k" in stage.detail and "similar" in stage.detail
    )
    kinds = {e.kind for e in pred.evidence}
    assert {EvidenceKind.GALLERY, EvidenceKind.NEIGHBOURS} <= kinds
    gallery = next(e for e in pred.evidence if e.kind == EvidenceKind.GALLERY)
    assert len(gallery.details["top"]) == 5 and gallery.countries


def test_missing_weights_make_retrieval_unavailable_not_fatal(settings, gazetteer):
    loc = locator_with(settings, gazetteer, image_encoder="openai/clip-vit-large-patch14")
    pred = loc.locate(fixture("exif_gps.jpg"))
    stage = pred.stage("retrieval")
    assert stage.status == StageStatus.UNAVAILABLE
    assert "huggingface-cli download openai/clip-vit-large-patch14" in stage.detail
    assert pred.basis == "exif-gps"


def test_an_index_from_another_encoder_is_searched_with_its_own(
    settings, gazetteer, pixel_index, tiny_clip_dir
):
    loc = locator_with(settings, gazetteer, image_encoder=str(tiny_clip_dir), index_dir=str(pixel_index))
    pred = loc.locate(fixture("blank.jpg"))
    stage = pred.stage("retrieval")
    assert stage.status == StageStatus.RAN
    assert "neighbours searched with pixel, the encoder that built the index" in stage.detail


def test_an_index_whose_encoder_cannot_be_loaded_is_unavailable(settings, gazetteer, tmp_path, tiny_clip_dir):
    import numpy as np

    from geosleuth.retrieval.index import index_from_arrays

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 768)).astype(np.float32)
    index_from_arrays(
        tmp_path / "idx",
        x / np.linalg.norm(x, axis=1, keepdims=True),
        np.zeros(10) + 1,
        np.zeros(10) + 1,
        encoder_name="/no/such/encoder",
    )
    loc = locator_with(settings, gazetteer, image_encoder=str(tiny_clip_dir), index_dir=str(tmp_path / "idx"))
    stage = loc.locate(fixture("blank.jpg")).stage("retrieval")
    assert stage.status == StageStatus.UNAVAILABLE and "/no/such/encoder" in stage.detail
