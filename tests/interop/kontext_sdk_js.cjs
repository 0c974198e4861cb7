// Interop: the official JS SDK @runware/sdk-js 1.3.2 against the emulator.
// A Kontext [pro] imageInference with numberResults 2 (PNG and JPEG); every image
// URL must download as an image of the requested size.
// Usage: node kontext_sdk_js.cjs WS_URL SDK_DIR
"use strict";
const path = require("path");
const { createRequire } = require("module");

const [wsUrl, sdkDir] = process.argv.slice(2);
const sdkRequire = createRequire(path.join(path.resolve(sdkDir), "package.json"));
const { Runware } = sdkRequire("@runware/sdk-js");

function imageSize(buf) {
  if (buf.length >= 24 && buf.readUInt32BE(0) === 0x89504e47) {
    return ["png", buf.readUInt32BE(16), buf.readUInt32BE(20)];
  }
  if (buf[0] === 0xff && buf[1] === 0xd8) {
    let i = 2;
    while (i + 9 < buf.length) {
      if (buf[i] !== 0xff) { i++; continue; }
      const m = buf[i + 1];
      if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) { i += 2; continue; }
      const len = buf.readUInt16BE(i + 2);
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
        return ["jpeg", buf.readUInt16BE(i + 7), buf.readUInt16BE(i + 5)];
      }
      i += 2 + len;
    }
  }
  throw new Error("not a PNG or JPEG image");
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function check(images, kind, width, height) {
  assert(Array.isArray(images) && images.length === 2, `expected 2 images, got ${JSON.stringify(images)}`);
  assert(new Set(images.map((i) => i.imageUUID)).size === 2, "image UUIDs are not distinct");
  for (const img of images) {
    const resp = await fetch(img.imageURL);
    assert(resp.ok, `${img.imageURL}: HTTP ${resp.status}`);
    const got = imageSize(Buffer.from(await resp.arrayBuffer()));
    assert(
      got[0] === kind && got[1] === width && got[2] === height,
      `${img.imageURL}: got ${got.join(" ")}, want ${kind} ${width}x${height}`,
    );
  }
}

async function main() {
  const rw = await Runware.initialize({ apiKey: "test-key", url: wsUrl, shouldReconnect: false });
  const png = await rw.imageInference({
    positivePrompt: "Turn the sky into a violet dusk over the harbour",
    model: "bfl:3@1",
    width: 1184,
    height: 880,
    numberResults: 2,
    outputFormat: "PNG",
    includeCost: true,
  });
  await check(png, "png", 1184, 880);
  for (const img of png) assert(Math.abs(img.cost - 0.04) < 1e-9, `cost ${img.cost}`);
  const jpg = await rw.imageInference({
    positivePrompt: "A kite workshop by a canal",
    model: "bfl:3@1",
    width: 672,
    height: 1568,
    numberResults: 2,
  });
  await check(jpg, "jpeg", 672, 1568);
  await rw.disconnect();
  console.log("@runware/sdk-js 1.3.2: OK (2 tasks x 2 images, sizes checked)");
}

const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 120000);
main().then(
  () => { clearTimeout(timer); process.exit(0); },
  (e) => { console.error("FAILED:", e); process.exit(1); },
);
