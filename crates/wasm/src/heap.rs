//! A small size-class allocator for the wasm build: ~0.5 KB of code instead
//! of the ~7 KB of `dlmalloc` that std brings to `wasm32-unknown-unknown`
//! (the bundle has a 60 KB gzipped budget).
//!
//! Every request is rounded up to a power of two (at least 16 bytes, at
//! least its alignment) and served from that size's free list, or carved
//! from fresh memory past the initial memory (grown a page at a time,
//! blocks aligned to their size). Freed blocks go back to their size's list
//! and are reused by later requests of that size; they are never split or
//! merged, and wasm memory never shrinks. That suits the core: single
//! threaded, a small working set (a few KB of strings and outputs) that
//! repeats the same sizes for hours, so memory settles at the peak per size
//! class. The rounding wastes at most half of each block.

use core::alloc::Layout;

/// Size classes: blocks of `16 << k` bytes, `k < CLASSES` (up to 1 GiB).
const CLASSES: usize = 27;
const MIN_BLOCK: usize = 16;
const PAGE: usize = 65_536;

/// The allocator's state, over a linear memory that only grows.
#[derive(Debug)]
pub struct Heap {
    /// Head of each class's free list (0: empty); a free block holds the
    /// address of the next one in its first word.
    free: [usize; CLASSES],
    /// Next unused byte of fresh memory (0: not started).
    next: usize,
    /// End of the memory.
    end: usize,
}

/// Grows the memory by `pages` pages; returns the old end in bytes.
pub type Grow = fn(pages: usize) -> Option<usize>;

/// The class of `layout`, if any.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_BLOCK);
    let k =
        (usize::BITS - (size - 1).leading_zeros()) as usize - MIN_BLOCK.trailing_zeros() as usize;
    (k < CLASSES).then_some(k)
}

impl Heap {
    /// An empty heap; fresh memory starts at `start` (0: at the memory's end
    /// on the first allocation), which ends at `end`.
    pub const fn new(start: usize, end: usize) -> Heap {
        Heap {
            free: [0; CLASSES],
            next: start,
            end,
        }
    }

    /// A block for `layout`, or null when the memory cannot grow.
    ///
    /// # Safety
    /// `grow` must grow the memory this heap manages; no other code may use
    /// memory past `next`.
    pub unsafe fn alloc(&mut self, layout: Layout, grow: Grow) -> *mut u8 {
        let Some(k) = class(layout) else {
            return core::ptr::null_mut();
        };
        // `get_mut`, not indexing: no formatting panic path in the wasm.
        let Some(head) = self.free.get_mut(k) else {
            return core::ptr::null_mut();
        };
        if *head != 0 {
            let block = *head;
            // SAFETY: `block` is a free block of this class (see `dealloc`).
            *head = unsafe { *(block as *const usize) };
            return block as *mut u8;
        }
        let size = MIN_BLOCK << k;
        if self.next == 0 {
            let Some(end) = grow(0) else {
                return core::ptr::null_mut();
            };
            (self.next, self.end) = (end, end);
        }
        let at = self.next.next_multiple_of(size);
        let Some(stop) = at.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if stop > self.end {
            let pages = (stop - self.end).div_ceil(PAGE);
            match grow(pages) {
                Some(old) if old == self.end => self.end += pages * PAGE,
                _ => return core::ptr::null_mut(),
            }
        }
        self.next = stop;
        at as *mut u8
    }

    /// Returns a block to its class's free list.
    ///
    /// # Safety
    /// `ptr` came from [`Heap::alloc`] with the same `layout` and is not used
    /// any more.
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        if let Some(head) = class(layout).and_then(|k| self.free.get_mut(k)) {
            // SAFETY: the block is ours again and holds at least a word.
            unsafe { *(ptr as *mut usize) = *head };
            *head = ptr as usize;
        }
    }

    /// Resizes a block: the same one while the class does not change.
    ///
    /// # Safety
    /// As [`Heap::alloc`] and [`Heap::dealloc`]; `new_size` is not zero.
    pub unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        grow: Grow,
    ) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        if class(new) == class(layout) {
            return ptr;
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            let moved = self.alloc(new, grow);
            if !moved.is_null() {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod global {
    use super::{Grow, Heap, PAGE};
    use core::alloc::{GlobalAlloc, Layout};
    use core::arch::wasm32::memory_grow;
    use core::cell::UnsafeCell;

    /// `memory.grow`: the old size in bytes, or None.
    fn grow(pages: usize) -> Option<usize> {
        let old = memory_grow(0, pages);
        (old != usize::MAX).then_some(old * PAGE)
    }
    const GROW: Grow = grow;

    struct Global(UnsafeCell<Heap>);

    // SAFETY: wasm32 without threads: one caller at a time.
    unsafe impl Sync for Global {}

    // SAFETY: `Heap` hands out disjoint blocks of at least the requested
    // size and alignment, from memory nothing else uses (past the memory's
    // initial end, which lies past the stack, data and `__heap_base`).
    unsafe impl GlobalAlloc for Global {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: single-threaded, not re-entrant (no allocation inside).
            unsafe { (*self.0.get()).alloc(layout, GROW) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above; `ptr` came from `alloc` with `layout`.
            unsafe { (*self.0.get()).dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as above.
            unsafe { (*self.0.get()).realloc(ptr, layout, new_size, GROW) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Global = Global(UnsafeCell::new(Heap::new(0, 0)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A fake linear memory: 64 MiB of address space, grown by page.
    static MEMORY: Mutex<(usize, usize)> = Mutex::new((0, 0)); // (base, pages)
    const MAX_PAGES: usize = 1024;

    fn grow(pages: usize) -> Option<usize> {
        let mut m = MEMORY.lock().unwrap();
        if m.0 == 0 {
            let buf = vec![0u8; MAX_PAGES * PAGE + PAGE].leak();
            m.0 = (buf.as_mut_ptr() as usize).next_multiple_of(PAGE);
            m.1 = 1; // the "initial memory"
        }
        if m.1 + pages > MAX_PAGES {
            return None;
        }
        let old = m.0 + m.1 * PAGE;
        m.1 += pages;
        Some(old)
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(32, 1)), Some(1));
        assert_eq!(class(layout(1, 64)), Some(2));
        assert_eq!(class(layout(1 << 30, 1)), Some(26));
        assert_eq!(class(layout((1 << 30) + 1, 1)), None);
    }

    #[test]
    fn blocks_are_aligned_disjoint_reused_and_kept_by_realloc() {
        let mut heap = Heap::new(0, 0);
        let mut live: Vec<(usize, Layout)> = Vec::new();
        let mut seed = 1u32;
        let mut rnd = |n: u32| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 8) % n
        };
        for step in 0..20_000 {
            if live.len() > 200 || (rnd(3) == 0 && !live.is_empty()) {
                let (p, l) = live.swap_remove(rnd(live.len() as u32) as usize);
                // Our bytes are intact.
                let tag = (p as u8).wrapping_add(l.size() as u8);
                let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, l.size()) };
                assert!(bytes.iter().all(|&b| b == tag), "step {step}");
                unsafe { heap.dealloc(p as *mut u8, l) };
            } else {
                let big = rnd(10) == 0;
                let size = 1 + rnd(if big { 70_000 } else { 300 }) as usize;
                let l = layout(size, 1 << rnd(5));
                let p = unsafe { heap.alloc(l, grow) } as usize;
                assert!(p != 0 && p % l.align() == 0);
                for &(q, m) in &live {
                    assert!(p + size <= q || q + m.size() <= p, "overlap");
                }
                let tag = (p as u8).wrapping_add(size as u8);
                unsafe { std::ptr::write_bytes(p as *mut u8, tag, size) };
                live.push((p, l));
            }
        }
        // A freed block is reused by the next request of its class.
        let l = layout(100, 8);
        let a = unsafe { heap.alloc(l, grow) };
        unsafe { heap.dealloc(a, l) };
        assert_eq!(unsafe { heap.alloc(layout(120, 4), grow) }, a);
        // Realloc keeps the block within a class and moves (copying) across.
        unsafe { std::ptr::write_bytes(a, 7, 128) };
        let same = unsafe { heap.realloc(a, layout(120, 4), 128, grow) };
        assert_eq!(same, a);
        let moved = unsafe { heap.realloc(a, layout(128, 4), 1000, grow) };
        assert_ne!(moved, a);
        assert!(
            unsafe { std::slice::from_raw_parts(moved, 128) }
                .iter()
                .all(|&b| b == 7)
        );
        // Out of memory is a null pointer, not a panic.
        assert!(unsafe { heap.alloc(layout(1 << 29, 1), grow) }.is_null());
    }
}
