//! Strings a call keeps for its whole life (its dialog's identifiers and route set, the Via of
//! its INVITE), reused from call to call. They were the generator's last heap allocations per
//! call (`benches/alloc_per_call.rs`: two per call on the calling side). Like the message
//! buffers of [`super::transport`], the pool is per thread: each worker runs its cores on one
//! thread, and the sans-IO machines need no pool handed down to them.
//!
//! Free strings are kept by size class (64, 80, 96, 112, 128, 160, ... bytes: four classes
//! per power of two), so a Via never takes a dialog's larger buffer and a buffer is at most a
//! quarter larger than asked for (an eighth on average), about what the allocator's own
//! rounding and header cost an exact-size string.

use std::cell::RefCell;

/// Smallest class: 2^6 = 64 bytes.
const MIN_LOG2: u32 = 6;
/// Largest class: 2^12 = 4 KiB; a longer string (a huge route set) is not kept.
const MAX_LOG2: u32 = 12;
/// Classes per power of two.
const STEPS: usize = 4;
const CLASSES: usize = (MAX_LOG2 - MIN_LOG2) as usize * STEPS + 1;
/// Free strings kept per class: as many as a worker frees between two takes in a burst of
/// call ends; more go back to the allocator.
const MAX_FREE: usize = 1024;

thread_local! {
    static FREE: RefCell<[Vec<String>; CLASSES]> = RefCell::new(std::array::from_fn(|_| Vec::new()));
}

/// The size of class `c`.
fn size(c: usize) -> usize {
    let e = MIN_LOG2 as usize + c / STEPS;
    (1 << e) + (c % STEPS) * (1 << (e - 2))
}

/// The smallest class whose strings hold at least `capacity` bytes (`None`: past the largest).
fn class_for(capacity: usize) -> Option<usize> {
    (0..CLASSES).find(|&c| size(c) >= capacity)
}

/// The largest class a string of this capacity can serve (`None`: below the smallest, or
/// past the largest).
fn class_of(capacity: usize) -> Option<usize> {
    if capacity > size(CLASSES - 1) {
        return None;
    }
    (0..CLASSES).rev().find(|&c| size(c) <= capacity)
}

/// An empty string with room for at least `capacity` bytes, from this thread's pool when it
/// has one of that class.
pub fn take(capacity: usize) -> String {
    let Some(c) = class_for(capacity) else {
        return String::with_capacity(capacity);
    };
    FREE.with(|f| f.borrow_mut()[c].pop())
        .unwrap_or_else(|| String::with_capacity(size(c)))
}

/// Hands a string back to this thread's pool (its text is cleared).
pub fn give(mut s: String) {
    let Some(c) = class_of(s.capacity()) else {
        return;
    };
    s.clear();
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f[c].len() < MAX_FREE {
            f[c].push(s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_given_back_serves_the_next_take_of_its_class() {
        let sizes: Vec<usize> = (0..9).map(size).collect();
        assert_eq!(sizes, [64, 80, 96, 112, 128, 160, 192, 224, 256]);
        assert_eq!(size(CLASSES - 1), 4096);
        let mut a = take(100);
        assert_eq!(a.capacity(), 112);
        a.push('x');
        let p = a.as_ptr();
        give(a);
        let b = take(97);
        assert_eq!(b.as_ptr(), p, "the same buffer");
        assert!(b.is_empty());
        // Another class does not get it.
        give(b);
        let c = take(200);
        assert!(c.capacity() >= 200);
        assert_ne!(c.as_ptr(), p);
        // Smaller than a class, or past the largest: not kept, still served.
        give(String::with_capacity(10));
        assert!(take(5000).capacity() >= 5000);
        assert_eq!(class_of(8192), None);
        assert_eq!(
            (class_for(64), class_for(65), class_of(79)),
            (Some(0), Some(1), Some(0))
        );
        assert_eq!(
            (class_for(4097), class_of(4096), class_of(63)),
            (None, Some(24), None)
        );
    }
}
