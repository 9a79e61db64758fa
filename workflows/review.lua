-- review: writers draft, reviewers review; a rejected draft goes back to its writer with the review.
--
-- Workers whose name contains "review" only review; the others only write.

local DOCS = { "intro", "usage" }

local function is_reviewer(worker)
  return worker.name:find("review", 1, true) ~= nil
end

local function write_task(doc, round, reasons)
  return task {
    id = ("write-%s-%d"):format(doc, round),
    description = ("Write drafts/%s.md"):format(doc) .. (reasons and (" again; the review said: " .. reasons) or ""),
    write = { "drafts/" .. doc .. ".md" },
    data = { doc = doc, round = round, kind = "write" },
  }
end

local function review_task(doc, round)
  return task {
    id = ("review-%s-%d"):format(doc, round),
    description = ("Review drafts/%s.md: write reviews/%s.txt starting with APPROVE or REJECT: <why>"):format(doc, doc),
    read = { "drafts/" .. doc .. ".md" },
    write = { "reviews/" .. doc .. ".txt" },
    after = { ("write-%s-%d"):format(doc, round) },
    data = { doc = doc, round = round, kind = "review" },
  }
end

return workflow {
  name = "review",
  phases = {
    phase "write-and-review" {
      split = function(ctx)
        local tasks = {}
        for _, doc in ipairs(DOCS) do
          tasks[#tasks + 1] = write_task(doc, 1)
          tasks[#tasks + 1] = review_task(doc, 1)
        end
        return tasks
      end,
      -- Route: reviewers get reviews, writers get writing.
      assign = function(worker, ready, ctx)
        local want = is_reviewer(worker) and "review" or "write"
        for _, t in ipairs(ready) do
          if t.data.kind == want then
            return t
          end
        end
        return nil
      end,
      accept = function(t, report, ctx)
        if t.data.kind ~= "review" then
          return ctx.exists(t.write[1]), t.write[1] .. " is missing"
        end
        local review = ctx.exists(t.write[1]) and ctx.read(t.write[1]) or ""
        if review:match("^APPROVE") then
          return true
        end
        if not review:match("^REJECT") then
          return false, "start the review with APPROVE or REJECT: <why>"
        end
        -- The review is done; the draft goes back to writing, then to review again.
        local doc, round = t.data.doc, t.data.round + 1
        ctx.add_tasks({ write_task(doc, round, review:gsub("^REJECT:?%s*", "")), review_task(doc, round) })
        return true
      end,
    },
  },
}
