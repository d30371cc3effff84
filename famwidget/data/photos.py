"""Real photographs that ship inside scikit-image, scikit-learn and matplotlib (no network)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: photo name -> the package that ships it
SOURCES: dict[str, str] = {
    "astronaut": "scikit-image",
    "cat": "scikit-image",
    "coffee": "scikit-image",
    "rocket": "scikit-image",
    "motorcycle": "scikit-image",
    "immunohistochemistry": "scikit-image",
    "retina": "scikit-image",
    "hubble": "scikit-image",
    "camera": "scikit-image",
    "china": "scikit-learn",
    "flower": "scikit-learn",
    "grace_hopper": "matplotlib",
}

_CACHE: dict[str, np.ndarray] = {}


def photos(names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Load bundled real photos.

    Args:
        names: subset of :data:`SOURCES` to load (default: all).

    Returns:
        ``name -> uint8 (H, W, 3)`` RGB array (grayscale is repeated to 3 channels, alpha
        dropped). Arrays are fresh copies; the decoded files are cached between calls.

    Raises:
        ImportError: if a package that holds a requested photo is not installed (the message
            names the package to ``pip install``).
        ValueError: for an unknown name.
    """
    wanted = list(SOURCES) if names is None else list(names)
    for name in wanted:
        if name not in SOURCES:
            raise ValueError(f"unknown photo {name!r}; available: {', '.join(SOURCES)}")
    out = {}
    for name in wanted:
        if name not in _CACHE:
            _CACHE[name] = _to_rgb(_loader(name)())
        out[name] = _CACHE[name].copy()
    return out


def _loader(name: str) -> Callable[[], np.ndarray]:
    package = SOURCES[name]
    try:
        if package == "scikit-image":
            import skimage.data as skd

            return {
                "astronaut": skd.astronaut,
                "cat": skd.chelsea,
                "coffee": skd.coffee,
                "rocket": skd.rocket,
                "motorcycle": lambda: skd.stereo_motorcycle()[0],
                "immunohistochemistry": skd.immunohistochemistry,
                "retina": skd.retina,
                "hubble": skd.hubble_deep_field,
                "camera": skd.camera,
            }[name]
        if package == "scikit-learn":
            from sklearn.datasets import load_sample_image

            return lambda: load_sample_image(f"{name}.jpg")
        import matplotlib.cbook as cbook
        from PIL import Image

        def grace() -> np.ndarray:
            with cbook.get_sample_data("grace_hopper.jpg") as f:
                return np.asarray(Image.open(f).convert("RGB"))

        return grace
    except ImportError as e:
        hint = (
            "pip install matplotlib pillow"
            if package == "matplotlib"
            else ("pip install 'famwidget[photos]' (or: pip install scikit-image scikit-learn)")
        )
        raise ImportError(f"photo {name!r} ships with {package}; install it with: {hint}") from e


def _to_rgb(img: np.ndarray) -> np.ndarray:
    """Any image array -> contiguous uint8 ``(H, W, 3)``."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)
