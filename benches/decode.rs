//! Inbound decoding: result frames through `decode_frame`.
//!
//! `cargo bench --bench decode`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runware_ws::protocol::{SharedStr, decode_frame};
use serde_json::json;
use std::hint::black_box;

fn url_item(i: u128) -> serde_json::Value {
    json!({
        "taskType": "imageInference",
        "taskUUID": uuid::Uuid::from_u128(i).to_string(),
        "imageUUID": uuid::Uuid::from_u128(i + 1_000_000).to_string(),
        "imageURL": format!("https://im.runware.ai/image/ws/2/ii/{}.jpg", uuid::Uuid::from_u128(i + 1_000_000)),
        "seed": 36839,
        "NSFWContent": false,
        "cost": 0.04
    })
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for batch in [1usize, 16] {
        let frame =
            SharedStr::from(json!({ "data": (0..batch as u128).map(url_item).collect::<Vec<_>>() }).to_string());
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("url_items", batch), &frame, |b, f| {
            b.iter(|| decode_frame(black_box(f)).map(|fr| fr.items.len()))
        });
    }
    let payload = "A".repeat(2 * 1024 * 1024);
    let mut item = url_item(7);
    item.as_object_mut().map(|o| {
        o.remove("imageURL");
        o.insert("imageBase64Data".into(), json!(payload))
    });
    let frame = SharedStr::from(json!({ "data": [item] }).to_string());
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("base64_2mib", |b| b.iter(|| decode_frame(black_box(&frame)).map(|fr| fr.items.len())));
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
