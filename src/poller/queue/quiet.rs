//! One long poll per replica while the queue is empty. Each receive loop of an idle mapping
//! would otherwise hold a 20 s long poll of its own: `loops` signed requests per 20 s (10 by
//! default) that all come back empty, and as many open connections. Once a long poll with
//! nothing gathered comes back empty the queue counts as quiet: from then on one loop at a time
//! long-polls, and the others wait until a receive brings messages, when they all poll again.
//! A message on a quiet queue is therefore received as fast as before (the one long poll
//! answers at once); only the other loops join one receive later.
use tokio::sync::{Semaphore, SemaphorePermit, watch};

pub struct QuietQueue {
    /// True from an empty long poll until a receive brings messages.
    quiet: watch::Sender<bool>,
    /// The one long poll allowed while quiet.
    listener: Semaphore,
}

impl Default for QuietQueue {
    fn default() -> Self {
        Self {
            quiet: watch::Sender::new(false),
            listener: Semaphore::new(1),
        }
    }
}

impl QuietQueue {
    /// Waits until this loop may long-poll with nothing gathered: at once while the queue has
    /// messages; while it is quiet, when no other loop is listening (the permit is its turn,
    /// held for the poll) or as soon as the queue stops being quiet.
    pub async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        let mut quiet = self.quiet.subscribe();
        loop {
            if !*quiet.borrow_and_update() {
                return None;
            }
            tokio::select! {
                permit = self.listener.acquire() => {
                    return Some(permit.expect("the listener semaphore is never closed"));
                }
                _ = quiet.changed() => {}
            }
        }
    }

    /// What a receive brought: messages end the quiet (waking every waiting loop); an empty
    /// long poll with nothing gathered (`idle`) starts it. An empty receive within a batch's
    /// window says nothing: it waited less than a long poll.
    pub fn received(&self, messages: usize, idle: bool) {
        if messages > 0 {
            self.quiet
                .send_if_modified(|quiet| std::mem::replace(quiet, false));
        } else if idle {
            self.quiet
                .send_if_modified(|quiet| !std::mem::replace(quiet, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quiet_queue_has_one_listener_and_messages_wake_the_rest() {
        let queue = QuietQueue::default();
        assert!(
            queue.turn().await.is_none(),
            "not quiet before an empty poll"
        );
        queue.received(0, false);
        assert!(
            queue.turn().await.is_none(),
            "an empty window poll says nothing"
        );

        queue.received(0, true);
        let listening = queue.turn().await.expect("the first loop listens");
        let waiting = queue.turn();
        tokio::pin!(waiting);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "a second loop waits"
        );
        queue.received(3, false);
        assert!(
            waiting.await.is_none(),
            "messages let every loop poll without a turn"
        );
        drop(listening);

        queue.received(0, true);
        let listening = queue.turn().await.expect("quiet again: one listener");
        drop(listening);
        assert!(
            queue.turn().await.is_some(),
            "the turn passes on while still quiet"
        );
    }
}
