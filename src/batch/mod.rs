//! DataLoader-style batching: turn N concurrent lookups by key into
//! ⌈N / max_batch_size⌉ calls of one batch function.
//!
//! The cure for the "N+1 queries" problem: resolvers call
//! [`Loader::load`] one key at a time, and the loader collects the keys
//! requested in the same scheduler turn (or within a
//! [`delay`](LoaderBuilder::delay)) into one call of your batch function.
//!
//! - **Batching**: a batch is sent once its window closes or as soon as
//!   [`max_batch_size`](LoaderBuilder::max_batch_size) keys wait. Batches
//!   whose windows close together (several loaders' batches opened in one
//!   scheduler turn) call their batch functions in the order they opened,
//!   as DataLoader does: a loader whose batch function loads from another
//!   sees the keys of the loaders that opened first lead that batch.
//! - **De-duplication**: a key already waiting or being fetched joins that
//!   batch, so each key is fetched once however many callers ask.
//! - **Detached batches**: each batch runs on its own Tokio task, so a
//!   cancelled caller never cancels the batch for the others; no lock is held
//!   across an `.await`. [`max_concurrent_batches`](LoaderBuilder::max_concurrent_batches)
//!   bounds how many run at once.
//! - **Per-key errors**: a key missing from the answer is
//!   [`LoadErrorKind::NotFound`]; a failed batch gives each of its keys the
//!   same [`LoadErrorKind::Batch`]`(Arc<E>)`, so `E` needs no `Clone`. Every
//!   [`LoadError`] names its loader ([`name`](LoaderBuilder::name)), as do
//!   the loader's metrics and `tracing` events.
//! - **Cache key** ([`cache_key`](LoaderBuilder::cache_key), DataLoader's
//!   `cacheKeyFn`): keys that map to the same cache key are one key.
//! - **Cache** (optional, bounded, FIFO or [LRU](CacheEviction::Lru), with
//!   an optional [time to live](LoaderBuilder::cache_ttl)):
//!   [`prime`](Loader::prime), [`prime_error`](Loader::prime_error),
//!   [`clear`](Loader::clear), [`clear_all`](Loader::clear_all). Values are
//!   cached; whole-batch failures never are; `NotFound` and per-key errors
//!   only with [`cache_errors`](LoaderBuilder::cache_errors). As in
//!   DataLoader, a key being loaded counts as present (`prime` leaves it to
//!   its fetch), and `clear` then `prime` always wins over a fetch in flight.
//!
//! Where this differs from graphql/dataloader, deliberately:
//!
//! - **The cache is off by default**, and bounded when on
//!   ([`cache`](LoaderBuilder::cache)`(max_entries)`). DataLoader caches
//!   every key, unbounded, unless told not to: a DataLoader is meant to
//!   live for one request, so its cache is that request's memo. A
//!   flowguard loader is meant to be long-lived and shared by many
//!   requests, where an unbounded cache on by default would grow for ever
//!   (a leak) and keep answering with values gone stale.
//! - **De-duplication does not need the cache**: with the cache off, a key
//!   already waiting or being fetched still joins that fetch, so the batch
//!   function never sees a key twice in one batch. DataLoader with
//!   `cache: false` hands the batch function the key once per load.
//!   Fetching the same key twice at the same time is waste whether or not
//!   answers are kept afterwards.
//! - **A cache hit answers at once**, on the load's first poll, and costs
//!   no batch. DataLoader (since v2) resolves a cached load only when the
//!   current batch is dispatched, in the same tick as the loads it fetches.
//!   A Rust future has no promise tick to keep in step with: holding a
//!   value already in hand for a scheduler turn would only add latency.
//! - **[`max_batch_size`](LoaderBuilder::max_batch_size) defaults to
//!   1000** (at most [`MAX_BATCH_SIZE`]); DataLoader's `maxBatchSize`
//!   defaults to `Infinity`. Backends bound one request (SQL `IN` lists and
//!   bind parameters, request bodies), and a bounded batch bounds the memory
//!   of the batch still collecting. Set it to [`MAX_BATCH_SIZE`] for the
//!   nearest to unbounded.
//! - **Per-key errors and `NotFound` are not cached unless asked**
//!   ([`cache_errors`](LoaderBuilder::cache_errors)). DataLoader caches
//!   every resolved entry, an `Error` instance included, until cleared. A
//!   long-lived loader that kept a per-key error would keep answering a
//!   transient failure ("row locked", "shard unavailable") for as long as
//!   the entry lives; a key that is really absent can be cached with
//!   `cache_errors(true)`. Whole-batch failures are never cached, as in
//!   DataLoader.
//! - **The batch function receives the mapped keys** of
//!   [`cache_key`](LoaderBuilder::cache_key), not the first caller's
//!   original key (see there).
//!
//! # Examples
//!
//! ```
//! use std::collections::HashMap;
//! use flowguard::batch::Loader;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let authors = Loader::builder(|ids: Vec<u32>| async move {
//!     Ok::<_, std::io::Error>(ids.into_iter().map(|id| (id, format!("author {id}"))).collect::<HashMap<_, _>>())
//! })
//! .max_batch_size(100)
//! .build()
//! .unwrap();
//!
//! let posts = 0..1000u32;
//! let names = authors.load_many(posts.map(|p| p % 250)).await;
//! assert_eq!(names[251].as_deref().unwrap(), "author 1");
//! let m = authors.metrics();
//! assert_eq!((m.keys_requested, m.keys_loaded, m.batches_dispatched), (1000, 250, 3));
//! # }
//! ```

mod core;
mod error;
mod loader;

pub use self::core::CacheEviction;
pub use error::{LoadError, LoadErrorKind};
pub use loader::{Load, LoadMany, Loader, LoaderBuilder, LoaderMetrics, MAX_BATCH_SIZE, MAX_DELAY};
