//! The pictures: a seed-dependent edit of the first reference image, or a
//! seed-dependent pattern when there is none. Pure and deterministic: the same
//! recipe always encodes to the same bytes. CPU-bound: call from the blocking pool.

use crate::protocol::OutputFormat;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageEncoder, ImageError, Rgb, RgbImage};
use std::sync::Arc;

/// The longest side a reference is kept at, between decoding and rendering.
const THUMB_MAX: u32 = 512;

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
pub(crate) fn pixels(r: &Recipe) -> RgbImage {
    let (w, h) = (r.width.max(1), r.height.max(1));
    let h1 = mix(r.seed);
    let h2 = mix(h1);
    let h3 = mix(h2);
    let (a, b, tint) = (colour(h1), colour(h2), colour(h3));
    let period = 16 + (h3 >> 32) % 112; // stripe period in pixels
    let slope = ((h2 >> 40) % 5) as i64 - 2; // stripe direction
    let band = (h1 >> 48) % u64::from(w); // the edited vertical band of a reference
    let band_w = u64::from(w / 6).max(1);
    let base = r.reference.as_ref().map(|t| image::imageops::resize(&**t, w, h, FilterType::Triangle));
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let stripe = ((i64::from(x) + slope * i64::from(y)).rem_euclid(period as i64) as u64) < period / 2;
        let rgb: [f32; 3] = match &base {
            Some(img) => {
                let src = img.get_pixel(x, y).0;
                let in_band = u64::from(x).wrapping_sub(band) < band_w;
                let k = if in_band { 0.55 } else { 0.25 };
                let mut c = [0.0; 3];
                for i in 0..3 {
                    let v = src[i] as f32;
                    let v = if in_band && stripe { 255.0 - v } else { v };
                    c[i] = v * (1.0 - k) + tint[i] * k;
                }
                c
            }
            None => {
                let t = (fx + fy) * 0.5;
                let mut c = [0.0; 3];
                for i in 0..3 {
                    let g = a[i] * (1.0 - t) + b[i] * t;
                    c[i] = if stripe { g * 0.8 + tint[i] * 0.2 } else { g };
                }
                c
            }
        };
        *px = Rgb(rgb.map(|v| v.clamp(0.0, 255.0) as u8));
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
