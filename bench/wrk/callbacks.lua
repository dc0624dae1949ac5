-- wrk script: POSTs signed callbacks from the corpus in $BENCH_CORPUS (one
-- "path?query<TAB>body" a line, written by `wecom-relay-bench corpus load`).
-- Thread k of n sends lines k, k+n, k+2n, ... so no two threads send the same callback, and
-- wraps around at the end (a wrapped callback is a duplicate: run.py reports it).
-- done() prints one line starting with BENCH and a JSON object for run.py.

local next_id = 0

function setup(thread)
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
end

function request()
  local path, body = paths[cursor], bodies[cursor]
  cursor = cursor + nthreads
  if cursor > #paths then
    cursor = id + 1
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect, e.read, e.write, e.status, e.timeout))
end
