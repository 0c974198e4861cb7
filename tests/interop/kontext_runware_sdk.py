"""Interop: the official Python SDK `runware-sdk` 1.8.0 against the emulator.

Kontext [pro] imageInference with numberResults 2, once with sync delivery and once
with async delivery (acknowledgement, then getResponse polling); every image URL
must download as an image of the requested size."""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from imagesize import fetch_size  # noqa: E402

from runware import Runware  # noqa: E402


def check(results, width, height, kind):
    assert len(results) == 2, f"expected 2 results, got {len(results)}: {results}"
    uuids = {r["imageUUID"] for r in results}
    assert len(uuids) == 2, f"image UUIDs are not distinct: {uuids}"
    for r in results:
        got = fetch_size(r["imageURL"])
        assert got == (kind, width, height), f"{r['imageURL']}: {got}"


async def main(ws_url: str, http_url: str) -> None:
    async with Runware(api_key="test-key", ws_base_url=ws_url, http_base_url=http_url) as rw:
        base = {
            # taskType and an AIR-shaped model keep the SDK off the internet.
            "taskType": "imageInference",
            "model": "bfl:3@1",
            "positivePrompt": "Turn the sky into a violet dusk over the harbour",
            "numberResults": 2,
        }
        sync = await asyncio.wait_for(
            rw.run({**base, "width": 1392, "height": 752, "outputFormat": "PNG", "deliveryMethod": "sync"}),
            timeout=60,
        )
        check(sync, 1392, 752, "png")
        async_results = await asyncio.wait_for(
            rw.run({**base, "width": 832, "height": 1248, "deliveryMethod": "async", "includeCost": True}),
            timeout=90,
        )
        check(async_results, 832, 1248, "jpeg")
        for r in async_results:
            assert r.get("status") == "success", r
            assert abs(r.get("cost", 0) - 0.04) < 1e-9, r
    print("runware-sdk 1.8.0: OK (sync and async, 2 images each, sizes checked)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
