//! [`Cancellation`]: a flag one side raises and long work checks, so that work nobody waits for anymore stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared "stop now" flag: clones share it; the default is a flag no one will raise.
///
/// Generation checks it before each token, so a server whose client hung up frees its worker after at most one
/// more forward pass.
#[derive(Clone, Debug, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn new() -> Cancellation {
        Cancellation::default()
    }

    /// Asks every holder of a clone to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Options that hold a flag compare equal whatever its state: a flag is not part of what was asked.
impl PartialEq for Cancellation {
    fn eq(&self, _: &Cancellation) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let flag = Cancellation::new();
        let seen = flag.clone();
        assert!(!seen.is_cancelled());
        flag.cancel();
        assert!(seen.is_cancelled());
        assert!(!Cancellation::default().is_cancelled());
    }
}
