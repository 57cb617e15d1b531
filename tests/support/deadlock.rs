//! Shared by the suites that test for deadlocks (a waker dropped under a
//! primitive's lock that calls back into the primitive).

use std::time::Duration;

/// Runs `f` on its own thread; a deadlock fails the test instead of
/// hanging it. A passing `f` returns at once: the 30 s bound is only how
/// long a deadlocked one is given before the test fails.
pub(crate) fn without_deadlock(f: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("deadlocked"),
    }
}
