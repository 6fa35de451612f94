//! `cargo bench --bench azure`: blobgc's sweep on a real Azure Blob Storage emulator (Azurite on
//! 127.0.0.1) vs raw object_store bulk deletes of as many objects at the same concurrency, side
//! by side in one run, medians of `BLOBGC_BENCH_ROUNDS` (default 3) rounds of
//! `BLOBGC_BENCH_OBJECTS` (default 5000) objects.

// Shared with the tests, which use all of it.
#[allow(dead_code)]
#[path = "../it/azurite.rs"]
mod azurite;
mod sweep_rate;

use sweep_rate::{CONCURRENCY, env_or, median};

fn main() {
    let az = azurite::Azurite::start();
    for (name, value) in az.env() {
        // SAFETY: no other thread runs yet. The sweep reads its store's settings from the
        // standard variables, as a user's run does.
        unsafe { std::env::set_var(name, value) };
    }
    let container = az.container("bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (n, rounds) = (
        env_or("BLOBGC_BENCH_OBJECTS", 5_000),
        env_or("BLOBGC_BENCH_ROUNDS", 3),
    );
    let (mut raw, mut gc) = (vec![], vec![]);
    rt.block_on(async {
        for round in 0..rounds {
            let root = format!("az://bench/sweep-{round}");
            let raw_prefix = format!("raw-{round}");
            let at = sweep_rate::Places {
                client: &container,
                raw: &raw_prefix,
                root: &root,
                options: &Default::default(),
            };
            // A blob batch request takes up to 256 keys.
            let rates = sweep_rate::round(at, n, 64, round).await;
            raw.push(rates.0);
            gc.push(rates.1);
        }
    });
    let (raw, gc) = (median(raw), median(gc));
    println!(
        "blobgc Azure benchmark: Azurite 3 on 127.0.0.1, 2 cores shared with it, {rounds} rounds, medians"
    );
    println!("{:<56} {:>10} {:>6}", "what", "objects/s", "ratio");
    for (what, rate) in [("raw bulk delete", raw), ("blobgc sweep", gc)] {
        let what = format!("{what}, {n} objects, 64 a batch, concurrency {CONCURRENCY}");
        println!("{what:<56} {rate:>10.0} {:>6.2}", rate / raw);
    }
}
