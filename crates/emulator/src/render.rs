//! The pictures: a seed-dependent edit of the first reference image, or a
//! seed-dependent pattern when there is none. Pure and deterministic: the same
//! recipe always encodes to the same bytes. CPU-bound: call from the blocking pool.

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageEncoder, ImageError, RgbImage};
use runware_ws::protocol::OutputFormat;
use std::sync::Arc;

/// The longest side a reference is kept at, between decoding and rendering.
const THUMB_MAX: u32 = 256;

/// Everything that determines one output image.
#[derive(Clone, Debug)]
pub(crate) struct Recipe {
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub format: OutputFormat,
    pub quality: u8,
    /// The first reference image, shrunk.
    pub reference: Option<Arc<RgbImage>>,
}

/// Decodes image bytes and shrinks them to at most [`THUMB_MAX`] a side.
pub(crate) fn thumbnail(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let img = image::load_from_memory(bytes)?;
    let img = if img.width() > THUMB_MAX || img.height() > THUMB_MAX {
        img.resize(THUMB_MAX, THUMB_MAX, FilterType::Triangle)
    } else {
        img
    };
    Ok(img.to_rgb8())
}

/// splitmix64: a seed's stream of well-mixed numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A colour from a hash.
fn colour(h: u64) -> [f32; 3] {
    [(h & 0xff) as f32, ((h >> 8) & 0xff) as f32, ((h >> 16) & 0xff) as f32]
}

/// The pixels of a recipe.
///
/// Built row by row with slice copies (a row is shifted or reused, never recomputed
/// pixel by pixel), so rendering stays cheap even in unoptimised test builds, where
/// the `image` crate's generic helpers would be compiled without optimisation.
pub(crate) fn pixels(r: &Recipe) -> RgbImage {
    let (w, h) = (r.width.max(1), r.height.max(1));
    let look = Look::new(r.seed);
    let buf = match &r.reference {
        Some(thumb) => scale_up(&edit(thumb, &look), w, h),
        None => pattern(w, h, &look),
    };
    RgbImage::from_raw(w, h, buf).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Seed-dependent colours and stripe geometry.
struct Look {
    a: [f32; 3],
    b: [f32; 3],
    tint: [f32; 3],
    period: u32,
    slope: u32,
    band: f32,
}

impl Look {
    fn new(seed: u64) -> Look {
        let h1 = mix(seed);
        let h2 = mix(h1);
        let h3 = mix(h2);
        Look {
            a: colour(h1),
            b: colour(h2),
            tint: colour(h3),
            period: 24 + ((h3 >> 32) % 96) as u32,
            slope: 1 + ((h2 >> 40) % 3) as u32,
            band: ((h1 >> 48) % 1000) as f32 / 1000.0,
        }
    }

    fn stripe(&self, x: u32) -> bool {
        x % self.period < self.period / 2
    }
}

/// A horizontal gradient between two seed colours, crossed by tinted diagonal
/// stripes: row `y` is the first row shifted by `slope * y` pixels.
fn pattern(w: u32, h: u32, look: &Look) -> Vec<u8> {
    let (wu, row_len) = (w as usize, w as usize * 3);
    // One period-aligned row, twice as long, so that any shift is a plain slice.
    let mut row = Vec::with_capacity(row_len * 2);
    for x in 0..2 * w {
        let t = (x % w) as f32 / w as f32;
        let stripe = look.stripe(x);
        for i in 0..3 {
            let g = look.a[i] * (1.0 - t) + look.b[i] * t;
            let v = if stripe { g * 0.7 + look.tint[i] * 0.3 } else { g };
            row.push(v.clamp(0.0, 255.0) as u8);
        }
    }
    let mut out = vec![0u8; row_len * h as usize];
    for (y, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let shift = (y * look.slope as usize) % wu;
        dst.copy_from_slice(&row[shift * 3..shift * 3 + row_len]);
    }
    out
}

/// The reference, tinted with the seed's colour, with a striped, inverted band.
fn edit(thumb: &RgbImage, look: &Look) -> RgbImage {
    let w = thumb.width();
    let band_start = (look.band * w as f32) as u32;
    let band_w = (w / 5).max(1);
    let mut out = thumb.clone();
    for (x, y, px) in out.enumerate_pixels_mut() {
        let in_band = x.wrapping_sub(band_start) < band_w;
        let k = if in_band { 0.55 } else { 0.25 };
        let invert = in_band && look.stripe(x * 8 + y * look.slope);
        for i in 0..3 {
            let v = f32::from(px.0[i]);
            let v = if invert { 255.0 - v } else { v };
            px.0[i] = (v * (1.0 - k) + look.tint[i] * k).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Nearest-neighbour upscale to `w`×`h`: each source row is expanded once and
/// copied to every output row it covers.
fn scale_up(src: &RgbImage, w: u32, h: u32) -> Vec<u8> {
    let (sw, sh) = src.dimensions();
    let raw = src.as_raw();
    let row_len = w as usize * 3;
    let xs: Vec<usize> = (0..w).map(|x| (x as u64 * u64::from(sw) / u64::from(w)) as usize * 3).collect();
    let mut out = vec![0u8; row_len * h as usize];
    let mut last: Option<(usize, usize)> = None; // (source row, output row it was expanded into)
    for y in 0..h as usize {
        let sy = (y as u64 * u64::from(sh) / u64::from(h)) as usize;
        let start = y * row_len;
        match last {
            Some((prev_sy, prev_y)) if prev_sy == sy => {
                out.copy_within(prev_y * row_len..prev_y * row_len + row_len, start);
            }
            _ => {
                let src_row = &raw[sy * sw as usize * 3..(sy + 1) * sw as usize * 3];
                for (dst, &sx) in out[start..start + row_len].chunks_exact_mut(3).zip(&xs) {
                    dst.copy_from_slice(&src_row[sx..sx + 3]);
                }
                last = Some((sy, y));
            }
        }
    }
    out
}

/// Encodes pixels in `format` (`quality` applies to JPEG).
pub(crate) fn encode(img: &RgbImage, format: OutputFormat, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut buf = Vec::with_capacity((img.width() * img.height()) as usize / 4);
    let (w, h) = img.dimensions();
    match format {
        OutputFormat::Jpg => JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100)).write_image(
            img,
            w,
            h,
            ExtendedColorType::Rgb8,
        )?,
        OutputFormat::Png => PngEncoder::new(&mut buf).write_image(img, w, h, ExtendedColorType::Rgb8)?,
        OutputFormat::Webp => WebPEncoder::new_lossless(&mut buf).write_image(img, w, h, ExtendedColorType::Rgb8)?,
    }
    Ok(buf)
}

/// Renders and encodes a recipe.
pub(crate) fn render(r: &Recipe) -> Result<Vec<u8>, ImageError> {
    encode(&pixels(r), r.format, r.quality)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn recipe(seed: u64) -> Recipe {
        Recipe { width: 64, height: 48, seed, format: OutputFormat::Png, quality: 90, reference: None }
    }

    #[test]
    fn same_recipe_same_bytes_other_seed_other_bytes() {
        let a = render(&recipe(7)).unwrap();
        assert_eq!(a, render(&recipe(7)).unwrap());
        assert_ne!(a, render(&recipe(8)).unwrap());
        let img = image::load_from_memory(&a).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }

    #[test]
    fn reference_is_visibly_edited() {
        let reference = Arc::new(RgbImage::from_pixel(10, 10, Rgb([10, 200, 30])));
        let r = Recipe { reference: Some(reference), ..recipe(3) };
        let img = pixels(&r);
        assert_eq!(img.dimensions(), (64, 48));
        assert_ne!(img.get_pixel(0, 0).0, [10, 200, 30]);
    }
}
