//! One stop path for every task. Ctrl-C, a `--duration` deadline and fatal errors all end a run
//! through [`Shutdown`], so each task gets the chance to flush its capture, record and report.

use tokio::sync::watch;

/// Why the run is ending. Later reasons never overwrite an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Running,
    Duration,
    Interrupted,
    Error,
    Finished,
}

/// The sending half, held by whoever may end the run.
#[derive(Clone)]
pub struct Trigger {
    tx: watch::Sender<StopReason>,
}

/// The receiving half, one per task.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<StopReason>,
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(StopReason::Running);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn stop(&self, why: StopReason) {
        self.tx.send_if_modified(|r| {
            if *r == StopReason::Running {
                *r = why;
                true
            } else {
                false
            }
        });
    }
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
    pub fn reason(&self) -> StopReason {
        *self.tx.borrow()
    }
    /// A guard that ends the run ([`StopReason::Error`]) when dropped, unless it has ended
    /// already. Hold it across a function that starts tasks and may then return early with an
    /// error: the tasks must not outlive it (a tokio runtime dropped on the way out waits for
    /// its blocking tasks, so the process would hang, deaf to signals whose watcher is gone).
    pub fn stop_on_drop(&self) -> StopOnDrop {
        StopOnDrop(self.clone())
    }
}

/// See [`Trigger::stop_on_drop`].
#[must_use = "the run is stopped when this is dropped"]
pub struct StopOnDrop(Trigger);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop(StopReason::Error);
    }
}

impl Shutdown {
    pub fn is_stopping(&self) -> bool {
        *self.rx.borrow() != StopReason::Running
    }
    pub fn reason(&self) -> StopReason {
        *self.rx.borrow()
    }
    /// Resolves once a stop has been asked for (at once if it already was).
    pub async fn stopped(&mut self) -> StopReason {
        let _ = self.rx.wait_for(|r| *r != StopReason::Running).await;
        *self.rx.borrow()
    }
}

/// Turns Ctrl-C (SIGINT) and SIGTERM into `StopReason::Interrupted`. A second Ctrl-C exits at once,
/// for the user whose target hangs the drain.
pub fn watch_signals(trigger: Trigger) {
    tokio::spawn(handle_signals(
        trigger,
        Signals {
            stopping: "stopping: finishing calls, de-registering and writing reports (Ctrl-C again to quit now)",
            quitting: "second interrupt: exiting without cleanup",
            last_rites: Box::new(|| {}),
        },
    ));
}

/// What a program says on the first and second Ctrl-C/SIGTERM, and what it must still do
/// before exiting on the second (e.g. stop child processes).
pub struct Signals {
    pub stopping: &'static str,
    pub quitting: &'static str,
    pub last_rites: Box<dyn FnOnce() + Send>,
}

/// [`watch_signals`] for programs without a tokio runtime of their own: the watcher runs on a
/// thread with a small runtime.
pub fn watch_signals_on_thread(trigger: Trigger, signals: Signals) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(handle_signals(trigger, signals));
    });
}

/// The first signal stops the run cleanly; the second exits at once (130).
async fn handle_signals(trigger: Trigger, signals: Signals) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    tracing::info!("{}", signals.stopping);
    trigger.stop(StopReason::Interrupted);
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    tracing::warn!("{}", signals.quitting);
    (signals.last_rites)();
    std::process::exit(130);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_all_tasks_see_it() {
        let (t, mut s) = channel();
        let mut s2 = t.subscribe();
        assert!(!s.is_stopping());
        t.stop(StopReason::Duration);
        t.stop(StopReason::Interrupted);
        assert_eq!(s.stopped().await, StopReason::Duration);
        assert_eq!(s2.stopped().await, StopReason::Duration);
    }
}
