"""Interop: the official Python SDK `runware` 0.5.24 against the emulator.

A Kontext [pro] imageInference with numberResults 2; both image URLs must download
as images of the requested size."""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from imagesize import fetch_size  # noqa: E402

from runware import IImageInference, Runware  # noqa: E402

WIDTH, HEIGHT = 1248, 832


async def main(url: str) -> None:
    rw = Runware(api_key="test-key", url=url)
    await rw.connect()
    request = IImageInference(
        positivePrompt="Turn the sky into a violet dusk over the harbour",
        model="bfl:3@1",
        width=WIDTH,
        height=HEIGHT,
        numberResults=2,
        outputFormat="PNG",
        includeCost=True,
    )
    images = await asyncio.wait_for(rw.imageInference(requestImage=request), timeout=60)
    assert len(images) == 2, f"expected 2 images, got {len(images)}"
    uuids = {img.imageUUID for img in images}
    assert len(uuids) == 2, f"image UUIDs are not distinct: {uuids}"
    for img in images:
        assert img.imageURL, f"no imageURL in {img}"
        kind, w, h = fetch_size(img.imageURL)
        assert (kind, w, h) == ("png", WIDTH, HEIGHT), f"{img.imageURL}: {kind} {w}x{h}"
        assert abs((img.cost or 0) - 0.04) < 1e-9, f"cost {img.cost}"
    # A second request on the same connection, JPEG this time.
    request = IImageInference(
        positivePrompt="A kite workshop by a canal", model="bfl:3@1", width=1024, height=1024, numberResults=2
    )
    images = await asyncio.wait_for(rw.imageInference(requestImage=request), timeout=60)
    assert len(images) == 2
    for img in images:
        assert fetch_size(img.imageURL) == ("jpeg", 1024, 1024)
    await rw.disconnect()
    print("runware 0.5.24: OK (2 tasks x 2 images, sizes checked)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
