//! Shutdown signalling: the broker owns one watch sender and flips it once; every task
//! holds a receiver and stops taking new work when it flips.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn from_receiver(receiver: watch::Receiver<bool>) -> Shutdown {
        Shutdown { receiver }
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown is triggered (or the trigger is dropped).
    pub async fn triggered(&mut self) {
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}
