//! The process underneath every role: mimalloc as the global allocator (the allocator the
//! `ketenportaal` binary runs on), counting allocations while the control port or a stage of
//! `attribute` switches counting on, and the server runtime `src/main.rs` builds.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;

/// Allocations are counted while set.
pub static COUNT_ON: AtomicBool = AtomicBool::new(false);
/// Allocations counted, and the bytes they asked for.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

/// The heap's live bytes are tracked while set: what mimalloc holds for the blocks handed
/// out, its rounding to size classes included (`mi_usable_size`). Set once, at the start of a
/// server whose memory is measured (the memory scenario), and never cleared: a change between
/// two readings is then the heap's own, whatever was allocated before.
pub static LIVE_ON: AtomicBool = AtomicBool::new(false);
pub static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

/// mimalloc (the allocator the `ketenportaal` binary runs on), counting allocations while
/// `COUNT_ON` is set, and the live bytes while `LIVE_ON` is. When off it costs two relaxed
/// loads per allocation, in the bare server and the gateway alike.
struct CountingAlloc;

fn note_alloc(size: usize) {
    if COUNT_ON.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(size as u64, Relaxed);
    }
}

/// `sign` times the bytes mimalloc holds for the block at `ptr` (non-null), when tracked.
fn note_live(ptr: *mut u8, sign: i64) {
    if !ptr.is_null() && LIVE_ON.load(Relaxed) {
        // SAFETY: `ptr` is a live block mimalloc handed out (just now, or about to be freed).
        let held = unsafe { libmimalloc_sys::mi_usable_size(ptr.cast()) };
        LIVE_BYTES.fetch_add(sign * held as i64, Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `MiMalloc`, which upholds the
// `GlobalAlloc` contract; the counters never touch the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { MiMalloc.alloc(layout) };
        note_live(ptr, 1);
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { MiMalloc.alloc_zeroed(layout) };
        note_live(ptr, 1);
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_live(ptr, -1);
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        note_live(ptr, -1);
        // SAFETY: same contract as our caller's.
        let new = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        // A failed realloc leaves the old block in place.
        note_live(if new.is_null() { ptr } else { new }, 1);
        new
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
