//! Topic creation that a request starts but never waits on for long: the internal topics
//! on the first FindCoordinator or InitProducerId, and Metadata's auto-creation.
//!
//! Kafka's broker (AutoTopicCreationManager) sends the CreateTopics to the controller
//! asynchronously, keeps a set of topics in flight so a burst of requests sends one, and
//! answers COORDINATOR_NOT_AVAILABLE (or LEADER_NOT_AVAILABLE) at once: the client retries.
//! Here the command is submitted by a background task, at most one per topic at a time,
//! and the request waits at most a short bound for the topic to appear; a healthy quorum
//! commits well inside it, so the first request usually gets its answer, while a lost
//! quorum never holds a request handler for the controller's 30 s submit deadline.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

/// The topics whose creation is under way, each with one background task.
#[derive(Clone, Default)]
pub struct AutoCreations {
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Removes its topic from the in-flight set when the task ends, however it ends (done,
/// failed, panicked or dropped at shutdown), so a later request can try again.
struct InFlight {
    in_flight: Arc<Mutex<HashSet<String>>>,
    topic: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut topics = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        topics.remove(&self.topic);
    }
}

impl AutoCreations {
    /// Spawns `create` for `topic` unless a creation of it is already under way; returns
    /// whether it spawned one. `create` owns its own error reporting: nobody waits on it.
    pub fn start<F>(&self, topic: &str, create: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let guard = {
            let mut topics = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !topics.insert(topic.to_string()) {
                return false;
            }
            InFlight {
                in_flight: self.in_flight.clone(),
                topic: topic.to_string(),
            }
        };
        tokio::spawn(async move {
            let _guard = guard;
            create.await;
        });
        true
    }

    /// Whether a creation of `topic` is under way.
    pub fn is_in_flight(&self, topic: &str) -> bool {
        let topics = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        topics.contains(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_creation_per_topic_at_a_time() {
        let creations = AutoCreations::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let started = creations.start("__consumer_offsets", async move {
            let _ = released.await;
        });
        assert!(started);
        assert!(creations.is_in_flight("__consumer_offsets"));
        // A second request while the first creation is pending starts nothing.
        let again = creations.start("__consumer_offsets", async {
            panic!("a second creation of the same topic must not run");
        });
        assert!(!again);
        // Another topic is independent.
        let (other_done, other_finished) = tokio::sync::oneshot::channel::<()>();
        let other = creations.start("__transaction_state", async move {
            let _ = other_done.send(());
        });
        assert!(other);
        other_finished.await.expect("the other creation ran");

        release.send(()).expect("the first creation is waiting");
        wait_not_in_flight(&creations, "__consumer_offsets").await;
        // Finished: the next request may try again.
        let (retry_done, retry_finished) = tokio::sync::oneshot::channel::<()>();
        assert!(creations.start("__consumer_offsets", async move {
            let _ = retry_done.send(());
        }));
        retry_finished.await.expect("the retry ran");
    }

    #[tokio::test]
    async fn a_panicking_creation_leaves_the_topic_free() {
        let creations = AutoCreations::default();
        assert!(creations.start("t", async { panic!("creation failed") }));
        wait_not_in_flight(&creations, "t").await;
    }

    async fn wait_not_in_flight(creations: &AutoCreations, topic: &str) {
        for _ in 0..1000 {
            if !creations.is_in_flight(topic) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("{topic} still in flight");
    }
}
