"""What every retrieval backend shares: the encoder protocols, resolving weights without a network,
and quieting transformers while it loads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from geosleuth.errors import MissingDependencyError, WeightsNotFoundError

log = logging.getLogger(__name__)


@runtime_checkable
class ImageEncoder(Protocol):
    """A batch of images -> L2-normalised float32 embeddings of shape (n, dim)."""

    name: str
    dim: int

    def encode(self, images: Sequence[Image.Image]) -> NDArray[np.float32]: ...

    @property
    def fingerprint(self) -> str:
        """Identifies the weights: indexes and caches built with other weights are refused."""
        ...


@runtime_checkable
class LocationEncoder(Protocol):
    """(n, 2) (lat, lon) degrees -> L2-normalised float32 embeddings of shape (n, dim)."""

    name: str
    dim: int

    def encode(self, points: ArrayLike) -> NDArray[np.float32]: ...

    @property
    def fingerprint(self) -> str: ...


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "retrieval", "Image encoders") from exc
    return transformers


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def resolve_weights(name: str, *, what: str) -> Path:
    """A local folder for ``name``: the path itself, or its snapshot in the Hugging Face cache.

    Never touches the network: a checkpoint that is not on this machine is an error that says how
    to get it."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(
                what, f"{path} has no config.json; pass a transformers checkpoint folder"
            )
        return path
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        raise WeightsNotFoundError(
            what, f"{name!r} is neither an existing folder nor a Hugging Face model id"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except ImportError as exc:
        raise MissingDependencyError("huggingface_hub", "retrieval", "Finding model weights") from exc
    except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
        raise WeightsNotFoundError(
            what,
            f"{name!r} is not on this machine (no such folder, and not in the Hugging Face cache at "
            f"{hf_cache_dir()}). Where there is internet: `huggingface-cli download {name}`, then copy the "
            f"cache here or pass the downloaded folder (e.g. --image-encoder /models/{name.split('/')[-1]})",
        ) from exc


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over a checkpoint's weight files, remembered per (file, size, mtime) so a 1.7 GB
    checkpoint is hashed once, not at every start."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise WeightsNotFoundError(
            str(folder), "no weight files (*.safetensors, *.bin) in the checkpoint folder"
        )
    memo_path = (cache_dir / "weight-digests.json") if cache_dir else None
    memo: dict[str, str] = {}
    if memo_path and memo_path.exists():
        with contextlib.suppress(OSError, ValueError):
            memo = json.loads(memo_path.read_text())
    h = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_sha256(f)
            changed = True
        h.update(f.name.encode() + memo[key].encode())
    if memo_path and changed:
        with contextlib.suppress(OSError):
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_path)
    return h.hexdigest()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time chatter (progress bars, the torchvision fallback notice)."""
    transformers = require_transformers()
    tlog = transformers.utils.logging
    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        tlog.enable_progress_bar()


def as_rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Safe RGB conversion (greyscale, CMYK, palette, alpha, 16-bit, EXIF orientation)."""
    from geosleuth.tools.image import to_rgb

    return [to_rgb(img) for img in images]


def l2_normalise(x: NDArray[Any]) -> NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, np.maximum(norms, 1e-12), dtype=np.float32)
