//! The one back-off for every retry loop (downloads, the reboot lock, the
//! drain, waiting for Ready): the pause starts at `first` and doubles up to
//! `cap`; a server's `Retry-After` is honoured (up to five minutes) and
//! never shortens the pause. Pure: the caller sleeps.

use std::time::Duration;

/// The longest `Retry-After` honoured: a server cannot park a node for hours.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            next: first,
            cap: cap.max(first),
        }
    }

    /// The next pause, given the server's `Retry-After` if it sent one.
    pub(crate) fn pause(&mut self, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.map_or(self.next, |r| r.min(MAX_RETRY_AFTER).max(self.next));
        self.next = (self.next * 2).min(self.cap);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_honours_retry_after() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(5));
        let got: Vec<_> = (0..5).map(|_| b.pause(None)).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(5), s(5)]);
        let mut b = Backoff::new(s(2), s(60));
        assert_eq!(b.pause(Some(s(30))), s(30));
        // a shorter Retry-After does not shorten the back-off
        assert_eq!(b.pause(Some(s(1))), s(4));
        // nor can a server park the node for hours
        assert_eq!(b.pause(Some(s(86_400))), MAX_RETRY_AFTER);
    }
}
