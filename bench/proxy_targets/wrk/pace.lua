-- Offers a fixed request rate (the script's first argument, requests per second, shared by the
-- threads given as the second argument) as Poisson arrivals: every time a connection is free,
-- delay() hands it the next arrival time of the schedule, so the rate does not depend on latency
-- while connections are free (wrk2-like; without wrk2's correction for sends that are late because
-- every connection was busy). wrk's timers take whole milliseconds, so each delay is rounded up or
-- down at random in proportion. Latency is measured by wrk from the actual send.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } gatehouse_bench_timespec;
int clock_gettime(int clk_id, gatehouse_bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("gatehouse_bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local per_ms = 1
local next_at = nil

init = function(args)
  local rate = tonumber(args[1] or "1000")
  local threads = tonumber(args[2] or "1")
  per_ms = rate / threads / 1000
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

delay = function()
  local now = now_ms()
  if next_at == nil or next_at < now - 1000 then
    next_at = now  -- start, or hopelessly behind (saturated): do not replay a second of backlog
  end
  next_at = next_at - math.log(1 - math.random()) / per_ms
  local d = next_at - now
  if d <= 0 then return 0 end
  local whole = math.floor(d)
  if math.random() < d - whole then whole = whole + 1 end
  return whole
end
