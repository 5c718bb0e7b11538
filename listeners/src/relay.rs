//! Relaying bytes between a client and an upstream connection, for every tunnelling path
//! (`CONNECT`, SOCKS5): both directions until one side closes, or until no byte has moved for the
//! idle timeout.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::observe::{Observed, ReadObserver};

/// Copies both ways until one side closes, or until no byte has moved for `idle`.
pub async fn relay<C, U>(client: C, upstream: U, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Observed::new(client, activity.clone());
    let mut upstream = Observed::new(upstream, activity.clone());
    let result = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => result.map(|_| ()),
        _ = activity.idle_for(idle) => Ok(()),
    };
    // An error here is the end of a tunnel (a reset, a broken pipe): nothing to report upward.
    let _ = result;
}

/// When bytes last moved, as milliseconds since the tunnel opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

impl ReadObserver for Activity {
    fn observe(&self, _: &[u8]) {
        self.touch();
    }
}
