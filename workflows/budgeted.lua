-- budgeted: a run that stops handing out work at 20 USD, phases with budgets of their own, and a costly task that asks before it goes over.
--
-- Workers say what each attempt cost: `mcc worker done TASK --cost 0.42 --tokens 51000`,
-- or run headless and let mcc read it: `mcc worker run --as bot -- sh -c 'claude -p "$(cat
-- "$MCC_TASK_FILE")" --output-format json'`. Once the run's or a phase's budget is spent no
-- new task is handed out, and waiting workers are told why. `mcc budget` shows what was
-- spent; `mcc budget set --usd 30` (or `--phase docs --usd 3`, `--task T --usd 5`) raises a
-- budget while the run goes on.

local MODULES = { "parser", "printer", "cli" }

local function build_task(name)
  return task {
    id = "build-" .. name,
    description = ("Write src/%s.rs and its tests; keep the change small"):format(name),
    write = { ("src/%s.rs"):format(name) },
    validation = "cargo test --quiet",
    -- One attempt may cost 3 USD; past it the task fails for good (the default).
    budget = { usd = 3 },
  }
end

return {
  name = "budgeted",
  budget = { usd = 20 },
  phases = {
    {
      name = "build",
      budget = { usd = 12, tokens = 3000000 },
      split = function(ctx)
        local tasks = {}
        for _, name in ipairs(MODULES) do
          tasks[#tasks + 1] = build_task(name)
        end
        -- The one risky task: past its budget it goes to the engineer instead of failing.
        tasks[#tasks + 1] = task {
          id = "migrate",
          description = "Migrate the config format; say in your notes what you could not convert",
          write = { "src/config.rs" },
          budget = { usd = 5 },
          over_budget = "ask",
        }
        return tasks
      end,
    },
    {
      name = "docs",
      budget = { usd = 2 },
      split = function(ctx, previous)
        local tasks = {}
        -- Only what was accepted gets documented: a task that failed over its budget does not.
        for _, t in ipairs(previous.tasks) do
          tasks[#tasks + 1] = task {
            id = "doc-" .. t.id,
            description = "Document what " .. t.id .. " wrote, in docs/" .. t.id .. ".md",
            write = { "docs/" .. t.id .. ".md" },
            after = { t.id },
            budget = { usd = 0.5, tokens = 200000 },
          }
        end
        return tasks
      end,
    },
  },
}
