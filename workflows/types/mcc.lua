---@meta mcc
-- LuaLS annotations of the mcc workflow API (v1). Point your editor at this
-- folder (for LuaLS: "workspace.library": ["workflows/types"]) to get completion
-- and type checks in workflow files. Nothing here runs.

---@alias mcc.TaskState "waiting"|"ready"|"assigned"|"submitted"|"accepted"|"blocked"|"failed"|"cancelled"

---A task as a workflow describes it (`split`, `tasks`, `ctx.add_task`).
---Short names and the old protocol's nested names are both accepted.
---@class mcc.TaskTable
---@field id string Unique in the hub.
---@field description string What the worker should do.
---@field type? string Default "task".
---@field read? string|string[] Files to read (context.targetFiles).
---@field write? string|string[] Files it writes (context.outputFiles); reserved while held.
---@field requirements? string[]
---@field criteria? string[] Acceptance criteria (acceptance.criteria).
---@field validation? string Shell command run in the project root; exit 0 = pass.
---@field after? string|string[] Ids this task waits for (dependencies).
---@field dependencies? string[] Same as `after`.
---@field lease? string Such as "30m"; the workflow's `lease` otherwise.
---@field rules? string[] context.relevantRules.
---@field data? table Anything; kept in the task JSON as `data`.
---@field context? table Old-protocol form of read/write/requirements/rules.
---@field acceptance? table Old-protocol form of criteria/validation.
---@field race? integer Race it on this many workers at once (2 to 10); `choose` keeps one.
---@field budget? mcc.Budget What one attempt may cost, as its worker reports it.
---@field over_budget? "fail"|"ask" An attempt over `budget` fails the task (default) or asks the engineer.
---@field needs? string|string[] What a worker must say it can do (`--can`) to be given it by default.
---@field kind? string Another name for `type` (what the workflow's `max_workers` counts by).

---A task as the hub knows it (read-only, valid during the call that received it).
---@class mcc.Task
---@field id string
---@field description string
---@field type string
---@field state mcc.TaskState
---@field attempt integer Grants so far (the fencing token).
---@field holder string? Worker holding it.
---@field phase string? Phase that created it.
---@field read string[]
---@field write string[]
---@field requirements string[]
---@field rules string[]
---@field criteria string[]
---@field validation string?
---@field dependencies string[]
---@field reasons string[] Why the last result was rejected or why it failed.
---@field question string? The worker's question while blocked.
---@field answer string? The engineer's answer to the last question.
---@field lease_ms integer
---@field data any
---@field race integer? How many racers it runs, when it is a race.
---@field race_of string? The race a racer runs in (a racer's id is `TASK~raceK`).
---@field needs string[] What a worker must say it can do to be given it by default.
---@field kind string Same as `type`.

---A worker (read-only).
---@class mcc.Worker
---@field name string
---@field score integer? Last context-efficiency score (1-5).
---@field accepted string[] Ids of its accepted tasks, in order.
---@field history string[] Same as `accepted`.
---@field holding string? Id of the task it holds.
---@field can string[] What it said it can do (`--can rust,docs`).
---@field model string? The model it said it runs (`--model opus`).

---@class mcc.Validation
---@field ran boolean False when the task has no validation command.
---@field passed boolean
---@field code integer?
---@field stdout string?
---@field stderr string?
---@field timed_out boolean?

---A worker's report, given to `accept`.
---@class mcc.Report
---@field task_id string
---@field worker string?
---@field status "completed"|"failed"|"blocked"
---@field deliverables string[]
---@field score integer?
---@field notes string?
---@field usage mcc.Usage? What the attempt cost, if the worker said.
---@field validation mcc.Validation
---@field outside string[] Files this attempt changed that its task does not declare and that are nobody else's.
---@field conflicts mcc.Conflict[] Changed files that another in-flight task reserves.
---@field shared string[] Changed files that cannot be pinned on this worker: others worked in the same checkout meanwhile.

---A changed file that another in-flight task reserves.
---@class mcc.Conflict
---@field file string
---@field task string The task whose declared writes hold the file.
---@field holder string Who holds that task ("" when nobody does).

---A phase as `complete` and `previous` see it.
---@class mcc.PhaseView
---@field name string
---@field tasks mcc.Task[] In creation order.
---@field all_accepted boolean
---@field counts table<mcc.TaskState, integer>
---@field failed integer

---What `split` receives: each earlier phase by name, plus these.
---@class mcc.Previous
---@field tasks mcc.Task[] Accepted tasks of earlier phases, in order.
---@field last mcc.PhaseView? The phase just finished (nil for the first phase).
---@field [string] mcc.PhaseView

---@class mcc.RunResult
---@field code integer? Exit code; nil when killed or timed out.
---@field ok boolean Exit code 0.
---@field stdout string
---@field stderr string
---@field timed_out boolean

---@class mcc.RunOptions
---@field timeout? string Default "30s".
---@field cwd? string Relative to the project root.

---@class mcc.TaskFilter
---@field state? mcc.TaskState
---@field phase? string

---@class mcc.Json
local Json = {}
---@param value any
---@return string
function Json.encode(value) end
---@param text string
---@return any
function Json.decode(text) end

---Given to every workflow function. Call its functions with a dot: `ctx.glob(...)`.
---@class mcc.Ctx
---@field root string Project root.
---@field workflow string Workflow name.
---@field phase string Current phase name.
---@field json mcc.Json
local Ctx = {}

---Paths under the root matching a glob (`*` stays within a folder, `**` crosses folders), sorted.
---@param pattern string
---@return string[]
function Ctx.glob(pattern) end

---A file's text (relative to the root); an error if it is missing.
---@param path string
---@return string
function Ctx.read(path) end

---@param path string
---@return boolean
function Ctx.exists(path) end

---Write a file (relative to the root), creating its folders.
---@param path string
---@param text string
function Ctx.write(path, text) end

---Run a shell command in the project root (or `opts.cwd`) with a time limit.
---@param cmd string
---@param opts? mcc.RunOptions
---@return mcc.RunResult
function Ctx.run(cmd, opts) end

---A line for `mcc status` and the hub's output.
---@param msg any
function Ctx.log(msg) end

---Unix time in seconds.
---@return number
function Ctx.now() end

---Words in a file inside the project (a missing file is an error), or in `{ text = "..." }`.
---@param path string|{ text: string }
---@return integer
function Ctx.word_count(path) end

---Lines in a file inside the project (a missing file is an error), or in `{ text = "..." }`.
---@param path string|{ text: string }
---@return integer
function Ctx.line_count(path) end

---Tasks in creation order, optionally filtered.
---@param filter? mcc.TaskFilter
---@return mcc.Task[]
function Ctx.tasks(filter) end

---@param id string
---@return mcc.Task?
function Ctx.task(id) end

---@return mcc.Worker[]
function Ctx.workers() end

---Add a task to the current phase (applied right after the call).
---@param task mcc.TaskTable
---@return string[] ids
function Ctx.add_task(task) end

---@param tasks mcc.TaskTable[]
---@return string[] ids
function Ctx.add_tasks(tasks) end

---Cancel a task that is not finished.
---@param id string
function Ctx.cancel(id) end

---Put a failed or cancelled task back in the queue with fresh attempts.
---@param id string
function Ctx.retry(id) end

---@class mcc.Timer
---@field every string Such as "30s".
---@field run fun(ctx: mcc.Ctx)

---@class mcc.FilesHook
---@field glob string Such as "src/**/*.rs", relative to the root.
---@field run fun(paths: string[], ctx: mcc.Ctx)

---@class mcc.Hooks
---@field worker_joined? fun(worker: mcc.Worker, ctx: mcc.Ctx)
---@field worker_quiet? fun(worker: mcc.Worker, ctx: mcc.Ctx) No message from it for `quiet_after`.
---@field task_blocked? fun(task: mcc.Task, ctx: mcc.Ctx)
---@field task_failed? fun(task: mcc.Task, ctx: mcc.Ctx)
---@field timer? mcc.Timer
---@field files? mcc.FilesHook

---An accepted racer of a race, given to `choose`.
---@class mcc.Candidate
---@field id string The racer's task id (`TASK~raceK`).
---@field racer integer Its number in the race.
---@field worker string? The worker that did it.
---@field size integer Bytes of its copy of the write files.
---@field notes string? The worker's notes with its `done`.
---@field validation mcc.RunResult? Its validation (run in its copy folder); after a restart, the output's ends the store kept.

---The accepted racers, first accepted first; `open` racers still run.
---@class mcc.Candidates: mcc.Candidate[]
---@field open integer

---A limit on what attempts cost, as workers report it (`--cost`, `--tokens`); one part or both.
---@class mcc.Budget
---@field usd? number US dollars.
---@field tokens? integer

---What a worker reported an attempt cost.
---@class mcc.Usage
---@field usd number?
---@field tokens integer?

---@class mcc.Phase
---@field name string Unique.
---@field tasks? mcc.TaskTable[] Static tasks, or:
---@field split? fun(ctx: mcc.Ctx, previous: mcc.Previous): mcc.TaskTable[]
---@field assign? fun(worker: mcc.Worker, ready: mcc.Task[], ctx: mcc.Ctx): mcc.Task|string|nil `ready`: the tasks it has the needs of, under their caps.
---@field accept? fun(task: mcc.Task, report: mcc.Report, ctx: mcc.Ctx): boolean, (string|string[])?
---@field complete? fun(phase: mcc.PhaseView, ctx: mcc.Ctx): boolean
---@field on? mcc.Hooks
---@field choose? fun(task: mcc.Task, candidates: mcc.Candidates, ctx: mcc.Ctx): mcc.Candidate|string|nil Nil waits.
---@field budget? mcc.Budget What the phase's tasks may spend together; then none of them is granted.
---@field max_workers? integer Most of its tasks out (assigned or submitted) at once.

---@class mcc.Workflow
---@field name string
---@field lease? string Default lease of its tasks, such as "30m".
---@field max_attempts? integer Grants before a task fails for good.
---@field wait? string Default `mcc worker next` wait hint.
---@field quiet_after? string When `worker_quiet` fires; default "10m".
---@field presence_grace? string How long a worker whose chat ended may take to come back before its task goes back to the queue; default "60s".
---@field budget? mcc.Budget What the whole run may spend; then no new task is granted.
---@field max_workers? table<string, integer> Most tasks of each type out at once, such as { review = 1 }.
---@field worktree? boolean True: every worker works in a git worktree of its own under `.mcc/worktrees/`, no flag needed; default false.
---@field phases mcc.Phase[]

---Returns its table (a workflow file may also return the plain table).
---@param t mcc.Workflow
---@return mcc.Workflow
function workflow(t) end

---`phase "name" { ... }` returns `{ name = "name", ... }`.
---@param name string
---@return fun(t: mcc.Phase): mcc.Phase
function phase(name) end

---Checks a task table at once (an error names the line) and returns it.
---@param t mcc.TaskTable
---@return mcc.TaskTable
function task(t) end
