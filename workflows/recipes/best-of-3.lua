-- best-of-3: race a task on three workers and keep the result whose tests
-- pass most (docs/workflows.md, "Races").
--
--   local best = require("best-of-3")
--   phases = { {
--     name = "fix",
--     tasks = { best.task { id = "fix", description = "Make the tests pass", write = "calc.py",
--                           validation = 'cp "$MCC_ROOT"/test_calc.py . && python3 -m pytest -q' } },
--     choose = best.choose,
--   } }
--
-- Each racer's validation runs in its copy folder (.mcc/races/TASK/K/, holding
-- the files it wrote); MCC_ROOT names the project root. `choose` waits until
-- no racer runs, then keeps the racer with the most passing tests ("N passed",
-- as pytest and cargo test print it), then the one whose validation passed,
-- then the smallest; a tie goes to the first accepted.
local M = {}

-- `t` as a race of `n` racers (3 unless given).
function M.task(t, n)
  t.race = t.race or n or 3
  return t
end

-- How many tests passed, summed over every "N passed" in the output.
function M.passed(candidate)
  local v = candidate.validation
  if v == nil then return 0 end
  local total = 0
  for n in ((v.stdout or "") .. "\n" .. (v.stderr or "")):gmatch("(%d+) passed") do
    total = total + tonumber(n)
  end
  return total
end

local function better(a, b)
  local pa, pb = M.passed(a), M.passed(b)
  if pa ~= pb then return pa > pb end
  local oka, okb = a.validation ~= nil and a.validation.ok, b.validation ~= nil and b.validation.ok
  if oka ~= okb then return oka end
  return a.size < b.size
end

function M.choose(task, candidates, ctx)
  if candidates.open > 0 then return nil end
  local best
  for _, c in ipairs(candidates) do
    if best == nil or better(c, best) then best = c end
  end
  return best
end

return M
