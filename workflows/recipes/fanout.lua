-- fanout: one task per file matching a glob.
--
--   local fanout = require("fanout")
--   split = function(ctx) return fanout.per_file(ctx, "docs/*.md", function(path) return {
--     description = "Summarize " .. path, write = "summaries/" .. path } end) end
--
-- Each task gets the id "<prefix><path>" (prefix defaults to ""), reads the
-- file it is about, and takes the fields the `make` function returns.
local M = {}

function M.per_file(ctx, pattern, make, prefix)
  local tasks = {}
  for _, path in ipairs(ctx.glob(pattern)) do
    local t = make and make(path) or {}
    t.id = t.id or ((prefix or "") .. path)
    t.description = t.description or ("Work on " .. path)
    t.read = t.read or { path }
    tasks[#tasks + 1] = t
  end
  return tasks
end

return M
