//! Mutexes that survive a panicked holder.
//!
//! A thread that panics while it holds a mutex leaves it poisoned. Every
//! critical section in cairn leaves its data consistent before anything
//! that could panic, so the other threads go on with that data instead of
//! panicking in turn.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, ignoring poisoning: every critical section in cairn leaves
/// its data consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
