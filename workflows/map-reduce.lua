-- map-reduce: one task per file matching a glob (fan-out), then one task that joins the results (fan-in).
--
-- Edit INPUT and the task wording; `require("fanout")` is a built-in recipe module.

local fanout = require("fanout")
local INPUT = "input/*.txt"

return workflow {
  name = "map-reduce",
  phases = {
    phase "map" {
      split = function(ctx)
        local tasks = fanout.per_file(ctx, INPUT, function(path)
          local name = path:match("([^/]+)%.txt$")
          return {
            id = "map-" .. name,
            description = "Process " .. path,
            write = { "output/" .. name .. ".out" },
          }
        end)
        local ids = {}
        for _, t in ipairs(tasks) do
          ids[#ids + 1] = t.id
        end
        -- Fan-in: waits for every map task.
        tasks[#tasks + 1] = task {
          id = "reduce",
          description = "Combine output/*.out into output/ALL",
          after = ids,
          write = { "output/ALL" },
          validation = "test -s output/ALL",
        }
        return tasks
      end,
    },
  },
}
