-- wrk script for bench/accept.py: POST a JSON body file, then print the figures as one line.
--
--   wrk -t2 -c8 -d10s --latency -s bench/post.lua http://127.0.0.1:PORT/alertmanager -- BODY_FILE RUN
--
-- The body file holds the marker @SEQ@ (in the groupKey); each request replaces it with
-- "<RUN>-<thread>-<n>", so no two bodies are the same, in this run or any other given a
-- different RUN, and a server that drops repeated notifications still does its full
-- work for every request.

local threads = {}
local counter = 0
local prefix, suffix, run

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot open the body file " .. tostring(args[1]))
   local text = file:read("*a")
   file:close()
   run = assert(args[2], "no run tag given after the body file")
   prefix, suffix = text:match("^(.-)@SEQ@(.*)$")
   assert(prefix, "the body file has no @SEQ@ marker")
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, prefix .. run .. "-" .. thread_id .. "-" .. counter .. suffix)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50.0), latency:percentile(99.0)))
end
