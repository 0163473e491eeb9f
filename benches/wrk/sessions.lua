-- wrk script of `cargo bench --bench gateway` (benches/gateway.rs starts it).
--
-- Every request carries one credential picked at random from a file of
-- seeded sessions (one per line), so the load spreads over many users
-- instead of one hot key. Environment (set by the bench):
--   BENCH_CREDS   path of the credentials file (empty or unset: no header)
--   BENCH_HEADER  header that carries the credential (X-WX-Code, X-WX-Skey)
-- The URL given to wrk carries the path and query.
--
-- done() prints one machine-readable line that the bench parses:
--   BENCH_RESULT requests=.. duration_us=.. connect=.. read=.. write=..
--   status=.. timeout=.. p50_us=.. p99_us=.. p999_us=.. max_us=.. mean_us=..
-- (`status` counts responses with a status >= 400, as wrk does.)

local creds_path = os.getenv("BENCH_CREDS") or ""
local header = os.getenv("BENCH_HEADER") or ""

local creds = {}
if creds_path ~= "" and header ~= "" then
  for line in io.lines(creds_path) do
    if line ~= "" then
      creds[#creds + 1] = line
    end
  end
end
local count = #creds
local headers = {}

-- Runs in the main Lua state once per thread: number the threads so each
-- seeds its own random sequence.
local next_id = 0
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function init(args)
  local id = thread_id or 0
  math.randomseed(os.time() * 1009 + id * 7919)
  -- The first values of LuaJIT's generator after seeding are poorly mixed.
  for _ = 1, 16 do
    math.random()
  end
end

function request()
  if count > 0 then
    headers[header] = creds[math.random(count)]
  end
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
      .. "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
