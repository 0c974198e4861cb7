//! The batch pipeline without the network (`runware_cli::bench_support::pipeline`):
//! per line, what `runware batch` does besides the engine — read, parse, validate,
//! derive the identity and taskUUID, serialize the attempt, journal the attempt
//! and the result, count progress. `cargo bench --bench pipeline`; criterion
//! reports lines per second (BENCHMARKS.md, "The batch against the engine").

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::Write;
use std::time::Duration;

const LINES: u64 = 2_000;

fn pipeline(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("runware-pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let input = dir.join("edits.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("the input"));
    for i in 0..LINES {
        writeln!(f, r#"{{"positivePrompt":"Repaint the courtyard at golden hour, variant {i}","size":"1:1"}}"#)
            .expect("a line");
    }
    drop(f);
    let journal = dir.join("edits.results.jsonl");
    let mut g = c.benchmark_group("batch_pipeline");
    g.throughput(Throughput::Elements(LINES)).sample_size(20).measurement_time(Duration::from_secs(8));
    g.bench_function("2000_lines", |b| {
        b.iter(|| assert_eq!(runware_cli::bench_support::pipeline(&input, &journal), LINES));
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
