//! Admission of new component instances: one slot per live instance, at most
//! [`crate::Limits::max_instances`] slots.
//!
//! Why: the pooling allocator fails an instantiation outright once its pools are exhausted, and
//! the HTTP trigger then had nothing better to answer than a 500 with an empty body (issue 11:
//! about 200 concurrent requests per process were enough). The engine sizes every pool for
//! `max_instances` instances of the largest component the per-component limits admit
//! (`engine::pool_config`), so as long as no more than `max_instances` instances are alive, no
//! pool can run out. A request or cron tick takes a slot before its store exists and gives it
//! back when the store is dropped; when every slot is taken it waits up to
//! [`crate::Limits::admission_wait`] and is then refused with [`Busy`] (HTTP: 503 with a JSON body
//! and `Retry-After`), instead of failing somewhere inside the guest.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The instance slots of one app.
#[derive(Debug)]
pub(crate) struct InstanceSlots {
    semaphore: Arc<Semaphore>,
    capacity: u32,
    wait: Duration,
}

/// Every slot stayed taken for the whole admission wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {capacity} instance slots stayed in use for {waited_ms} ms")]
pub(crate) struct Busy {
    pub(crate) capacity: u32,
    pub(crate) waited_ms: u128,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl InstanceSlots {
    pub(crate) fn new(capacity: u32, wait: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            wait,
        }
    }

    /// Takes a slot, waiting up to the admission wait for one to free up.
    pub(crate) async fn take(&self) -> Result<Slot, Busy> {
        let busy = Busy {
            capacity: self.capacity,
            waited_ms: self.wait.as_millis(),
        };
        // Fast path first: a free slot should not cost a timer.
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        match tokio::time::timeout(self.wait, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; a closed one would mean no more admissions anyway.
            Ok(Err(_)) | Err(_) => Err(busy),
        }
    }

    /// Slots in all.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots currently taken.
    pub(crate) fn in_use(&self) -> u32 {
        let free = u32::try_from(self.semaphore.available_permits()).unwrap_or(u32::MAX);
        self.capacity.saturating_sub(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_is_returned_when_dropped_and_a_full_house_waits_then_refuses() {
        let slots = InstanceSlots::new(2, Duration::from_millis(50));
        let first = slots.take().await.expect("free slot");
        let second = slots.take().await.expect("free slot");
        assert_eq!(slots.in_use(), 2);
        let refused = slots.take().await.expect_err("no slot left");
        assert_eq!(refused.capacity, 2);
        drop(first);
        assert_eq!(slots.in_use(), 1);
        let third = slots.take().await.expect("the freed slot");
        drop((second, third));
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_a_slot_freed_during_its_wait() {
        let slots = Arc::new(InstanceSlots::new(1, Duration::from_secs(5)));
        let held = slots.take().await.expect("free slot");
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(()));
    }
}
