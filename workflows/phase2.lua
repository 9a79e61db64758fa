-- phase2: summarize every README under docs/ in parallel, then index the summaries.
--
-- The old project's phase-2 integration test, as a workflow. Worker chats join
-- with `mcc worker next --as NAME`; headless ones with `--spawn`.

local MIN_WORDS, MAX_WORDS = 100, 200

local function slug(path)
  return (path:gsub("^docs/", ""):gsub("/README%.md$", ""):gsub("[^%w]+", "-"))
end

return workflow {
  name = "phase2",
  lease = "30m",
  phases = {
    phase "summarize" {
      split = function(ctx)
        local tasks = {}
        for _, readme in ipairs(ctx.glob("docs/*/README.md")) do
          tasks[#tasks + 1] = task {
            id = "summary-" .. slug(readme),
            type = "file-summary",
            description = "Summarize " .. readme,
            read = { readme },
            write = { "summaries/" .. slug(readme) .. ".md" },
            requirements = { ("%d-%d words"):format(MIN_WORDS, MAX_WORDS), "plain markdown, one heading" },
            criteria = { "the summary exists", ("%d-%d words"):format(MIN_WORDS, MAX_WORDS) },
          }
        end
        if #tasks == 0 then
          ctx.log("no docs/*/README.md found: nothing to summarize")
        end
        return tasks
      end,
      accept = function(t, report, ctx)
        local path = t.write[1]
        if not ctx.exists(path) then
          return false, path .. " is missing"
        end
        local words = ctx.word_count(path)
        if words < MIN_WORDS or words > MAX_WORDS then
          return false, ("%s has %d words; write %d-%d"):format(path, words, MIN_WORDS, MAX_WORDS)
        end
        return true
      end,
    },
    phase "index" {
      split = function(ctx, previous)
        local read = {}
        for _, t in ipairs(previous.tasks) do
          read[#read + 1] = t.write[1]
        end
        return {
          task {
            id = "index",
            description = "Write summaries/INDEX.md: one line per summary, linking to it",
            read = read,
            write = { "summaries/INDEX.md" },
            criteria = { "every summary is linked" },
          },
        }
      end,
      accept = function(t, report, ctx)
        local index = ctx.read("summaries/INDEX.md")
        for _, path in ipairs(t.read) do
          local name = path:match("([^/]+)$")
          if not index:find(name, 1, true) then
            return false, "the index does not link " .. name
          end
        end
        return true
      end,
    },
  },
}
