-- routing: send each type of task to the model it suits, such as tests to a
-- cheap model and design to a strong one (docs/workflows.md, "Capabilities").
--
--   local routing = require("routing")
--   phases = { {
--     name = "build",
--     tasks = {
--       { id = "api", description = "Design the API", kind = "design", needs = "rust" },
--       { id = "api-tests", description = "Write the API's tests", kind = "tests" },
--     },
--     assign = routing.by_model { design = { "opus" }, tests = { "haiku", "sonnet" } },
--   } }
--
-- Workers say their model with `mcc worker next --as NAME --model opus` (and
-- what they can do with `--can rust`). The hub shows a worker only the tasks
-- it has every need of; of those, a task of a type listed goes to a worker
-- running one of the models named for it, oldest task first. While no worker
-- of those models has been seen, anyone may take it, so no task waits for a
-- model that never comes. A type not listed goes to anyone.
local M = {}

-- Whether `model` is one of `models`.
function M.runs(models, model)
  for _, m in ipairs(models) do
    if m == model then return true end
  end
  return false
end

-- Whether some worker seen in this run runs one of `models`.
function M.seen(ctx, models)
  for _, w in ipairs(ctx.workers()) do
    if M.runs(models, w.model) then return true end
  end
  return false
end

-- An `assign` that routes by task type (`kind`) to models.
function M.by_model(models)
  return function(worker, ready, ctx)
    for _, t in ipairs(ready) do
      local wanted = models[t.kind]
      if wanted == nil or M.runs(wanted, worker.model) or not M.seen(ctx, wanted) then
        return t
      end
    end
    return nil
  end
end

return M
