//! Data parallelism for the pure stages: a map over a slice on scoped threads, one chunk
//! per core, results in input order. Parsing, rendering and printing 1,000 workspaces is
//! work for every core of the machine; the output stays byte for byte the same.

use std::num::NonZeroUsize;

/// Below this many items per thread, threads cost more than they save.
const MIN_CHUNK: usize = 64;

/// `items.iter().map(f).collect()`, on up to one thread per core.
pub(crate) fn map<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cores.min(items.len() / MIN_CHUNK).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(chunk);
        // The first chunk runs on the calling thread.
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a panic of the caller, as with a plain map.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_as_a_plain_map_in_order() {
        for n in [0, 1, 63, 64, 128, 1000, 1001] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
