-- demo: three headless workers write notes in parallel, one is sent back, then an index is built.
--
-- Run it from the project root:
--   mcc run workflows/demo.lua --spawn 3 -- sh workflows/demo/worker.sh
-- Outputs land in demo-out/.

local topics = { "leases", "attempts", "reservations", "reports", "phases", "recipes" }
local MIN_WORDS = 30

return workflow {
  name = "demo",
  lease = "1m",
  phases = {
    phase "notes" {
      -- Splitting: one task per topic, each writing its own file.
      split = function(ctx)
        local tasks = {}
        for i, topic in ipairs(topics) do
          tasks[#tasks + 1] = task {
            id = ("note-%d"):format(i),
            description = "Write a short note about " .. topic,
            write = { "demo-out/notes/" .. topic .. ".md" },
            requirements = { ("at least %d words"):format(MIN_WORDS) },
            criteria = { "the note exists", ("it has %d words or more"):format(MIN_WORDS) },
          }
        end
        return tasks
      end,
      -- Judging: too short comes back to the same worker with the reason.
      accept = function(t, report, ctx)
        local path = t.write[1]
        if not ctx.exists(path) then
          return false, path .. " was not written"
        end
        local words = ctx.word_count(path)
        if words < MIN_WORDS then
          return false, ("%s has only %d words; write at least %d"):format(path, words, MIN_WORDS)
        end
        return true
      end,
    },
    phase "index" {
      -- A second phase, split from what the first produced.
      split = function(ctx, previous)
        local read = {}
        for _, t in ipairs(previous.tasks) do
          read[#read + 1] = t.write[1]
        end
        return {
          task {
            id = "index",
            description = "Write an index of the notes",
            read = read,
            write = { "demo-out/INDEX.md" },
            validation = "test -s demo-out/INDEX.md",
          },
        }
      end,
    },
  },
}
