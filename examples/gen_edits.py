#!/usr/bin/env python3
"""Regenerates examples/images/*.png and examples/kontext-edits.jsonl.

Standard library only (the PNGs are encoded by hand with zlib), deterministic:
running it twice gives the same bytes.

    python3 examples/gen_edits.py            # writes both
    python3 examples/gen_edits.py --lines 50 # a shorter file

Each line is one FLUX.1 Kontext [pro] edit in the wire format's field names, with
no taskUUID (`runware batch` derives one per line), a size among the nine, 1-4
results, and a small reference image inlined as a data URI.
"""

import argparse
import base64
import json
import math
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 96, 64

SIZES = [(1568, 672), (1392, 752), (1184, 880), (1248, 832), (1024, 1024),
         (832, 1248), (880, 1184), (752, 1392), (672, 1568)]


def png(width, height, pixel):
    """A truecolour PNG from pixel(x, y) -> (r, g, b)."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw.extend(pixel(x, y))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


def clamp(v):
    return max(0, min(255, int(v)))


def sunset(x, y):
    """A sky going from violet to orange over a dark sea with a sun."""
    t = y / (H - 1)
    if y > 44:  # sea
        ripple = 12 * math.sin(x / 3.0 + y)
        return (clamp(20 + ripple), clamp(30 + ripple), clamp(70 + ripple))
    r, g, b = 90 + 160 * t, 40 + 90 * t, 140 - 100 * t
    d = math.hypot(x - 60, y - 40)
    if d < 9:
        r, g, b = 255, 220, 120
    return (clamp(r), clamp(g), clamp(b))


def tiles(x, y):
    """Terracotta tiles with grout, like a courtyard floor seen from above."""
    if x % 16 in (0, 1) or y % 16 in (0, 1):
        return (200, 196, 186)
    shade = ((x // 16) * 7 + (y // 16) * 13) % 5 * 9
    return (clamp(180 - shade), clamp(92 - shade / 2), clamp(60 - shade / 3))


def portrait(x, y):
    """A soft head-and-shoulders silhouette on a teal backdrop."""
    head = math.hypot((x - 48) / 14.0, (y - 24) / 17.0) < 1
    shoulders = y > 44 and abs(x - 48) < 10 + (y - 44) * 1.6
    if head:
        return (224, 182, 150)
    if shoulders:
        return (60, 60, 90)
    v = 20 * math.sin(x / 9.0) * math.cos(y / 7.0)
    return (clamp(40 + v), clamp(128 + v), clamp(128 + v))


def forest(x, y):
    """Triangular pines against a pale sky, on a green slope."""
    ground = 50 - 6 * math.sin(x / 15.0)
    if y > ground:
        return (54, 110, 48)
    for cx in (14, 34, 58, 80):
        top = 12 + (cx % 7) * 2
        half = (y - top) * 0.45
        if top <= y <= ground and abs(x - cx) <= half:
            return (24, clamp(70 + cx % 30), 36)
    return (clamp(190 + y), clamp(215 + y // 2), 235)


IMAGES = {"sunset-harbor": sunset, "courtyard-tiles": tiles,
          "studio-portrait": portrait, "pine-ridge": forest}

SUBJECTS = {
    "sunset-harbor": ["the harbor", "the boats", "the sky", "the sea", "the sun"],
    "courtyard-tiles": ["the courtyard", "the tiles", "the floor", "the grout lines"],
    "studio-portrait": ["the portrait", "the subject's jacket", "the backdrop", "the lighting"],
    "pine-ridge": ["the forest", "the pines", "the hillside", "the sky above the ridge"],
}

EDITS = [
    "Turn {s} into a violet dusk scene with long shadows",
    "Make {s} look like a watercolor painting on rough paper",
    "Add a light snowfall over {s}, keeping the composition",
    "Render {s} as a 1970s film photograph with warm grain",
    "Replace the colors of {s} with a muted Scandinavian palette",
    "Make it rain heavily on {s}, with reflections on wet surfaces",
    "Turn {s} into a detailed pencil sketch with cross-hatching",
    "Give {s} a golden-hour glow and soft lens flare",
    "Reimagine {s} as a low-poly 3D render",
    "Set {s} at night under a full moon with cool blue light",
    "Make {s} look like a mosaic of small ceramic tiles",
    "Convert {s} into an ukiyo-e woodblock print",
    "Add autumn foliage and fallen leaves around {s}",
    "Make {s} appear as a tilt-shift miniature model",
    "Turn {s} into a neon cyberpunk scene with magenta signs",
    "Give {s} the look of an oil painting with thick impasto",
    "Place {s} in dense morning fog with diffuse light",
    "Make {s} look like a vintage travel poster with bold shapes",
    "Change the season of {s} to early spring with blossoms",
    "Recolor {s} in high-contrast black and white",
]

STYLES = ["", " Keep the framing identical.", " Preserve the original perspective.",
          " Keep every object in place.", " Do not add any text.", ""]


def data_uri(data):
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20260301)
    args = ap.parse_args()

    img_dir = os.path.join(HERE, "images")
    os.makedirs(img_dir, exist_ok=True)
    uris = {}
    for name, fn in IMAGES.items():
        data = png(W, H, fn)
        with open(os.path.join(img_dir, name + ".png"), "wb") as f:
            f.write(data)
        uris[name] = data_uri(data)

    rng = random.Random(args.seed)
    names = sorted(IMAGES)
    out = os.path.join(HERE, "kontext-edits.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for i in range(args.lines):
            name = names[i % len(names)]
            prompt = rng.choice(EDITS).format(s=rng.choice(SUBJECTS[name])) + "." + rng.choice(STYLES)
            width, height = SIZES[i % len(SIZES)]
            task = {
                "taskType": "imageInference",
                "model": "bfl:3@1",
                "positivePrompt": prompt,
                "width": width,
                "height": height,
                "numberResults": 1 + (i * 7 + i // 9) % 4,
                "includeCost": True,
                "inputs": {"referenceImages": [uris[name]]},
            }
            if i % 5 == 0:
                task["seed"] = rng.randrange(0, 2**31)
            if i % 7 == 3:
                task["outputFormat"] = "PNG"
            elif i % 11 == 5:
                task["outputFormat"] = "WEBP"
                task["outputQuality"] = 85
            if i % 13 == 4:
                task["providerSettings"] = {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}}
            f.write(json.dumps(task, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({args.lines} lines) and {len(IMAGES)} images in {img_dir}")


if __name__ == "__main__":
    main()
