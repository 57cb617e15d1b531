//! Resolving 1000 blog posts and their authors: the N+1 problem, and how a
//! `Loader` turns it into a handful of backend calls.
//!
//! Run with `cargo run --example batch`. The "database" is a counter with
//! 2 ms of latency per call, on Tokio's paused clock, so this finishes at once.
//!
//! The last part caches the authors (LRU, 10 s time to live) across three
//! "requests": the second is served from the cache, the third, 15 s later,
//! fetches again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowguard::batch::{CacheEviction, Loader};
use futures::future::join_all;

/// A pretend database: counts calls, answers `author #id` after 2 ms.
#[derive(Clone, Default)]
struct Db {
    calls: Arc<AtomicU64>,
}

impl Db {
    async fn author(&self, id: u32) -> String {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        format!("author #{id}")
    }

    async fn authors(&self, ids: Vec<u32>) -> HashMap<u32, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        ids.into_iter()
            .map(|id| (id, format!("author #{id}")))
            .collect()
    }
}

/// Post `p` was written by author `p % 50`.
fn author_of(post: u32) -> u32 {
    post % 50
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let posts: Vec<u32> = (0..1000).collect();
    println!("resolving {} posts written by 50 authors", posts.len());

    // Without a loader: one query per post.
    let db = Db::default();
    let names = join_all(posts.iter().map(|&p| db.author(author_of(p)))).await;
    println!(
        "without a loader: {} backend calls for {} names",
        db.calls.load(Ordering::Relaxed),
        names.len()
    );

    // With a loader: the posts' lookups in the same turn become batches of
    // at most 20 distinct authors, each author fetched once.
    let db = Db::default();
    let backend = db.clone();
    let authors = Loader::builder(move |ids: Vec<u32>| {
        let backend = backend.clone();
        async move { Ok::<_, std::convert::Infallible>(backend.authors(ids).await) }
    })
    .max_batch_size(20)
    .build()
    .expect("valid loader config");
    let names = join_all(posts.iter().map(|&p| authors.load(author_of(p)))).await;
    let first = names[0].as_ref().expect("author 0 exists");
    println!(
        "with a loader:    {} backend calls for {} names (post 0 by {first})",
        db.calls.load(Ordering::Relaxed),
        names.len()
    );
    let m = authors.metrics();
    println!(
        "loader metrics:   {} keys requested, {} de-duplicated, {} loaded in {} batches (mean {:.0} per batch)",
        m.keys_requested,
        m.deduplicated,
        m.keys_loaded,
        m.batches_dispatched,
        m.mean_batch_size()
    );

    // A cache shared across requests: LRU, entries live 10 s.
    let db = Db::default();
    let backend = db.clone();
    let cached = Loader::builder(move |ids: Vec<u32>| {
        let backend = backend.clone();
        async move { Ok::<_, std::convert::Infallible>(backend.authors(ids).await) }
    })
    .name("authors")
    .max_batch_size(20)
    .cache(100)
    .cache_eviction(CacheEviction::Lru)
    .cache_ttl(Duration::from_secs(10))
    .build()
    .expect("valid loader config");
    for (request, wait) in [(1, 0), (2, 1), (3, 15)] {
        tokio::time::advance(Duration::from_secs(wait)).await;
        let before = db.calls.load(Ordering::Relaxed);
        join_all(posts.iter().map(|&p| cached.load(author_of(p)))).await;
        println!(
            "request {request} (+{wait:>2} s): {} backend calls",
            db.calls.load(Ordering::Relaxed) - before
        );
    }
    let m = cached.metrics();
    println!(
        "loader `{}`: {} cache hits, {} entries expired and were fetched again",
        m.name, m.cache_hits, m.cache_expirations
    );
}
