//! How long work tells its caller how far it got, without knowing of a terminal: a callback.
//! The command line draws it as a spinner or a bar on stderr; a program embedding blobgc logs
//! it, or passes [`Progress::silent`].
//!
//! ```
//! use blobgc::progress::{Event, Progress};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let done = Arc::new(AtomicU64::new(0));
//! let seen = Arc::clone(&done);
//! let progress = Progress::new(move |e| {
//!     if let Event::Advance(n) = e {
//!         seen.fetch_add(n, Ordering::Relaxed);
//!     }
//! });
//! progress.step("probing the listing", "blobs");
//! progress.advance(3);
//! assert_eq!(done.load(Ordering::Relaxed), 3);
//! ```

use std::fmt;
use std::sync::Arc;

/// What a phase tells its caller.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A new step begins ("listing and probing blobs"), counting its work in `unit` ("blobs";
    /// empty when it counts nothing).
    Step { what: &'a str, unit: &'a str },
    /// The step has this many units of work (deletion batches).
    Total(u64),
    /// This many more units are done (rows read, listed blobs probed, batches swept).
    Advance(u64),
}

/// A caller's progress callback; cheap to clone into the tasks of a phase.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(Event<'_>) + Send + Sync>);

impl Progress {
    pub fn new(callback: impl Fn(Event<'_>) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(callback))
    }

    /// Progress nobody watches.
    pub fn silent() -> Self {
        Progress::new(|_| {})
    }

    pub fn step(&self, what: &str, unit: &str) {
        (self.0)(Event::Step { what, unit })
    }

    pub fn total(&self, units: u64) {
        (self.0)(Event::Total(units))
    }

    pub fn advance(&self, units: u64) {
        (self.0)(Event::Advance(units))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::silent()
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}
