//! The workflow runtime driven directly, with a real scheduler and files.

use std::time::Instant;

use super::*;
use crate::scheduler::Settings;

struct Fixture {
    dir: tempfile::TempDir,
    scheduler: Scheduler,
}

impl Fixture {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), scheduler: Scheduler::new(Settings::default()) }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&mut self, source: &str) -> Result<Workflow, String> {
        let path = self.write("wf.lua", source);
        let mut w = Workflow::load(&path, self.dir.path())?;
        w.step(&mut self.scheduler).map_err(|e| e.0)?;
        Ok(w)
    }

    fn ids(&self) -> Vec<String> {
        self.scheduler.tasks_in_order().iter().map(|t| t.spec.id.clone()).collect()
    }

    fn assign(&mut self, w: &mut Workflow, worker: &str) -> Result<Option<TaskId>, PolicyError> {
        self.scheduler.see_worker(worker, Instant::now());
        let me = self.scheduler.worker(worker).unwrap().clone();
        let ready = self.scheduler.candidates(64);
        w.assign(&me, &ready, &self.scheduler)
    }
}

#[test]
fn assign_may_return_a_task_view_an_id_or_nothing() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "pick", phases = { { name = "p",
  tasks = { { id = "one", description = "1" }, { id = "two", description = "2" } },
  assign = function(worker, ready, ctx)
    if worker.name == "last" then return ready[#ready] end
    if worker.name == "idle" then return nil end
    return ready[1].id
  end } } }"#,
        )
        .unwrap();
    assert_eq!(f.assign(&mut w, "last").unwrap().as_deref(), Some("two"));
    assert_eq!(f.assign(&mut w, "idle").unwrap(), None);
    assert_eq!(f.assign(&mut w, "first").unwrap().as_deref(), Some("one"));
}

#[test]
fn a_blocked_task_fires_its_hook_which_adds_a_task() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "hooks", phases = { { name = "p",
  tasks = { { id = "t", description = "t" } },
  on = { task_blocked = function(task, ctx)
    ctx.add_task { id = "unblock-" .. task.id, description = "answer: " .. task.question }
  end } } } }"#,
        )
        .unwrap();
    let now = Instant::now();
    assert!(f.scheduler.grant("t", "w1", now));
    f.scheduler.block("w1", "t", None, "which format?", now).unwrap();
    w.step(&mut f.scheduler).unwrap();
    assert_eq!(f.ids(), ["t", "unblock-t"]);
    assert_eq!(f.scheduler.task("unblock-t").unwrap().phase.as_deref(), Some("p"));
}
