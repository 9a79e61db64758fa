-- pipeline: stages that depend on each other, per feature (design -> build -> test -> document).
--
-- Features run in parallel; within one feature, each stage waits for the one before.

local FEATURES = { "login", "search", "export" }
local STAGES = { "design", "build", "test", "document" }

return workflow {
  name = "pipeline",
  phases = {
    phase "features" {
      split = function(ctx)
        local tasks = {}
        for _, feature in ipairs(FEATURES) do
          local before = nil
          for _, stage in ipairs(STAGES) do
            local id = stage .. "-" .. feature
            tasks[#tasks + 1] = task {
              id = id,
              description = ("%s the %s feature"):format(stage, feature),
              write = { ("work/%s/%s.md"):format(feature, stage) },
              read = before and { ("work/%s/%s.md"):format(feature, before) } or {},
              after = before and { before .. "-" .. feature } or {},
            }
            before = stage
          end
        end
        return tasks
      end,
    },
  },
}
