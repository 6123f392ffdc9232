//! Shutdown signalling: one sender flips a watch; every task holds a receiver and stops
//! taking new work when it flips.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// A trigger and its first listener.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (sender, Shutdown { receiver })
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown is triggered (or the trigger is dropped).
    pub async fn triggered(&mut self) {
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}
