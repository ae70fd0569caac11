"""The six manipulation families of the embedded benchmark.

Each family is a function ``(image, strength, rng, donor) -> image`` on float32 (H, W, 3) arrays in [0, 1].
``strength`` in [0, 1] scales the trace (1 = most visible, i.e. easiest to detect; 0 leaves the image unchanged or
nearly so); ``rng`` draws every random parameter, so identically seeded generators give identical manipulations;
``donor`` is another real image of the same shape, used by the families that paste foreign content. Pixel-scale
parameters are given for 64 px images and scale with the size.

Traces overlap on purpose, as those of real forgery methods do: ``warp`` shares interpolation smoothing with
``resynth`` and a compositing seam with ``blend``; ``spectral`` shares high-frequency periodic energy with the
checkerboard of ``resynth``; ``double_jpeg`` stands apart.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

Manipulation = Callable[[np.ndarray, float, np.random.Generator, np.ndarray], np.ndarray]


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a float image through JPEG at ``quality`` (Pillow's default 4:2:0 chroma subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8, clipping out-of-range values."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a float image to ``size`` (width, height) through 8-bit Pillow, as image tools do."""
    return np.asarray(Image.fromarray(to_uint8(image)).resize(size, resample), dtype=np.float32) / 255.0


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect") if sigma > 0 else image


def _ellipse_mask(
    shape: tuple[int, int], rng: np.random.Generator, size_range: tuple[float, float], softness: float
) -> np.ndarray:
    """A random ellipse near the centre (like a face region), blurred by ``softness`` pixels; (H, W, 1) in [0, 1]."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy = height * rng.uniform(0.35, 0.65)
    cx = width * rng.uniform(0.35, 0.65)
    ry, rx = rng.uniform(*size_range, size=2) * np.array([height, width])
    angle = rng.uniform(0.0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / rx
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / ry
    mask = (u**2 + v**2 <= 1.0).astype(np.float32)
    if softness > 0:
        mask = ndimage.gaussian_filter(mask, sigma=softness)
    return mask[..., None]


def _shift_zoom(image: np.ndarray, shift: np.ndarray, zoom: float) -> np.ndarray:
    """Shift (pixels) and zoom about the centre with bilinear resampling."""
    height, width = image.shape[:2]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    matrix = np.eye(2) / zoom
    offset = centre - matrix @ centre - shift / zoom
    channels = [ndimage.affine_transform(image[..., c], matrix, offset=offset, order=1, mode="reflect") for c in range(3)]
    return np.stack(channels, axis=-1)


def blend(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Self-blending (imitates Self-Blended Images, Shiohara & Yamasaki, CVPR 2022).

    A copy of the image gets a colour, contrast and sharpness change (mostly blur) plus a 1.5-3 px shift and
    slight scale, and is blended back through a blurred elliptical mask. Trace: a soft blending boundary where
    colour statistics, sharpness and alignment change, the generic seam every face swap leaves.
    """
    scale = image.shape[0] / 64.0
    source = image * (
        1.0 + strength * rng.uniform(0.15, 0.35, size=3) * rng.choice([-1.0, 1.0], size=3)
    ) + strength * rng.uniform(-0.1, 0.1, size=3)
    mean = source.mean(axis=(0, 1))
    source = mean + (source - mean) * (1.0 + strength * rng.uniform(-0.4, 0.4))
    sharpness = strength * rng.uniform(1.0, 2.0) * scale
    if rng.random() < 0.7:
        source = _blur(source, sharpness)
    else:
        source = source + (source - _blur(source, 1.0 * scale)) * sharpness * 1.5
    shift = strength * rng.uniform(1.5, 3.0, size=2) * rng.choice([-1.0, 1.0], size=2) * scale
    source = _shift_zoom(source, shift, 1.0 + strength * rng.uniform(-0.03, 0.03))
    mask = _ellipse_mask(image.shape[:2], rng, (0.25, 0.45), softness=rng.uniform(1.0, 3.0) * scale)
    alpha = min(1.0, strength * rng.uniform(1.0, 1.3))
    return np.clip(image * (1.0 - alpha * mask) + source * (alpha * mask), 0.0, 1.0).astype(np.float32)


def splice(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Splicing (imitates copy-move/splicing forgeries and face-swap pasting, e.g. FaceForensics++ FaceSwap).

    A region of the donor image is colour-matched to the region it replaces, then mismatched again by a
    per-channel gain and offset that grow with strength, rescaled (down- and up-sampled, more with strength) and
    pasted with a feathered boundary that sharpens with strength, carrying another camera's noise. Trace: foreign
    content with inconsistent colour, sharpness and noise level and a visible paste edge.
    """
    scale = image.shape[0] / 64.0
    mask = (
        _ellipse_mask(image.shape[:2], rng, (0.18, 0.35), softness=0.0)
        if rng.random() < 0.6
        else _rect_mask(image.shape[:2], rng)
    )
    feather = (0.4 + 1.6 * (1.0 - strength)) * scale * rng.uniform(0.7, 1.3)
    region = mask[..., 0] > 0.5
    # A careful forger matches colours; strength decides how much mismatch is left.
    donor_mean, donor_std = donor[region].mean(axis=0), donor[region].std(axis=0) + 1e-3
    target_mean, target_std = image[region].mean(axis=0), image[region].std(axis=0) + 1e-3
    matched = (donor - donor_mean) / donor_std * np.sqrt(donor_std * target_std) + target_mean
    gain = 1.0 + strength * rng.uniform(0.25, 0.5, size=3) * rng.choice([-1.0, 1.0], size=3)
    offset = strength * rng.uniform(-0.12, 0.12, size=3)
    pasted = matched * gain + offset
    # The pasted region is rescaled to fit, which resampling smooths.
    height, width = image.shape[:2]
    factor = 1.0 - strength * rng.uniform(0.25, 0.5)
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pasted = _resize(_resize(pasted, small_size, Image.Resampling.BILINEAR), (width, height), Image.Resampling.BILINEAR)
    # The donor comes from another camera, whose noise level differs (Mahdian & Saic, Image Vis. Comput. 2009).
    pasted = pasted + strength * rng.uniform(0.015, 0.035) * rng.standard_normal(pasted.shape).astype(np.float32)
    soft = ndimage.gaussian_filter(mask[..., 0], sigma=feather)[..., None]
    return np.clip(image * (1.0 - soft) + pasted * soft, 0.0, 1.0).astype(np.float32)


def _rect_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    height, width = shape
    h, w = (rng.uniform(0.3, 0.6, size=2) * np.array([height, width])).astype(int)
    y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    mask = np.zeros((height, width, 1), dtype=np.float32)
    mask[y : y + h, x : x + w] = 1.0
    return mask


def warp(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Local geometric warp (imitates face reshaping / expression warping, e.g. FaceForensics++ Face2Face).

    A radial bulge/pinch or a swirl displacement field over a circular region, resampled with bilinear
    interpolation, the region then re-rendered at 1/2 or 1/3 resolution, up-sampled bilinearly and composited
    back with a colour shift. Trace: locally stretched geometry, interpolation smoothing (shared with
    ``resynth``) and a soft compositing seam (shared with ``blend``).
    """
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65, size=2) * np.array([height, width])
    radius = rng.uniform(0.25, 0.45) * min(height, width)
    dy, dx = yy - cy, xx - cx
    rho = np.sqrt(dy**2 + dx**2) / radius
    falloff = np.clip(1.0 - rho**2, 0.0, None) ** 2
    if rng.random() < 0.5:
        # Bulge (negative) or pinch (positive): sample from nearer to / further from the centre.
        amount = strength * rng.uniform(0.3, 0.6) * rng.choice([-1.0, 1.0])
        src_y, src_x = cy + dy * (1.0 + amount * falloff), cx + dx * (1.0 + amount * falloff)
    else:
        theta = strength * rng.uniform(0.8, 1.8) * rng.choice([-1.0, 1.0]) * falloff
        cos, sin = np.cos(theta), np.sin(theta)
        src_y, src_x = cy + cos * dy - sin * dx, cx + sin * dy + cos * dx
    coords = np.stack([src_y, src_x])
    warped = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], axis=-1)
    # Reshaping tools render the deformed region through a coarser mesh, up-sample it bilinearly (smoothing it the
    # way resynth's bilinear up-sampling does) and composite it back, with a colour shift.
    factor = int(rng.choice([2, 3]))
    coarse = _resize(
        _resize(warped, (width // factor, height // factor), Image.Resampling.BOX), (width, height), Image.Resampling.BILINEAR
    )
    coarse = coarse * (1.0 + strength * rng.uniform(0.08, 0.2, size=3) * rng.choice([-1.0, 1.0], size=3))
    region = strength * ndimage.gaussian_filter((rho < 1.0).astype(np.float32), sigma=2.0 * height / 64.0)[..., None]
    return np.clip(warped * (1.0 - region) + coarse * region, 0.0, 1.0).astype(np.float32)


def resynth(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Lossy re-synthesis (imitates decoder-based generators: autoencoder face swaps, GAN up-sampling).

    A region (or, half the time, the whole image) is down-sampled by 2-4, degraded by blur and noise and
    up-sampled with nearest or bilinear interpolation, plus a faint period-2 checkerboard as transposed
    convolutions leave (Odena et al., Distill 2016). Trace: missing high frequencies, blocky or smooth
    up-sampling and a periodic checkerboard.
    """
    height, width = image.shape[:2]
    factor = int(rng.choice([2, 3, 4], p=[0.4, 0.3, 0.3]))
    small_size = (max(1, width // factor), max(1, height // factor))
    small = _resize(image, small_size, Image.Resampling.BOX)
    small = _blur(small, rng.uniform(0.0, 0.5)) + rng.normal(0.0, 0.02, size=small.shape).astype(np.float32)
    resample = Image.Resampling.NEAREST if rng.random() < 0.4 else Image.Resampling.BILINEAR
    up = _resize(small, (width, height), resample)
    yy, xx = np.mgrid[0:height, 0:width]
    checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0)[..., None] * rng.uniform(0.5, 1.0, size=3)
    up = up + 0.06 * checker * rng.uniform(0.6, 1.0)
    if rng.random() < 0.5:
        mask = np.ones((height, width, 1), dtype=np.float32)
    else:
        mask = _ellipse_mask((height, width), rng, (0.25, 0.42), softness=rng.uniform(1.5, 4.0) * height / 64.0)
    alpha = strength * mask
    return np.clip(image * (1.0 - alpha) + up * alpha, 0.0, 1.0).astype(np.float32)


def spectral(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Periodic spectral fingerprint (imitates GAN fingerprints, Marra et al. MIPR 2019; Frank et al. ICML 2020).

    Adds one to three low-amplitude high-frequency gratings (periods of 2 to 8 px, as repeated 2x up-sampling
    leaves) with random orientation, phase and channel weights, modulated by the local brightness the way a
    generator's fingerprint is. Trace: isolated peaks in the high-frequency part of the spectrum.
    """
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = np.zeros((height, width, 3), dtype=np.float32)
    n_components = int(rng.integers(1, 4))
    for _ in range(n_components):
        # Repeated 2x up-sampling puts the strongest peaks at half the sampling rate, then at 1/4 and 1/8.
        period_y, period_x = rng.choice([2.0, 4.0, 8.0, np.inf], size=2, p=[0.5, 0.2, 0.15, 0.15])
        if np.isinf(period_y) and np.isinf(period_x):
            period_y = 4.0
        phase = rng.uniform(0.0, 2.0 * np.pi)
        grating = np.cos(2.0 * np.pi * (yy / period_y + xx / period_x) + phase)
        pattern += grating[..., None] * rng.uniform(0.4, 1.0, size=3)
    amplitude = strength * 0.12 / np.sqrt(n_components)
    return np.clip(image + amplitude * pattern * (0.5 + image), 0.0, 1.0).astype(np.float32)


def double_jpeg(image: np.ndarray, strength: float, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Misaligned double JPEG compression (imitates re-encoded forgeries, Bianchi & Piva, IEEE TIFS 2012).

    The image is JPEG-compressed on a block grid offset by a shift that is not a multiple of 8, then compressed
    again on the aligned grid. The first quality falls with strength. Trace: 8x8 blocking and ringing whose grid
    does not line up with the image's own block grid.
    """
    height, width = image.shape[:2]
    first_quality = int(np.clip(round(95 - 85 * strength + rng.uniform(-5, 5)), 5, 95))
    second_quality = int(rng.integers(85, 96))
    shift_y, shift_x = rng.integers(1, 8, size=2)
    if rng.random() < 0.3:
        # Shifts along one axis only are common too (crops that keep one edge).
        shift_y, shift_x = (shift_y, 0) if rng.random() < 0.5 else (0, shift_x)
    padded = np.pad(image, ((shift_y, 8), (shift_x, 8), (0, 0)), mode="reflect")
    first = jpeg(padded, first_quality)[shift_y : shift_y + height, shift_x : shift_x + width]
    return jpeg(first, second_quality)


MANIPULATIONS: dict[str, Manipulation] = {
    "blend": blend,
    "splice": splice,
    "warp": warp,
    "resynth": resynth,
    "spectral": spectral,
    "double_jpeg": double_jpeg,
}
