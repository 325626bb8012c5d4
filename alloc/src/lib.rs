//! The process's allocator: mimalloc, asked the way the system allocator
//! is asked.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`, even
//! one that needs no more than the 16 bytes every mimalloc block of 16
//! bytes or more is aligned to. That call has a fast path only for small
//! blocks (up to 1 KiB) whose next free block happens to be aligned; a
//! larger one (a boxed future, an 8 KiB read buffer, a grown `Vec`) that is
//! not a power of two is over-allocated by its alignment and marks its page
//! as holding interior pointers, which every later free on that page then
//! pays for. A plain request made ~8 such allocations; asking as below
//! saved ~2,300 instructions of it (bench/RESULTS.md). Here, as in `std`'s own allocator, an
//! alignment of at most 16 that is no larger than the size goes to plain
//! `mi_malloc`, whose blocks satisfy it: bins of 16 bytes and more are
//! multiples of 16 from 16-aligned page starts, and the 8-byte bin serves
//! only sizes of 8 or less, whose alignment is then at most 8. Only a
//! larger alignment (a cache-padded task cell) takes the aligned call.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// The alignment every `mi_malloc` block of at least that size has
/// (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]` in the proxy's main.rs).
pub struct MiMalloc;

/// Whether plain `mi_malloc` (or `mi_realloc`) meets `align` for `size`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every method hands mimalloc what the layout asks for, and the
// pointers given back to `dealloc` and `realloc` came from these methods.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc returns null when it cannot.
        unsafe {
            if plain(layout.size(), layout.align()) {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract);
        // mimalloc frees aligned and plain blocks alike.
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps `layout.align()`.
        unsafe {
            if plain(new_size, layout.align()) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB and a few larger, at every alignment up to
    /// 4 KiB: each block is aligned as asked, keeps its bytes through a
    /// realloc, and is freed.
    #[test]
    fn blocks_are_aligned_as_their_layout_asks() {
        let sizes = (1..=4096).chain([8191, 8192, 65_537, 1 << 20, (4 << 20) + 3]);
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a non-zero size; every block is freed once.
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let grown = size * 2 + 1;
                    let q = MiMalloc.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(
                        q as usize % align,
                        0,
                        "realloc {size}->{grown} align {align}"
                    );
                    assert_eq!(*q.add(size - 1), 0xA5, "bytes kept by realloc");
                    MiMalloc.dealloc(q, Layout::from_size_align(grown, align).expect("layout"));

                    let z = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    MiMalloc.dealloc(z, layout);
                }
            }
        }
    }
}
