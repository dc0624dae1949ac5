-- wrk script: POSTs signed callbacks from the corpus in $BENCH_CORPUS (one
-- "path?query<TAB>body" a line, written by `wecom-relay-bench corpus load`).
-- Thread k of n sends lines k, k+n, k+2n, ... so no two threads send the same callback, and
-- wraps around at the end (a wrapped callback is a duplicate: run.py reports it).
-- done() prints one line starting with BENCH and a JSON object for run.py.
--
-- No thread sends before every thread has loaded its lines. wrk runs each thread's init()
-- on its main thread, then starts that thread, then goes on to the next thread's init(), and
-- starts its clock after the last. A thread that sent at once would send while the next one
-- loads (a second or more for the 300,000 new messages), uncounted in time but counted in
-- requests, and while the loading takes a core from the server under test.

local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")

local next_id = 0

-- Made by the last thread's init(), looked for by every thread's first request().
local function ready_marker()
  return os.getenv("BENCH_CORPUS") .. ".ready"
end

function setup(thread)
  if next_id == 0 then
    os.remove(ready_marker())
  end
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  paths, bodies = {}, {}
  for line in io.lines(os.getenv("BENCH_CORPUS")) do
    local tab = line:find("\t", 1, true)
    paths[#paths + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  cursor = id + 1
  headers = { ["Content-Type"] = "text/xml" }
  if id == nthreads - 1 then
    assert(io.open(ready_marker(), "w")):close()
  end
end

function request()
  calls = (calls or 0) + 1
  -- wrk calls thread 0's request() once on its main thread, right after that thread's init(),
  -- to count the requests it returns: that call must not wait for the threads after it.
  if not started and not (id == 0 and calls == 1) then
    local marker = ready_marker()
    while true do
      local f = io.open(marker)
      if f then
        f:close()
        break
      end
      ffi.C.usleep(1000)
    end
    started = true
  end
  local path, body = paths[cursor], bodies[cursor]
  cursor = cursor + nthreads
  if cursor > #paths then
    cursor = id + 1
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  os.remove(ready_marker())
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect, e.read, e.write, e.status, e.timeout))
end
