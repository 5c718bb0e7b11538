//! An approver inside leash's own process (SPEC §14): what the terminal prompt of `leash exec
//! --ask` and the decider socket answer through. It is present (asks are held, not refused at
//! once) while it lives, sees the pending items as `GET /pending` does, and answers through the
//! same `Control::answer` as the admin API, so `always` is kept the same way whoever answers.

use std::sync::Arc;

use admin::{Control, ControlError};
use listeners::{PendingItem, PollGuard};
use policy::{ApprovedBy, AskAnswer, AskScope};
use tokio::sync::watch;

use crate::hub::Hub;

/// One approver present in this process; dropping it leaves (after the grace every poller gets).
#[derive(Debug)]
pub struct Approver {
    hub: Arc<Hub>,
    changes: watch::Receiver<u64>,
    _present: PollGuard,
}

impl Approver {
    pub(crate) fn new(hub: Arc<Hub>) -> Approver {
        let pending = hub.pending.clone();
        Approver {
            changes: pending.subscribe(),
            _present: pending.poll(),
            hub,
        }
    }

    /// The items waiting now, oldest first.
    pub fn pending(&self) -> Vec<PendingItem> {
        self.hub.pending.list()
    }

    /// Waits until the list changes (an item opens, is answered, withdrawn or times out, or its
    /// `waiting` count moves); then `pending` says how it is now.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            // The list's sender lives as long as the hub this approver holds: never here.
            std::future::pending::<()>().await;
        }
    }

    /// Answers item `id`, as `by`; `ControlError::Answer` when it is gone or the scope cannot
    /// apply to it.
    pub fn answer(
        &self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
        by: ApprovedBy,
    ) -> Result<PendingItem, ControlError> {
        self.hub.answer(id, answer, scope, by)
    }
}
