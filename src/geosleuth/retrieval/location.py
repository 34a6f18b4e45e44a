"""GeoCLIP's location encoder, batched: GPS points -> 512-d embeddings in GeoCLIP's image space.

The architecture is GeoCLIP's (Vivanco Cepeda et al., NeurIPS 2023): an Equal Earth projection, then
three random-Fourier-feature capsules (sigma = 2^0, 2^4, 2^8), each an MLP (512 -> 1024 -> 1024 ->
1024 -> 512), summed. The trained weights are the ones the ``geoclip`` wheel ships; they are read
from the package's files with ``torch.load(weights_only=True)``.

Every step runs on whole batches of points (no per-point Python loop), on CPU or GPU, and with the
same operation order as the reference so that embeddings agree to float32 rounding.
"""

from __future__ import annotations

import logging
import math
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geosleuth.errors import MissingDependencyError, WeightsNotFoundError
from geosleuth.retrieval.base import file_sha256

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Equal Earth projection constants (Šavrič, Patterson and Jenny 2018) and GeoCLIP's scale.
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SCALE = 66.50336
SIGMAS = (2.0**0, 2.0**4, 2.0**8)
GEOCLIP_INSTALL = "pip install --no-deps geoclip==1.3.0  (its declared dependencies would replace torch)"


def require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "torch",
            "retrieval",
            "Retrieval (image and location encoders); install the CPU build first with "
            "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, then",
        ) from exc
    return torch


def geoclip_file(relative: str) -> Path:
    """A file inside the installed ``geoclip`` wheel, found without importing geoclip (its import
    pulls transformers and pandas and takes seconds)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("geoclip")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            "GeoCLIP's trained weights",
            f"the geoclip package is not installed; install it with: {GEOCLIP_INSTALL}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise WeightsNotFoundError(
            "GeoCLIP's trained weights",
            f"{path} is missing from the installed geoclip package; reinstall it with: {GEOCLIP_INSTALL}",
        )
    return path


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """Project (lat, lon) degrees, shape (n, 2), to GeoCLIP's scaled Equal Earth plane, shape (n, 2)."""
    torch = require_torch()
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    root3 = torch.sqrt(torch.tensor(3.0, dtype=latlon.dtype, device=latlon.device))
    theta = torch.asin(root3 / 2 * torch.sin(lat))
    denom = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = (2 * root3 * lon * torch.cos(theta)) / denom
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return torch.stack((x, y), dim=1) * SCALE / 180


class GeoCLIPLocationEncoder:
    """Encode GPS points with GeoCLIP's trained location encoder.

    ``encode`` returns L2-normalised float32 (n, 512) numpy arrays (the protocol every location
    encoder here follows); ``features`` returns the raw torch features, as GeoCLIP computes them.
    """

    name = "geoclip-location-encoder"
    dim = 512

    def __init__(self, *, device: str = "cpu", weights: Path | None = None, batch_size: int = 4096) -> None:
        self.torch = require_torch()
        self.device = device
        self.batch_size = batch_size
        self.weights_path = weights or geoclip_file("model/weights/location_encoder_weights.pth")
        self._load()

    def _load(self) -> None:
        torch = self.torch
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsNotFoundError(
                "GeoCLIP's location encoder",
                f"{self.weights_path} could not be read ({exc}); reinstall geoclip with: {GEOCLIP_INSTALL}",
            ) from exc
        n = len(SIGMAS)

        def stack(suffix: str) -> Any:
            return torch.stack([state[f"LocEnc{i}.{suffix}"] for i in range(n)]).to(self.device)

        try:
            self.b = stack("capsule.0.b")  # (3, 256, 2): the random Fourier frequencies, sigma-scaled
            self.w = [stack(f"capsule.{j}.weight") for j in (1, 3, 5)] + [stack("head.0.weight")]
            self.bias = [stack(f"capsule.{j}.bias") for j in (1, 3, 5)] + [stack("head.0.bias")]
        except KeyError as exc:
            raise WeightsNotFoundError(
                "GeoCLIP's location encoder",
                f"{self.weights_path} lacks the tensor {exc}; is it a GeoCLIP file?",
            ) from exc

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights file: gallery caches are keyed by it."""
        return file_sha256(self.weights_path)

    def features(self, latlon: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) features for a (n, 2) tensor of (lat, lon) degrees."""
        torch = self.torch
        linear = torch.nn.functional.linear
        v = equal_earth(latlon.to(self.device, torch.float32))  # (n, 2)
        out = torch.zeros(v.shape[0], self.dim, device=self.device)
        for k in range(len(SIGMAS)):
            # Same operation order as GeoCLIP (2*pi*v first): at sigma = 256 the phases reach
            # hundreds of radians, where float32 rounding order shows in the fifth decimal.
            vp = (2 * math.pi * v) @ self.b[k].T  # (n, 256)
            h = torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)
            for layer in range(3):
                h = torch.relu(linear(h, self.w[layer][k], self.bias[layer][k]))
            out += linear(h, self.w[3][k], self.bias[3][k])
        return out

    def encode(self, points: ArrayLike) -> NDArray[np.float32]:
        """L2-normalised embeddings, float32 (n, 512), for (n, 2) (lat, lon) degrees."""
        torch = self.torch
        arr = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 2))
        if not np.isfinite(arr).all() or (np.abs(arr[:, 0]) > 90).any() or (np.abs(arr[:, 1]) > 180).any():
            bad = int(
                np.flatnonzero(
                    ~(np.isfinite(arr).all(1) & (np.abs(arr[:, 0]) <= 90) & (np.abs(arr[:, 1]) <= 180))
                )[0]
            )
            raise ValueError(f"point {bad} = {arr[bad].tolist()} is not a valid (lat, lon) in degrees")
        out = np.empty((len(arr), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(arr), self.batch_size):
                feats = self.features(torch.from_numpy(arr[start : start + self.batch_size]))
                feats = torch.nn.functional.normalize(feats, dim=1)
                out[start : start + len(feats)] = feats.cpu().numpy()
        return out


def geoclip_logit_scale() -> float:
    """GeoCLIP's trained temperature: logits = exp(logit_scale) * cosine similarity."""
    torch = require_torch()
    value = torch.load(
        geoclip_file("model/weights/logit_scale_weights.pth"), map_location="cpu", weights_only=True
    )
    return float(torch.as_tensor(value).exp())
