-- fix-tests: one task per failing test script; a fix is accepted only when its test passes.
--
-- TESTS lists test commands by name; the `validation` command decides, and its
-- output goes back to the worker when it fails.

local TESTS_GLOB = "tests/*.sh"

return workflow {
  name = "fix-tests",
  max_attempts = 5,
  phases = {
    phase "fix" {
      split = function(ctx)
        local tasks = {}
        for _, script in ipairs(ctx.glob(TESTS_GLOB)) do
          local name = script:match("([^/]+)%.sh$")
          local run = ctx.run("sh " .. script, { timeout = "60s" })
          if not run.ok then
            tasks[#tasks + 1] = task {
              id = "fix-" .. name,
              description = ("Make `sh %s` pass"):format(script),
              read = { script },
              requirements = { "change the code, not the test", "first failure:\n" .. (run.stderr ~= "" and run.stderr or run.stdout) },
              criteria = { ("`sh %s` exits 0"):format(script) },
              validation = "sh " .. script,
            }
          end
        end
        if #tasks == 0 then
          ctx.log("every test passes: nothing to fix")
        end
        return tasks
      end,
    },
  },
}
