//! The process underneath every role: mimalloc as the global allocator (the allocator the
//! `ketenportaal` binary runs on), counting allocations while the control port or a stage of
//! `attribute` switches counting on, and the server runtime `src/main.rs` builds.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;

/// Allocations are counted while set.
pub static COUNT_ON: AtomicBool = AtomicBool::new(false);
/// Allocations counted, and the bytes they asked for.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

/// mimalloc (the allocator the `ketenportaal` binary runs on), counting allocations while
/// `COUNT_ON` is set. When off it costs one
/// relaxed load per allocation, in the bare server and the gateway alike.
struct CountingAlloc;

fn note_alloc(size: usize) {
    if COUNT_ON.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `MiMalloc`, which upholds the
// `GlobalAlloc` contract; the counters never touch the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The server runtime `src/main.rs` builds: a worker about to park collects its mimalloc heap,
/// with force at most once a second (see `runtime` there).
pub fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_on_park)
        .build()
}

thread_local! {
    static FORCED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

fn collect_on_park() {
    let now = Instant::now();
    let force = FORCED.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    // SAFETY: `mi_collect` takes no pointers and works on the calling thread's heap (and the
    // shared arenas); mimalloc serves every allocation (through `CountingAlloc`).
    unsafe { libmimalloc_sys::mi_collect(force) };
}

/// What `src/main.rs` does for a serving gateway: the arenas' freed memory that is due is
/// purged once a second, whatever the workers do.
pub fn purge_every_second() {
    let _ = std::thread::Builder::new()
        .name("ketenportaal-purge".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                // SAFETY: as in `collect_on_park`.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
}
