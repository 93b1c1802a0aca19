//! The node's essential background tasks: the ones without which it silently stops routing
//! (the bus's inbound, publishing and re-subscribing tasks, the hub's inbound routing, the
//! presence reaper). Each is spawned with a name and its handle is kept; [`Tasks::first_end`]
//! resolves when any of them ends — it never should while the node serves — so that the node
//! can report not-ready with the task named, drain and exit non-zero.

use std::future::Future;
use std::sync::{Mutex, OnceLock};

use futures_util::future::select_all;
use tokio::task::{AbortHandle, JoinHandle};

/// A spawned essential task.
#[derive(Debug)]
struct Essential {
    name: &'static str,
    handle: JoinHandle<()>,
}

/// The essential tasks of one node.
#[derive(Debug, Default)]
pub struct Tasks {
    running: Vec<Essential>,
}

/// How an essential task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub task: &'static str,
    pub how: &'static str,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "essential task {} {}", self.task, self.how)
    }
}

impl Tasks {
    /// Spawns `task` on the current runtime as essential task `name`.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.running.push(Essential { name, handle });
    }

    /// Takes over `other`'s tasks.
    pub fn extend(&mut self, other: Tasks) {
        self.running.extend(other.running);
    }

    /// Stops every task.
    pub fn abort(self) {
        for task in self.running {
            task.handle.abort();
        }
    }

    /// The tasks' names and abort handles (for the supervisor's test hook).
    pub fn aborts(&self) -> Vec<(&'static str, AbortHandle)> {
        self.running
            .iter()
            .map(|t| (t.name, t.handle.abort_handle()))
            .collect()
    }

    /// Resolves when the first task ends, telling which and how; never when there is none.
    pub async fn first_end(self) -> Ended {
        if self.running.is_empty() {
            return std::future::pending().await;
        }
        let names: Vec<&'static str> = self.running.iter().map(|t| t.name).collect();
        let handles = self.running.into_iter().map(|t| t.handle);
        let (result, index, _rest) = select_all(handles).await;
        let how = match result {
            Ok(()) => "stopped",
            Err(e) if e.is_panic() => "panicked",
            Err(_) => "was cancelled",
        };
        Ended {
            task: names[index],
            how,
        }
    }
}

/// Watches a node's essential tasks and remembers the first that ended.
#[derive(Debug)]
pub struct Supervisor {
    tasks: Mutex<Option<Tasks>>,
    aborts: Vec<(&'static str, AbortHandle)>,
    ended: OnceLock<Ended>,
}

impl Supervisor {
    pub fn new(tasks: Tasks) -> Self {
        Self {
            aborts: tasks.aborts(),
            tasks: Mutex::new(Some(tasks)),
            ended: OnceLock::new(),
        }
    }

    /// The essential task that ended, if one did: the node is then not ready.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.get()
    }

    /// The names of the tasks watched.
    pub fn names(&self) -> Vec<&'static str> {
        self.aborts.iter().map(|(name, _)| *name).collect()
    }

    /// Resolves when the first essential task ends, and records it. Only the first call
    /// watches; later calls never resolve.
    pub async fn watch(&self) -> Ended {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(tasks) = tasks else {
            return std::future::pending().await;
        };
        let ended = tasks.first_end().await;
        self.ended.get_or_init(|| ended).clone()
    }

    /// Aborts essential task `name`, as a crash of it would end it; `false` when there is
    /// none. For tests of the supervision itself.
    #[doc(hidden)]
    pub fn abort(&self, name: &str) -> bool {
        let found = self.aborts.iter().filter(|(n, _)| *n == name);
        found.map(|(_, handle)| handle.abort()).count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_named() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("doomed", async move {
            let _ = rx.await;
            panic!("boom");
        });
        let aborts = tasks.aborts();
        let ended = tokio::spawn(tasks.first_end());
        drop(tx);
        let ended = ended.await.unwrap();
        assert_eq!(ended.to_string(), "essential task doomed panicked");
        for (_, abort) in aborts {
            abort.abort();
        }
    }

    #[tokio::test]
    async fn the_supervisor_records_an_aborted_task() {
        let mut tasks = Tasks::default();
        tasks.spawn("a", std::future::pending());
        tasks.spawn("b", std::future::pending());
        let supervisor = Supervisor::new(tasks);
        assert_eq!(supervisor.names(), ["a", "b"]);
        assert!(supervisor.ended().is_none());
        assert!(!supervisor.abort("nope"));
        assert!(supervisor.abort("b"));
        let ended = supervisor.watch().await;
        assert_eq!((ended.task, ended.how), ("b", "was cancelled"));
        assert_eq!(supervisor.ended(), Some(&ended));
        supervisor.abort("a");
    }
}
