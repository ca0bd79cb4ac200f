-- wrk script for bench/run.py: a bounded number of requests, optionally each with its own body.
--
-- wrk -t1 -c C -d LIMIT -s bench/wrk.lua URL -- METHOD PATH COUNT [BODIES_FILE] [AUTHORIZATION] [COOKIE] [SECONDS]
--
-- Sends at most COUNT requests METHOD PATH (the n-th with line n of BODIES_FILE as its body, so no
-- body is ever sent twice), for at most SECONDS (whole seconds of os.time, from the first request;
-- 0 or none: no limit) after which it sends no new one, stops as soon as all sent are answered
-- (so every request sent is counted, none is cut off), and prints one line
-- "BENCH_JSON {...}" with the counts, the time from the first request to the last answer, and the
-- latency percentiles. A connection that asks for a
-- request after the COUNT-th gets "GET /bench/noop" (204, not counted) until the thread stops: at
-- most C - 1 of those, at the very end.
-- Run it with one thread (-t1): the first request() call of a thread is special (see request()).

sent, answered, failed, elapsed_ns = 0, 0, 0, 0
local started_ns = 0
local threads = {}
local method, path, quota, bodies, headers, filler = nil, nil, 0, {}, {}, nil
local seconds, deadline, stopping = 0, 0, false

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   method, path, quota = args[1], args[2], tonumber(args[3])
   if args[4] and args[4] ~= "" then
      for line in io.lines(args[4]) do bodies[#bodies + 1] = line end
      quota = math.min(quota, #bodies)
      headers["Content-Type"] = "application/json"
   end
   if args[5] and args[5] ~= "" then headers["Authorization"] = args[5] end
   if args[6] and args[6] ~= "" then headers["Cookie"] = args[6] end
   if args[7] and args[7] ~= "" then seconds = tonumber(args[7]) end
   filler = wrk.format("GET", "/bench/noop", {})
end

local function finish()
   elapsed_ns = now_ns() - started_ns
   -- bench/run.py reads this line and interrupts wrk, which otherwise sleeps out its -d.
   io.write("BENCH_DONE\n")
   io.flush()
   wrk.thread:stop()
end

local primed = false

function request()
   -- wrk asks each thread for one request before it connects and never sends that one
   -- (seen with wrk 4.1.0): answer it with the filler, so that no body is lost to it.
   if not primed then
      primed = true
      return filler
   end
   if sent > 0 and seconds > 0 and not stopping and os.time() >= deadline then
      stopping = true
      quota = sent  -- time is up: no new request; the run ends when those sent are answered
   end
   if sent >= quota then return filler end
   if sent == 0 then
      started_ns = now_ns()
      deadline = os.time() + seconds
   end
   sent = sent + 1
   return wrk.format(method, path, headers, bodies[sent])
end

function response(status, headers, body)
   if status ~= 204 then
      answered = answered + 1
      if status >= 400 then failed = failed + 1 end
   end
   if answered == quota and elapsed_ns == 0 then finish() end
end

-- Nanoseconds of wall clock (wrk's Lua has no clock of its own finer than a second).
function now_ns()
   local date = io.popen("date +%s%N")
   local value = tonumber(date:read("*l"))
   date:close()
   return value
end

function done(summary, latency, requests)
   local s, a, f, ns = 0, 0, 0, 0
   for _, thread in ipairs(threads) do
      s = s + thread:get("sent")
      a = a + thread:get("answered")
      f = f + thread:get("failed")
      ns = math.max(ns, thread:get("elapsed_ns"))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"sent": %d, "answered": %d, "failed": %d, "elapsed_us": %d, "duration_us": %d, "requests": %d, ' ..
      '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
      s, a, f, ns / 1000, summary.duration, summary.requests,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
