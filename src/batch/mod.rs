//! DataLoader-style batching: turn N concurrent lookups by key into
//! ⌈N / max_batch_size⌉ calls of one batch function.
//!
//! The cure for the "N+1 queries" problem: resolvers call
//! [`Loader::load`] one key at a time, and the loader collects the keys
//! requested in the same scheduler turn (or within a
//! [`delay`](LoaderBuilder::delay)) into one call of your batch function.
//!
//! - **Batching**: a batch is sent once its window closes or as soon as
//!   [`max_batch_size`](LoaderBuilder::max_batch_size) keys wait.
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
