import time
import unittest.mock as mock

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import fixture  # noqa: E402
from geosleuth.errors import WeightsNotFoundError  # noqa: E402
from geosleuth.retrieval import make_image_encoder  # noqa: E402
from geosleuth.retrieval.hf_clip import HFImageEncoder  # noqa: E402

MODES = [
    "sign_fr_paris.jpg",
    "mode_cmyk.jpg",
    "mode_grey.png",
    "mode_palette.png",
    "mode_alpha.png",
    "mode_16bit.tif",
]


def images(names=MODES):
    return [Image.open(fixture(n)) for n in names]


def test_tiny_clip_encodes_every_mode(tiny_clip_dir):
    enc = HFImageEncoder(str(tiny_clip_dir))
    out = enc.encode(images())
    assert out.shape == (len(MODES), 768) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()
    # colour-preserving copies (CMYK, palette) must encode like the original; a random network
    # says nothing about meaning, but a broken conversion (inverted CMYK, clipped 16-bit) shows here
    sims = dict(zip(MODES, out @ out[0], strict=True))
    assert sims["mode_cmyk.jpg"] > 0.99 and sims["mode_palette.png"] > 0.99 and sims["mode_alpha.png"] > 0.9
    np.testing.assert_allclose(
        enc.encode(images()[:2]), out[:2], atol=1e-5
    )  # deterministic, batch-independent


def test_tiny_siglip(tiny_siglip_dir):
    enc = make_image_encoder(str(tiny_siglip_dir))
    out = enc.encode(images(MODES[:2]))
    assert out.shape == (2, enc.dim) and enc.dim == 32
    assert enc.fingerprint != make_image_encoder("pixel").fingerprint


def test_exif_orientation_is_applied_before_encoding(tiny_clip_dir):
    enc = HFImageEncoder(str(tiny_clip_dir))
    stored = Image.open(fixture("exif_orientation.jpg"))
    from geosleuth.tools.image import to_rgb

    upright = to_rgb(Image.open(fixture("exif_orientation.jpg")))
    np.testing.assert_allclose(enc.encode([stored]), enc.encode([upright]), atol=1e-5)


def test_geoclip_image_path_matches_the_reference(tiny_clip_dir):
    pytest.importorskip("geoclip")
    import geoclip.model.image_encoder as gie
    from transformers import CLIPImageProcessor, CLIPModel

    from geosleuth.retrieval.geoclip_image import GeoCLIPImageEncoder
    from geosleuth.tools.image import to_rgb

    ours = GeoCLIPImageEncoder(str(tiny_clip_dir))
    load = CLIPModel.from_pretrained
    with (
        mock.patch.object(gie.CLIPModel, "from_pretrained", lambda *a, **k: load(str(tiny_clip_dir))),
        mock.patch.object(
            gie.AutoProcessor,
            "from_pretrained",
            lambda *a, **k: CLIPImageProcessor.from_pretrained(str(tiny_clip_dir)),
        ),
    ):
        ref = gie.ImageEncoder()  # what geoclip itself would run on the same (tiny) CLIP weights
    ref.mlp.load_state_dict(torch.load(ours.head_path, weights_only=True))
    ref.eval()
    imgs = images(MODES[:3])
    with torch.no_grad():
        theirs = ref(torch.cat([ref.preprocess_image(to_rgb(im)) for im in imgs])).numpy()
    np.testing.assert_allclose(ours.raw_features(imgs).numpy(), theirs, atol=1e-5)
    emb = ours.encode(imgs)
    assert emb.shape == (3, 512) and ours.logit_scale == pytest.approx(39.7, abs=0.1)


def test_missing_weights_fail_fast_and_say_how_to_get_them(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        HFImageEncoder("openai/clip-vit-large-patch14")
    assert time.perf_counter() - t0 < 5  # never waits on a network
    msg = str(info.value)
    assert "huggingface-cli download openai/clip-vit-large-patch14" in msg and "Hugging Face cache" in msg
    with pytest.raises(WeightsNotFoundError, match=r"config\.json"):
        HFImageEncoder(str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="neither an existing folder"):
        HFImageEncoder("no-such-model")
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download openai/clip-vit-large-patch14"):
        make_image_encoder("geoclip")


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="'bert' checkpoint"):
        HFImageEncoder(str(tmp_path))


def test_geoclip_needs_a_768_d_clip(tiny_siglip_dir):
    with pytest.raises(WeightsNotFoundError, match="768-d"):
        make_image_encoder(f"geoclip:{tiny_siglip_dir}")
